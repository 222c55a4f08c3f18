#!/bin/sh
# ParaStep N = 2 across a constrained link (issue 13): nats-server and the coordinator (rank 0) in
# one network namespace, a serving host (rank 1) in another, joined by a veth pair shaped with
# tc (netem: RATE and DELAY one way; where the kernel has no netem, tbf: RATE only, and the script
# says so). The same run on loopback is the reference; the script prints both denoise times.
#
# Needs root (ip netns, tc) and nats-server. Usage:
#   sudo sh bench/netem.sh [MODEL] [RUNS]      (default: audioldm2-tiny, 3 runs)
#   RATE=1gbit DELAY=0.5ms sh bench/netem.sh
# Every exit path (normal, error, Ctrl-C, TERM) kills what it started and deletes the namespaces.
set -eu

MODEL=${1:-audioldm2-tiny}
# A path: the host serves its folder's parent (hosts open models by name only).
case "$MODEL" in */*) MODELS_DIR=$(cd "$(dirname "$MODEL")" && pwd) ;; *) MODELS_DIR="" ;; esac
RUNS=${2:-3}
RATE=${RATE:-1gbit}
DELAY=${DELAY:-0.5ms}
NATS_SERVER=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
DENO=${DENO:-$(command -v deno || echo node_modules/.bin/deno)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NS_A=parastep-a-$$
NS_B=parastep-b-$$
WORK=$(mktemp -d /tmp/parastep-netem.XXXXXX)
PERMS="--allow-ffi --allow-read --allow-write --allow-env --allow-sys --allow-run --allow-net"
PIDS=""

cleanup() {
  status=$?
  trap - EXIT INT TERM
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in $PIDS; do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$(id -u)" != 0 ]; then echo "netem.sh: needs root (ip netns, tc)" >&2; exit 2; fi
[ -x "$NATS_SERVER" ] || { echo "netem.sh: no nats-server (apt-get install nats-server)" >&2; exit 2; }

# $1: namespace ("" for this one); $2: port; waits for the server.
start_nats() {
  printf 'host: %s\nport: %s\nmax_payload: 8MB\n' "$3" "$2" > "$WORK/nats-$2.conf"
  if [ -n "$1" ]; then ip netns exec "$1" "$NATS_SERVER" -c "$WORK/nats-$2.conf" >"$WORK/nats-$2.log" 2>&1 &
  else "$NATS_SERVER" -c "$WORK/nats-$2.conf" >"$WORK/nats-$2.log" 2>&1 & fi
  PIDS="$PIDS $!"
  sleep 0.5
}

# $1: namespace; $2: URL; $3: name. Waits until it serves.
start_serve() {
  if [ -n "$1" ]; then
    ip netns exec "$1" "$DENO" run $PERMS "$ROOT/main.ts" serve --nats "$2" --name "$3" --ep cpu \
      ${MODELS_DIR:+--models "$MODELS_DIR"} >"$WORK/serve-$3.log" 2>&1 &
  else
    "$DENO" run $PERMS "$ROOT/main.ts" serve --nats "$2" --name "$3" --ep cpu \
      ${MODELS_DIR:+--models "$MODELS_DIR"} >"$WORK/serve-$3.log" 2>&1 &
  fi
  PIDS="$PIDS $!"
  i=0
  until grep -q "serving" "$WORK/serve-$3.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 120 ] || { cat "$WORK/serve-$3.log" >&2; exit 1; }; sleep 0.25
  done
}

# $1: namespace; $2: URL; $3: host; prints the denoise seconds of each run.
run_gen() {
  prefix=""
  [ -z "$1" ] || prefix="ip netns exec $1"
  for run in $(seq 1 "$RUNS"); do
    line=$($prefix "$DENO" run $PERMS "$ROOT/main.ts" gen --model "$MODEL" \
      --prompt "rain on a tin roof" --ep cpu --gpus 2 --seed "$run" --nats "$2" --hosts "$3" \
      --out "$WORK/out-$run.wav" | tail -1)
    echo "$line" | sed -n 's/.*denoise \([0-9.]*\) s.*/\1/p'
  done
}

median() {
  sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

echo "== loopback: nats-server, serve and gen on 127.0.0.1"
start_nats "" 14333 127.0.0.1
start_serve "" nats://127.0.0.1:14333 loop
LOOP=$(run_gen "" nats://127.0.0.1:14333 loop | median)
echo "loopback denoise: median ${LOOP} s over $RUNS runs"

echo "== namespaces $NS_A (nats-server, gen) and $NS_B (serve), veth $RATE"
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add psa$$ type veth peer name psb$$
ip link set psa$$ netns "$NS_A"
ip link set psb$$ netns "$NS_B"
ip -n "$NS_A" addr add 10.77.0.1/24 dev psa$$
ip -n "$NS_B" addr add 10.77.0.2/24 dev psb$$
for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
ip -n "$NS_A" link set psa$$ up
ip -n "$NS_B" link set psb$$ up
SHAPE="netem delay $DELAY rate $RATE"
if ! ip netns exec "$NS_A" tc qdisc add dev psa$$ root $SHAPE 2>/dev/null; then
  echo "netem.sh: this kernel has no netem qdisc: shaping the rate only (tbf $RATE), no added delay"
  SHAPE="tbf rate $RATE burst 256kb latency 50ms"
  ip netns exec "$NS_A" tc qdisc add dev psa$$ root $SHAPE
fi
ip netns exec "$NS_B" tc qdisc add dev psb$$ root $SHAPE
echo "link: $SHAPE each way"
start_nats "$NS_A" 14334 10.77.0.1
start_serve "$NS_B" nats://10.77.0.1:14334 far
SHAPED=$(run_gen "$NS_A" nats://10.77.0.1:14334 far | median)
echo "shaped denoise: median ${SHAPED} s over $RUNS runs"
awk -v a="$LOOP" -v b="$SHAPED" 'BEGIN { printf "end-to-end loss against loopback: %+.1f%%\n", 100 * (b - a) / a }'
