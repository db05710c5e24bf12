# Runs a real puppetserver 7 compiler (Debian package) behind a TLS-terminating LB, as
# shared/recipes/real-puppet.md describes: plain HTTP on a port the kernel picks, CA service off,
# allow-header-cert-info, private dirs, one JRuby. Sourced by demo.sh and the benchmarks.

# puppetserver_prepare DIR NAME ROLE: writes a puppetserver's config into DIR. ROLE "compiler":
# CA service off, identity headers believed; ROLE "ca": puppetserver's own CA on (autosign), for
# comparisons with crossbar's CA.
puppetserver_prepare() {
  local dir=$1 name=$2 role=${3:-compiler}
  rm -rf "$dir"
  mkdir -p "$dir"/{etc,code/environments/production/manifests,var,run,log,ssl}
  cp -r /etc/puppet/puppetserver/conf.d /etc/puppet/puppetserver/services.d "$dir/"
  cat > "$dir/conf.d/webserver.conf" <<CONF
webserver: {
    access-log-config: /etc/puppet/puppetserver/request-logging.xml
    host: 127.0.0.1
    port: 0
}
CONF
  if [ "$role" = compiler ]; then
    sed -i 's|^puppetlabs.services.ca.certificate-authority-service/certificate-authority-service|#&|; s|^#\(puppetlabs.services.ca.certificate-authority-disabled-service\)|\1|' "$dir/services.d/ca.cfg"
  fi
  sed -i '0,/^authorization: {/s//authorization: {\n    allow-header-cert-info: true/' "$dir/conf.d/auth.conf"
  cat > "$dir/conf.d/puppetserver.conf" <<CONF
jruby-puppet: {
    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
    gem-home: /var/lib/puppetserver/jruby-gems
    gem-path: [\${jruby-puppet.gem-home}, "/usr/lib/puppetserver/vendored-jruby-gems"]
    server-conf-dir: $dir/etc
    server-code-dir: $dir/code
    server-var-dir: $dir/var
    server-run-dir: $dir/run
    server-log-dir: $dir/log
    max-active-instances: ${JRUBIES:-1}
}
http-client: {
}
profiler: {
}
CONF
  printf '[main]\nssldir = %s/ssl\ncertname = %s\n' "$dir" "$name" > "$dir/etc/puppet.conf"
  if [ "$role" = ca ]; then
    printf '[server]\ncadir = %s/ca\nautosign = true\n' "$dir" >> "$dir/etc/puppet.conf"
  fi
  cat > "$dir/code/environments/production/manifests/site.pp" <<'PP'
node default {
  notify { "compiled by ${settings::certname}": }
  notify { "pp_role ${trusted['extensions']['pp_role']}": }
}
PP
  chown -R puppet:puppet "$dir"
}

# compiler_start DIR NAME: prepares DIR and starts the compiler in the background (pid in DIR/pid).
compiler_start() {
  local dir=$1 name=$2
  puppetserver_prepare "$dir" "$name" compiler
  (cd "$dir" && exec setpriv --reuid puppet --regid puppet --clear-groups -- \
     /usr/bin/java -Xms512m -Xmx512m -Dlogappender=STDOUT -Djruby.lib=/usr/share/jruby/lib \
     -jar /usr/share/puppetserver/puppetserver.jar --config "$dir/conf.d" --bootstrap-config "$dir/services.d" \
     > "$dir/stdout.log" 2>&1) &
  echo $! > "$dir/pid"
  disown
}

# compiler_wait DIR: waits until the compiler runs and prints its port.
compiler_wait() {
  local dir=$1 port=""
  for _ in $(seq 600); do
    port=$(grep -o 'Started ServerConnector.*{127.0.0.1:[0-9]*}' "$dir/stdout.log" 2>/dev/null | grep -o '[0-9]*}$' | tr -d '}')
    if [ -n "$port" ] && [ "$(curl -s "http://127.0.0.1:$port/status/v1/simple")" = running ]; then
      echo "$port"; return 0
    fi
    sleep 0.5
  done
  echo "compiler in $dir did not start; see $dir/stdout.log" >&2
  return 1
}
