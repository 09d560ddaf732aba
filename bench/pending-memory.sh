#!/usr/bin/env bash
# Memory with a large backlog: enqueue up to 1,000,000 events that cannot be delivered.
#
# The only subscriber's upstream is a closed loopback port, so every delivery
# fails with a connect error, the breaker opens and the backlog only grows.
# wrk POSTs (64 connections) in chunks of at most 20 s until TARGET events are
# accepted or LOAD_BUDGET seconds of load have run. After each chunk: Junction's
# RSS, the queue depth and the queue file size. Then Junction is restarted on
# the same queue, to show the memory it needs to start with the backlog.
#
# Env: TARGET (1000000), LOAD_BUDGET (120 s), CONNS, THREADS, BENCH_PORT_BASE (18000),
# KEEP_QUEUE=1 to keep the (multi-GiB) queue file in bench/out/pending-memory/queue.
source "$(dirname "$0")/lib.sh"

BASE="${BENCH_PORT_BASE:-18000}"
J_PORT=$((BASE + 41)) J_ADMIN=$((BASE + 42)) DEAD_PORT=$((BASE + 49))
TARGET="${TARGET:-1000000}"
LOAD_BUDGET="${LOAD_BUDGET:-120}"
WORK="$OUT_DIR/pending-memory"
URL="http://127.0.0.1:$J_PORT/orders"

ensure_tool wrk wrk
ensure_tool jq jq
ensure_tool curl curl
machine_info
build_junction
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $J_PORT $J_ADMIN $DEAD_PORT; do require_free_port "$p"; done

cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
queue: { backend: embedded, path: $WORK/queue }
upstreams:
  gone: { url: "http://127.0.0.1:$DEAD_PORT", timeout: 1s }
routes:
  - name: orders
    match: { method: POST, path: /orders }
    async:
      topic: orders
      subscribers:
        - { name: unreachable, upstream: gone, path: /hook }
EOF

# Accepted events are counted from wrk's 2xx responses (junction_events_accepted_total is
# not incremented by every build); queue depth is reported beside it as a cross-check.
depth() { metric_sum "$J_ADMIN" junction_queue_depth; }
breaker() { metric_sum "$J_ADMIN" junction_breaker_state 'upstream="gone"'; }
qbytes() { du -sb "$WORK/queue" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

wait_quiet
start_junction "$WORK/junction.yaml" "$WORK/junction.log" "$J_ADMIN"
sleep 1
BEFORE_KIB=$(rss_kib "$JUNCTION_PID")
log "RSS before load: $(kib_to_mib "$BEFORE_KIB") MiB"

PROGRESS="$WORK/progress.tsv"
printf 'load_s\taccepted_202s\trate_per_s\tp99_us\tqueue_depth\tbreaker\trss_mib\tqueue_mib\n' >"$PROGRESS"
load_s=0 rate=0 count=0 chunk=0
while [ "$count" -lt "$TARGET" ] && [ "$load_s" -lt "$LOAD_BUDGET" ]; do
    chunk=$((chunk + 1))
    remaining=$((TARGET - count))
    dur=20
    if [ "$rate" -gt 0 ]; then
        need=$(( (remaining * 105 / 100) / rate + 1 ))
        [ "$need" -lt "$dur" ] && dur=$need
    fi
    [ "$dur" -lt 2 ] && dur=2
    [ $((load_s + dur)) -gt "$LOAD_BUDGET" ] && dur=$((LOAD_BUDGET - load_s))
    log "chunk $chunk: ${dur}s of POSTs ($count accepted so far)"
    json=$(run_wrk "pending-chunk-$chunk" "$dur" "$CONNS" "$THREADS" "$URL" "$BENCH_DIR/lua/post.lua")
    load_s=$((load_s + dur))
    ok=$(( $(json_get "$json" requests) - $(json_get "$json" non2xx) ))
    count=$((count + ok))
    rate=$(awk -v n="$ok" -v s="$(json_get "$json" seconds)" 'BEGIN {printf "%d", n / s}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load_s" "$count" "$rate" "$(json_get "$json" p99_us)" \
        "$(depth)" "$(breaker)" "$(kib_to_mib "$(rss_kib "$JUNCTION_PID")")" "$(mib "$(qbytes)")" >>"$PROGRESS"
done
sleep 5
AFTER_KIB=$(rss_kib "$JUNCTION_PID")
HWM_KIB=$(hwm_kib "$JUNCTION_PID")
FINAL_DEPTH=$(depth)
QBYTES=$(qbytes)
QALLOC=$(( $(du -sk "$WORK/queue" | cut -f1) * 1024 ))
ls -l "$WORK/queue" >"$WORK/queue-files.txt"

# Restart on the same queue: what does starting with the backlog cost?
log "restarting junction on the same queue"
stop_pid "$JUNCTION_PID"
T0=$(date +%s.%N)
READY_WAIT=300 start_junction "$WORK/junction.yaml" "$WORK/junction-restart.log" "$J_ADMIN"
READY_S=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
sleep 10
RESTART_KIB=$(rss_kib "$JUNCTION_PID")
RESTART_HWM_KIB=$(hwm_kib "$JUNCTION_PID")
RESTART_DEPTH=$(depth)

{
    echo "== pending memory: ${CONNS} connections POSTing 207-byte JSON, subscriber unreachable (closed port) =="
    column -t -s $'\t' "$PROGRESS"
    echo
    if [ "$count" -ge "$TARGET" ]; then
        echo "accepted: $count events in ${load_s}s of load (target $TARGET reached)"
    else
        echo "accepted: $count events in ${load_s}s of load (target $TARGET NOT reached within LOAD_BUDGET=${LOAD_BUDGET}s)"
    fi
    echo "queue depth after load: $FINAL_DEPTH"
    echo "RSS before load: $(kib_to_mib "$BEFORE_KIB") MiB; after load (5 s idle): $(kib_to_mib "$AFTER_KIB") MiB; peak (VmHWM): $(kib_to_mib "$HWM_KIB") MiB"
    echo "queue files: $(mib "$QBYTES") MiB apparent size, $(mib "$QALLOC") MiB allocated on disk ($(awk -v b="$QBYTES" -v n="$FINAL_DEPTH" 'BEGIN {printf "%.0f", (n > 0 ? b / n : 0)}') bytes per pending event)"
    echo "restart with the backlog: ready in ${READY_S}s; RSS 10 s later $(kib_to_mib "$RESTART_KIB") MiB (VmHWM $(kib_to_mib "$RESTART_HWM_KIB") MiB); queue depth $RESTART_DEPTH"
} | tee "$OUT_DIR/pending-memory.txt"

# The queue file is gigabytes: remove it unless asked to keep it for inspection.
if [ "${KEEP_QUEUE:-0}" != 1 ]; then
    stop_pid "$JUNCTION_PID"
    rm -rf "$WORK/queue"
fi
