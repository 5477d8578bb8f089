#!/usr/bin/env bash
# The main job until the origin guard (aop-origin demo) exists: make an origin-pull PKI
# with certtool in a temporary directory, check it with OpenSSL, and show that certtool
# refuses what it should. Exit 0 iff every expectation held.
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p certtool || exit 2
cargo build --release --quiet -p aop-verify --example origin || exit 2
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
certtool="$target/certtool"
work=$(mktemp -d)
origin_pid=""
trap '[ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null; rm -rf "$work"' EXIT
failures=0
pass() { printf '  PASS  %s\n' "$1"; }
fail() { printf '  FAIL  %s\n' "$1"; failures=$((failures + 1)); }
expect() { # expect CODE DESCRIPTION -- COMMAND...   (CODE "fail" means any non-zero exit)
  local want=$1 what=$2; shift 3
  "$@" >"$work/out" 2>"$work/err"; local got=$?
  if [ "$got" = "$want" ] || { [ "$want" = fail ] && [ "$got" -ne 0 ]; }; then
    pass "$what (exit $got)"
  else
    fail "$what: exit $got, wanted $want: $(head -c 300 "$work/err")"
  fi
}

echo "== 1. A CA for origin pulls, the edge's client certificate, the origin's server certificate"
expect 0 "certtool ca create" -- "$certtool" ca create --name "example.com origin-pull CA" --out "$work/ca"
expect 0 "certtool issue client (EKU clientAuth)" -- "$certtool" issue client --ca "$work/ca" --cn edge.example.net --san spiffe://example.net/edge --days 90 --out "$work/edge"
expect 0 "certtool issue origin (EKU serverAuth, Origin CA validity)" -- "$certtool" issue origin --ca "$work/ca" --hostname example.com --hostname '*.example.com' --days 365 --out "$work/origin"
"$certtool" inspect "$work/edge/cert.pem"

echo "== 2. OpenSSL agrees: each certificate verifies for its purpose, and only for it"
if command -v openssl >/dev/null; then
  expect 0 "openssl: edge cert is a TLS client" -- openssl verify -CAfile "$work/ca/ca.pem" -purpose sslclient "$work/edge/cert.pem"
  expect 2 "openssl: edge cert is NOT a TLS server" -- openssl verify -CAfile "$work/ca/ca.pem" -purpose sslserver "$work/edge/cert.pem"
  expect 0 "openssl: origin cert is a TLS server" -- openssl verify -CAfile "$work/ca/ca.pem" -purpose sslserver "$work/origin/cert.pem"
  expect 2 "openssl: origin cert is NOT a TLS client" -- openssl verify -CAfile "$work/ca/ca.pem" -purpose sslclient "$work/origin/cert.pem"
  ours=$("$certtool" inspect --json "$work/edge/cert.pem" | sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p' | head -n1)
  theirs=$(openssl x509 -in "$work/edge/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f)
  if [ "$ours" = "$theirs" ]; then pass "certificate pin equals openssl's fingerprint ($ours)"; else fail "pin $ours != openssl $theirs"; fi
else
  echo "  SKIPPED  openssl is not installed (apt-get install openssl)"
fi

echo "== 3. Keys are private, nothing is overwritten by accident, bad input is named"
mode=$(stat -c %a "$work/edge/key.pem")
if [ "$mode" = 600 ]; then pass "key.pem is 0600"; else fail "key.pem is $mode"; fi
expect 1 "a second ca create into the same directory is refused" -- "$certtool" ca create --name other --out "$work/ca"
expect 2 "a 100-day Origin CA certificate is refused" -- "$certtool" issue origin --ca "$work/ca" --hostname example.com --days 100 --out "$work/o2"
expect 2 "a private key given to inspect is refused" -- "$certtool" inspect "$work/edge/key.pem"
sed 's/^/        /' "$work/err"
expect 0 "the real Cloudflare origin-pull CAs are read" -- "$certtool" inspect testdata/cloudflare/authenticated_origin_pull_ca.pem testdata/cloudflare/origin_pull_ca_2015.pem

echo "== 4. An origin on loopback (examples/origin.rs on aop-verify): only the edge gets in"
if command -v curl >/dev/null; then
  "$certtool" ca create --name "origin CA" --out "$work/origin-ca" >/dev/null
  "$certtool" issue origin --ca "$work/origin-ca" --hostname example.com --days 90 --out "$work/origin-cert" >/dev/null
  "$certtool" ca create --name "someone else" --out "$work/foreign-ca" >/dev/null
  "$certtool" issue client --ca "$work/foreign-ca" --cn intruder --out "$work/intruder" >/dev/null
  NO_COLOR=1 "$target/examples/origin" --listen 127.0.0.1:0 --cert "$work/origin-cert/cert.pem" \
    --key "$work/origin-cert/key.pem" --trust "$work/ca/ca.pem" 2>"$work/origin.log" &
  origin_pid=$!
  port=""
  for _ in $(seq 50); do
    port=$(sed -n 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/p' "$work/origin.log" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  url="https://example.com:$port/"
  c=(curl -sS --max-time 10 --resolve "example.com:$port:127.0.0.1" --cacert "$work/origin-ca/ca.pem")
  expect 0 "curl as the edge (its certificate) is served" -- "${c[@]}" --cert "$work/edge/cert.pem" --key "$work/edge/key.pem" "$url"
  sed 's/^/        /' "$work/out"
  expect fail "curl with no certificate is refused (the back door is shut)" -- "${c[@]}" "$url"
  sed 's/^/        /' "$work/err"
  expect fail "curl with a certificate from another CA is refused" -- "${c[@]}" --cert "$work/intruder/cert.pem" --key "$work/intruder/key.pem" "$url"
  sed 's/^/        /' "$work/err"
  expect 1 "certtool verify says the same offline: FAILED:unknown_ca" -- "$certtool" verify --trust "$work/ca/ca.pem" --chain "$work/intruder/cert.pem"
  head -n1 "$work/out" | sed 's/^/        /'
  sleep 0.2
  echo "   the origin's verdict log (target aop::verdict):"
  grep 'aop::verdict' "$work/origin.log" | sed -e 's/.*aop::verdict: client certificate verdict /        /' -e 's/ detail=.*//' | cut -c1-150
else
  echo "  SKIPPED  curl is not installed (apt-get install curl)"
fi

echo
if [ "$failures" -eq 0 ]; then echo "walkthrough: every expectation held"; exit 0; fi
echo "walkthrough: $failures expectation(s) failed"; exit 1
