# Makes CSRs the way Puppet's agent does (Puppet::SSL::CertificateRequest#generate, the code
# behind csr_attributes.yaml), with the installed puppet-agent's Ruby. Keys are discarded.
#   ruby gen-puppet.rb        (Debian 12's puppet-agent 7.23)
require 'puppet'
require 'tmpdir'
Dir.mktmpdir do |dir|
  Puppet.initialize_settings(['--confdir', dir, '--vardir', dir])
  Puppet::SSL::Oids.register_puppet_oids
  jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudDEifQ.x_Y-z!09'
  {
    'puppet-secret' => { '1.2.840.113549.1.9.7' => 'S3cr3t_pass!', '1.3.6.1.4.1.34380.1.3.2' => 'true' },
    'puppet-jwt' => { '1.2.840.113549.1.9.7' => jwt, '1.3.6.1.4.1.34380.1.1.99' => 'p@ss word é' },
  }.each do |name, attributes|
    key = OpenSSL::PKey::RSA.new(2048) # 7.23 cannot make EC keys on OpenSSL 3
    csr = Puppet::SSL::CertificateRequest.new('agent1.example.com')
    request = csr.generate(key, csr_attributes: attributes, extension_requests: { 'pp_role' => 'web' })
    File.write("#{name}.csr", request.to_pem)
  end
end
