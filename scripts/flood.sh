#!/usr/bin/env bash
# The idle-connection flood at full size (issue 11): aop-origin with its default limits,
# 10,000 plain TCP connections that never send a ClientHello and 10,000 certificate-less
# TLS connections held on an `optional` site, then the edge's requests. Prints the
# figures; exit 0 iff every edge request was served. Loopback only; bounded.
#
#   bash scripts/flood.sh [--sources K] [--tcp N] [--tls N]   (K source addresses 127.0.1.x; default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p certtool -p aop-origin
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"

"$target/certtool" ca create --name "flood origin CA" --out "$work/origin-ca" >/dev/null
"$target/certtool" issue origin --ca "$work/origin-ca" --hostname a.test --hostname opt.test --days 30 --out "$work/origin" >/dev/null
"$target/certtool" ca create --name "flood edge CA" --out "$work/edge-ca" >/dev/null
"$target/certtool" issue client --ca "$work/edge-ca" --cn edge --out "$work/edge" >/dev/null

python3 -m http.server --bind 127.0.0.1 0 --directory "$work" >"$work/upstream.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  up=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/upstream.log" | head -n1)
  [ -n "$up" ] && break
  sleep 0.1
done
# A site on the one origin certificate, trusting the edge's CA: site HOSTNAME MODE.
site() {
  printf '[[site]]\nhostnames = ["%s"]\nmode = "%s"\n' "$1" "$2"
  printf 'cert = "origin/cert.pem"\nkey = "origin/key.pem"\ntrust = ["edge-ca/ca.pem"]\n'
  printf 'upstream = "http://127.0.0.1:%s"\n' "$up"
}
{
  printf 'listen = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\n'
  site a.test require
  site opt.test optional
} >"$work/origin.toml"
RUST_LOG=warn,aop::origin=info "$target/aop-origin" --config "$work/origin.toml" 2>"$work/origin.log" &
pids+=($!)
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening addr=127.0.0.1:\([0-9]*\).*/\1/p' "$work/origin.log" | head -n1)
  metrics=$(sed -n 's/.*metrics=127.0.0.1:\([0-9]*\).*/\1/p' "$work/origin.log" | head -n1)
  [ -n "$port" ] && [ -n "$metrics" ] && break
  sleep 0.1
done
status=0
python3 scripts/flood.py --port "$port" --origin-ca "$work/origin-ca/ca.pem" \
  --edge-cert "$work/edge/cert.pem" --edge-key "$work/edge/key.pem" "$@" || status=$?
echo "GUARD peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/${pids[1]}/status")"
curl -s "http://127.0.0.1:$metrics/metrics" | grep -E '^aop_connections_closed_total|^aop_handshakes_total' | sed 's/^/METRIC /'
exit "$status"
