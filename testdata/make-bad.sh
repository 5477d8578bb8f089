#!/usr/bin/env bash
# Regenerates the bad-input fixtures in this directory. They are checked in so tests do
# not depend on this script; rerunning it changes the random and key bytes, which no test
# depends on. Needs openssl and python3.
set -euo pipefail
cd "$(dirname "$0")/bad"
cf=../cloudflare/authenticated_origin_pull_ca.pem

: > empty.pem                                     # zero bytes
printf '\n  \n\t\n' > whitespace.pem              # only whitespace
head -n 12 "$cf" > truncated.pem                  # BEGIN line and part of the base64, no END line
# A certificate whose base64 is damaged in the middle.
python3 - "$cf" > bad-base64.pem <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
lines[5] = lines[5][:20] + "!!!!" + lines[5][24:]
print("\n".join(lines))
PY
# DER-looking garbage: a SEQUENCE header claiming 500 bytes, then random bytes.
python3 -c 'import os,sys; sys.stdout.buffer.write(b"\x30\x82\x01\xf4" + os.urandom(500))' > random.der
echo "this is not a certificate" > text.txt
# A throwaway P-256 key (test only) where a certificate belongs, and a CSR made with it.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out private-key.pem 2>/dev/null
openssl req -new -key private-key.pem -subj /CN=csr.example -out csr.pem
# A CRL-shaped PEM label that is not a certificate either.
openssl pkey -in private-key.pem -pubout -out public-key.pem
