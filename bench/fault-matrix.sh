#!/usr/bin/env bash
# Fault matrix: does a healthy route keep its latency while something else
# misbehaves? For each fault, a healthy proxied route (GET /ok to nginx) is
# measured for DUR seconds (10) at RATE/s (200) before, then again while the
# fault runs; the table gives its p99 both times, its failures during the
# fault, and what the faulty route answered. Loopback only, bounded in time.
#
# Upstream faults (another route's upstream; 50 requests/s to it, 32 at once):
#   hang     never answers                 (its timeout: 2s)
#   garbage  answers bytes that are not HTTP
#   reset    resets the connection mid-body
#   trickle  a body at one byte per 100 ms (its body_timeout: 5s)
#   endless  a body that never ends        (its body_timeout: 5s)
# Client faults (against the same data port):
#   slowloris 300 heads one header a second, never finished
#   idle      2000 keep-alive connections held silent
#   noread    30 clients asking for 32 MiB and never reading
# Control: trickle-direct is the trickle load sent straight to the trickling
# peer, not through Junction, the load generator cutting each request at
# BODY_TIMEOUT as Junction does: what the peers' own work (and the 32 cuts and
# reconnects every BODY_TIMEOUT, all at once) costs the healthy route here.
# Not here (tests cover them): Redis or a broker gone mid-load
# (cache::*, shared_queue::*::an_outage_*), the disk full (disk_full.rs).
#
# Env: DUR (10), RATE (200), BENCH_PORT_BASE (18700), ONLY (a space-separated
# list of rows to run; all by default), BODY_TIMEOUT (5s, of the faulty upstreams). Output: a table on stdout and
# bench/out/fault-matrix.md.
source "$(dirname "$0")/lib.sh"
# 2000 idle connections need more than the default 1024 descriptors.
ulimit -n 65536 2>/dev/null || true

DUR="${DUR:-10}"
BODY_TIMEOUT="${BODY_TIMEOUT:-5s}"
RATE="${RATE:-200}"
BASE_PORT="${BENCH_PORT_BASE:-18700}"
OK_PORT=$((BASE_PORT + 1)) J_PORT=$((BASE_PORT + 7)) J_ADMIN=$((BASE_PORT + 8))
UPSTREAM_FAULTS=(hang garbage reset trickle endless)
WORK="$OUT_DIR/fault-matrix"

ensure_tool nginx nginx-light
ensure_tool jq jq
ensure_tool curl curl
ensure_tool python3 python3
ensure_oha
rm -rf "$WORK" && mkdir -p "$WORK/up"
for p in $OK_PORT $((BASE_PORT + 2)) $((BASE_PORT + 3)) $((BASE_PORT + 4)) $((BASE_PORT + 5)) \
    $((BASE_PORT + 6)) $J_PORT $J_ADMIN; do require_free_port "$p"; done
machine_info
build_junction
commit=$(git -C "$REPO_DIR" rev-parse --short HEAD)

head -c $((32 << 20)) /dev/zero >"$WORK/up/big.bin"
write_nginx_conf "$WORK/up" auto <<EOF
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$OK_PORT;
        default_type application/json;
        location = /big { alias $WORK/up/big.bin; }
        location / { return 200 '{"id":42,"name":"widget"}'; }
    }
EOF
start_nginx "$WORK/up" "$OK_PORT"
upstreams="  ok: { url: \"http://127.0.0.1:$OK_PORT\" }"
routes="  - { name: ok, match: { method: GET, path: /ok }, upstream: ok }
  - { name: big, match: { method: GET, path: /big }, upstream: ok }"
port=$((BASE_PORT + 2))
declare -A FAULT_PORT
for f in "${UPSTREAM_FAULTS[@]}"; do
    FAULT_PORT[$f]=$port
    python3 "$BENCH_DIR/faults.py" upstream "$f" "$port" &
    STARTED_PIDS+=("$!")
    wait_port "$port"
    upstreams="$upstreams
  $f: { url: \"http://127.0.0.1:$port\", timeout: 2s, body_timeout: $BODY_TIMEOUT }"
    routes="$routes
  - { name: $f, match: { method: GET, path: /$f }, upstream: $f }"
    port=$((port + 1))
done
cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
upstreams:
$upstreams
routes:
$routes
EOF
start_junction "$WORK/junction.yaml" "$WORK/junction.log" "$J_ADMIN"

# p99 in ms and failures of the healthy route over DUR seconds.
healthy() {
    oha -z "${DUR}s" -c 8 -q "$RATE" --no-tui --output-format json "http://127.0.0.1:$J_PORT/ok" >"$WORK/$1.json" 2>/dev/null
    oha_summary "$WORK/$1.json" 200 | awk '{print $2, $3}'
}
# What a load answered: statuses and errors, counted.
answered() {
    jq -r '[(.statusCodeDistribution | to_entries[] | "\(.value)× \(.key)"),
            (.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | "\(.value)× \(.key)")]
        | join(", ")' "$1"
}

rows=()
run_fault() {
    local name="$1" start_fault="$2"
    [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $name "* ]] || return 0
    log "fault: $name"
    read -r before _ <<<"$(healthy "before-$name")"
    eval "$start_fault" &
    local fault_pid=$!
    sleep 1
    read -r during failures <<<"$(healthy "during-$name")"
    wait "$fault_pid" || true
    kill -0 "$JUNCTION_PID" 2>/dev/null || die "junction exited: $(tail -5 "$WORK/junction.log")"
    local what="—"
    [ -s "$WORK/$name.fault.json" ] && what=$(answered "$WORK/$name.fault.json")
    rows+=("| $name | $before | $during | $failures | $what |")
    log "  healthy p99 $before -> $during ms, failures $failures; faulty route: $what"
}
for f in "${UPSTREAM_FAULTS[@]}"; do
    run_fault "$f" "oha -z $((DUR + 1))s -c 32 -q 50 --no-tui --output-format json http://127.0.0.1:$J_PORT/$f >$WORK/$f.fault.json 2>/dev/null"
done
run_fault trickle-direct "oha -z $((DUR + 1))s -t $BODY_TIMEOUT -c 32 -q 50 --no-tui --output-format json http://127.0.0.1:${FAULT_PORT[trickle]}/ >$WORK/trickle-direct.fault.json 2>/dev/null"
run_fault slowloris "python3 $BENCH_DIR/faults.py client slowloris $J_PORT /ok 300 $((DUR + 1))"
run_fault idle "python3 $BENCH_DIR/faults.py client idle $J_PORT /ok 2000 $((DUR + 1))"
run_fault noread "python3 $BENCH_DIR/faults.py client noread $J_PORT /big 30 $((DUR + 1))"

{
    echo "Fault matrix at commit $commit, $(date -u +%Y-%m-%d): healthy GET /ok at ${RATE}/s for ${DUR}s before and during each fault (\`bash bench/fault-matrix.sh\`)."
    echo
    echo "| fault | healthy p99 before (ms) | healthy p99 during (ms) | healthy failures during | the faulty route answered |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$OUT_DIR/fault-matrix.md"
