#!/bin/sh
# Makes the policy-test CSRs with OpenSSL. Keys are discarded.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/rsa2048" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$tmp/rsa1024" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/p256"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/p384"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$tmp/p521"
openssl genpkey -algorithm ED25519 -out "$tmp/ed25519"
req() { # name key subject [extensions...]
  out=$1; key=$2; subj=$3; shift 3
  set -- "$@"
  args=""
  for e in "$@"; do args="$args -addext $e"; done
  # shellcheck disable=SC2086
  openssl req -new -key "$tmp/$key" -subj "$subj" $args -out "$out.csr"
}
req rsa2048 rsa2048 "/CN=agent1.example.com"
req p256 p256 "/CN=agent1.example.com"
req p384 p384 "/CN=agent1.example.com"
req rsa1024 rsa1024 "/CN=agent1.example.com"
req p521 p521 "/CN=agent1.example.com"
req ed25519 ed25519 "/CN=agent1.example.com"
req extra-rdns p256 "/O=Example/CN=agent1.example.com/OU=ops"
req upper p256 "/CN=Agent1.example.com"
req no-cn p256 "/O=Example"
req own-san p256 "/CN=agent1.example.com" "subjectAltName=DNS:agent1.example.com"
req extra-san p256 "/CN=agent1.example.com" "subjectAltName=DNS:agent1.example.com,DNS:puppet,IP:10.0.0.5"
req wildcard-san p256 "/CN=agent1.example.com" "subjectAltName=DNS:*.example.com"
req email-san p256 "/CN=agent1.example.com" "subjectAltName=email:root@example.com"
req pp-role p256 "/CN=agent1.example.com" "1.3.6.1.4.1.34380.1.1.13=ASN1:UTF8String:web" "1.3.6.1.4.1.34380.1.2.1=ASN1:UTF8String:secret"
req pp-auth p256 "/CN=agent1.example.com" "1.3.6.1.4.1.34380.1.3.1=ASN1:UTF8String:admin"
req pp-cli-auth p256 "/CN=agent1.example.com" "1.3.6.1.4.1.34380.1.3.39=ASN1:UTF8String:true"
req key-usage p256 "/CN=agent1.example.com" "keyUsage=critical,digitalSignature" "basicConstraints=critical,CA:TRUE"
# A request whose signature does not verify: flip one byte near the end of the DER.
openssl req -in p256.csr -outform DER -out "$tmp/p256.der"
python3 - "$tmp/p256.der" bad-signature.csr <<'PY'
import base64, sys
der = bytearray(open(sys.argv[1], 'rb').read())
der[-5] ^= 0x01
b64 = base64.encodebytes(bytes(der)).decode().replace('\n', '')
lines = [b64[i:i+64] for i in range(0, len(b64), 64)]
open(sys.argv[2], 'w').write('-----BEGIN CERTIFICATE REQUEST-----\n' + '\n'.join(lines) + '\n-----END CERTIFICATE REQUEST-----\n')
PY
