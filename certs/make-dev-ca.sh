#!/usr/bin/env bash
# Makes a throwaway development PKI for the cloud links: a CA, a server certificate for a broker or
# a WebSocket endpoint on this machine (SAN localhost and 127.0.0.1), and a device client
# certificate. P-256 keys in PKCS#8, which both mosquitto and rustls read. For tests and trials only.
#
#   certs/make-dev-ca.sh OUT_DIR [DEVICE_ID] [DAYS]
#
# Writes OUT_DIR/{ca,server,device}.{pem,key}. Existing files are kept (run it again on an empty
# directory to start over).
set -euo pipefail
out="${1:?usage: make-dev-ca.sh OUT_DIR [DEVICE_ID] [DAYS]}"
device="${2:-vs-dev-01}"
days="${3:-30}"
command -v openssl >/dev/null || { echo "make-dev-ca.sh: openssl is needed (apt install openssl)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f ca.pem ]; then
  newkey ca.key
  openssl req -x509 -new -key ca.key -out ca.pem -days "$days" -subj "/CN=vistter dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# $1 name, $2 subject CN, $3 extensions
issue() {
  [ -f "$1.pem" ] && return 0
  newkey "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days "$days" \
    -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

issue server localhost \
  "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
issue device "$device" \
  "subjectAltName=DNS:$device\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
rm -f ca.srl
# Certificates are public; keys stay private (a broker running as another user needs to read its own).
chmod 644 ca.pem server.pem device.pem
echo "$out: ca.pem, server.pem/.key (localhost, 127.0.0.1), device.pem/.key (CN=$device)"
