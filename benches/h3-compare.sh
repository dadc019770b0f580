#!/usr/bin/env bash
# HTTP/3 against HTTP/2 over TLS, through the same proxy in the same run: requests per proxy
# CPU-second for small GETs (13 B) and 100 KiB GETs. The proxy is the `tls_gateway` example
# (release), pinned to CPU 1, with its TLS and QUIC listeners on one port; the nginx origins
# of ../shared/bench (run its setup.sh and compare.sh once first) and the load on CPU 0.
# HTTP/2: h2load, 16 connections x 32 streams; HTTP/3: benches/h3_load.rs, 16 x 32. Each
# load run lasts 8 s and stops by itself; only loopback. ROUNDS [3].
# Usage: benches/h3-compare.sh (from the repository's top)
set -u
cd "$(dirname "$0")/.."
BENCH=${RUN_DIR:-${TMPDIR:-/tmp}/pingora-dsl-bench}; RUN=$BENCH/h3; ROUNDS=${ROUNDS:-3}
mkdir -p "$RUN"
cargo build --release --example tls_gateway >/dev/null 2>&1 || { echo "build failed"; exit 1; }
cargo bench --bench h3_load --no-run >/dev/null 2>&1 || { echo "h3_load build failed"; exit 1; }
LOAD=$(ls -t target/release/deps/h3_load-* | grep -v '\.d$' | head -1)
CERT=$RUN/localhost.crt; KEY=$RUN/localhost.key
[ -f "$CERT" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
  -keyout "$KEY" -out "$CERT" 2>/dev/null
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
measure() { # name scenario command...
  local name=$1 sc=$2 out req c0 c1; shift 2
  c0=$(cpu $UP); out=$("$@" 2>&1); c1=$(cpu $UP)
  case $name in
    h2) req=$(echo "$out" | awk '/^requests:/{print $8}') ;;
    h3) req=$(echo "$out" | awk '/^requests:/{print $2}') ;;
  esac
  python3 -c "r=${req:-0}; c=($c1-$c0)/$(getconf CLK_TCK); print(f'round $round $name $sc req={r} cpu_s={c:.2f} eff={r/c if c else 0:.0f}')"
}
taskset -c 0 nginx -p "$BENCH/origin" -c "$BENCH/origin/nginx.conf" -e stderr -g 'daemon off;' >"$RUN/origin.log" 2>&1 & OP=$!; sleep 1
for round in $(seq 1 "$ROUNDS"); do
  taskset -c 1 target/release/examples/tls_gateway --threads 1 --listen 127.0.0.1:6189 --cert "$CERT" --key "$KEY" \
    --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 >"$RUN/ours.log" 2>&1 & UP=$!; sleep 1
  for path in small 100k; do
    measure h2 $path taskset -c 0 h2load -D 8 -c 16 -m 32 -t 1 https://127.0.0.1:6189/$path
    measure h3 $path taskset -c 0 "$LOAD" 127.0.0.1:6189 "$CERT" /$path 16 32 8
  done
  kill -INT $UP; wait $UP 2>/dev/null
done
kill -QUIT $OP; wait $OP 2>/dev/null
