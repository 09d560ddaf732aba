#!/usr/bin/env bash
# Several Junction instances on one broker: throughput and CPU per event as
# instances are added (issue 15's 1, 2 and 3 instances on RabbitMQ and NATS).
#
# Per backend (QUEUES, default "rabbitmq nats") and per instance count N in
# INSTANCES (default "1 2 3"): N Junction instances share one fresh prefix on
# the broker, each with the same async route (3 subscribers, each an nginx
# `return 200` port). wrk POSTs a 207-byte JSON event on CONNS connections in
# total (split evenly, one wrk per instance, all at once) for DURATION s; then
# the script waits (bounded by DRAIN_LIMIT) until every accepted event reached
# all 3 subscribers. Reported per N: events accepted/s during the load,
# deliveries/s from the load's start until drained, p99 accept latency (the
# worst instance's), and CPU per event: the instances' utime + stime
# (/proc/PID/stat) from the load's start until drained, divided by the events
# accepted; each event is one durable accept plus three deliveries and their
# acks. Beside it the broker's own CPU per event (beam.smp or nats-server).
#
# On a 2-core machine the instances, the broker, nginx and wrk share the same
# two cores, so the totals cannot grow with N; what the run shows is whether
# the CPU an event costs stays flat as instances compete for the same queues.
# Past saturation (the closed loop) that CPU also measures the contention of
# more threads on the same cores, so RATE=R offers R events/s in total instead
# (oha -q, R/N per instance): the same load below saturation for every N.
# RATE_PER_INSTANCE=R offers R events/s to each instance instead (N x R in
# total), as when instances are added because the load grew: each instance
# then does the same work per second whatever N is.
# INSTANCES may repeat counts ("1 2 3 1 2 3") to interleave rounds.
#
# Before each load the instances' idle CPU is read over IDLE_WINDOW (5) s; the
# "net" column takes that background rate out of the per-event CPU.
#
# Env: QUEUES, INSTANCES, CONNS (64), DURATION (10), DRAIN_LIMIT (120), RATE, IDLE_WINDOW,
#      BENCH_PORT_BASE (18600), AMQP_URI, NATS_URL, BINARY (a junction binary
#      built already; else a release build of the working tree).
# Output: bench/out/instances/summary.txt (table) and summary.md.
source "$(dirname "$0")/lib.sh"

BASE="${BENCH_PORT_BASE:-18600}"
S1=$((BASE + 1)) S2=$((BASE + 2)) S3=$((BASE + 3))
QUEUES="${QUEUES:-rabbitmq nats}"
INSTANCES="${INSTANCES:-1 2 3}"
DRAIN_LIMIT="${DRAIN_LIMIT:-120}"
IDLE_WINDOW="${IDLE_WINDOW:-5}"
AMQP_URI="${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
WORK="$OUT_DIR/instances"
BODY='{"orderId":"o-000000123456","customerId":"c-98765","items":[{"sku":"SKU-1001","qty":2,"price":19.99},{"sku":"SKU-2002","qty":1,"price":5.5}],"currency":"EUR","total":45.48,"createdAt":"2024-05-01T12:00:00Z"}'

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool jq jq
ensure_tool curl curl
[ -n "${RATE_PER_INSTANCE:-}" ] && [ -n "${RATE:-}" ] && die "set RATE or RATE_PER_INSTANCE, not both"
[ -n "${RATE:-}${RATE_PER_INSTANCE:-}" ] && ensure_oha
machine_info
if [ -n "${BINARY:-}" ]; then JUNCTION_BIN="$BINARY"; else build_junction; fi
case " $QUEUES " in *" nats "*)
    log "building bench/nats-peer (release; it deletes a run's streams)"
    (cd "$BENCH_DIR/nats-peer" && cargo build --release -q) || die "nats-peer build failed" ;;
esac
rm -rf "$WORK" && mkdir -p "$WORK/subscribers"
for p in $S1 $S2 $S3; do require_free_port "$p"; done

write_nginx_conf "$WORK/subscribers" 1 <<EOF
    keepalive_timeout 120s;
    server { listen 127.0.0.1:$S1; location / { return 200 'ok'; } }
    server { listen 127.0.0.1:$S2; location / { return 200 'ok'; } }
    server { listen 127.0.0.1:$S3; location / { return 200 'ok'; } }
EOF
start_nginx "$WORK/subscribers" "$S1"
wait_port "$S2"; wait_port "$S3"

broker_pid() {
    case "$1" in
        rabbitmq) pgrep -o -f 'beam.smp.*rabbit' ;;
        nats) pgrep -o -x nats-server ;;
    esac
}
now() { date +%s.%N; }
# Sum over the running instances' admin ports of a metric family (label fragment optional).
sum_all() {
    local total=0 port
    for port in "${ADMINS[@]}"; do total=$((total + $(metric_sum "$port" "$@"))); done
    echo "$total"
}
cpu_all() {
    local total=0 pid
    for pid in "${PIDS[@]}"; do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}
HZ=$(getconf CLK_TCK)
# Removes a run's queues or streams from the broker (delivered, so empty; the
# exchanges stay). cleanup_run BACKEND PREFIX
cleanup_run() {
    case "$1" in
        rabbitmq)
            for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$2"); do rabbitmqctl -q delete_queue "$q" >/dev/null; done ;;
        nats)
            for st in orders dlq idem; do
                "$CARGO_TARGET_DIR/release/nats-peer" --url "$NATS_URL" --publishers 0 --duration 0 --warmup 0 \
                    --stream "$2_$st" >/dev/null 2>&1 || true
            done ;;
    esac
}

printf 'backend\tinstances\taccepted\taccepted_per_s\tdeliveries_per_s\tp99_ms\tjunction_cpu_us_per_event\tidle_cpu_ms_per_s\tnet_cpu_us_per_event\tbroker_cpu_us_per_event\tdrained\n' >"$WORK/rows.tsv"
for queue in $QUEUES; do
    bpid=$(broker_pid "$queue" || true)
    [ -n "$bpid" ] || die "no $queue broker process found (is it running?)"
    for n in $INSTANCES; do
        ns="benchinst$(date +%s)n$n"
        case "$queue" in
            rabbitmq) qline="queue: { backend: rabbitmq, url: \"$AMQP_URI\", prefix: $ns }" ;;
            nats) qline="queue: { backend: nats, url: \"$NATS_URL\", prefix: $ns }" ;;
            *) die "QUEUES takes rabbitmq and nats, not $queue" ;;
        esac
        PIDS=() ADMINS=() PORTS=()
        for i in $(seq 1 "$n"); do
            port=$((BASE + 10 + i)) admin=$((BASE + 20 + i))
            require_free_port "$port"; require_free_port "$admin"
            cat >"$WORK/$queue-$n-$i.yaml" <<EOF
listen: 127.0.0.1:$port
admin: { listen: 127.0.0.1:$admin }
$qline
upstreams:
  s1: { url: "http://127.0.0.1:$S1" }
  s2: { url: "http://127.0.0.1:$S2" }
  s3: { url: "http://127.0.0.1:$S3" }
routes:
  - name: orders
    match: { method: POST, path: /orders }
    async:
      topic: orders
      subscribers:
        - { name: sub-1, upstream: s1, path: /hook }
        - { name: sub-2, upstream: s2, path: /hook }
        - { name: sub-3, upstream: s3, path: /hook }
EOF
            start_junction "$WORK/$queue-$n-$i.yaml" "$WORK/$queue-$n-$i.log" "$admin"
            PIDS+=("$JUNCTION_PID") ADMINS+=("$admin") PORTS+=("$port")
        done
        # One event through each instance declares the topology before the clock starts.
        # (A 503 is retried, as a producer would: declaring quorum queues right
        # after others were deleted has failed once on RabbitMQ 3.10.)
        for port in "${PORTS[@]}"; do
            for _ in 1 2 3 4 5; do
                code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"probe":1}' "http://127.0.0.1:$port/orders")
                [ "$code" = 503 ] || break
                sleep 1
            done
            [ "$code" = 202 ] || die "$queue: instance on $port answered $code"
        done
        sleep 2
        wait_quiet
        # The instances' own CPU with no load (refreshers, waiting pulls): over
        # IDLE_WINDOW s, to take out of the per-event figure as "net".
        i0=$(cpu_all); sleep "$IDLE_WINDOW"; i1=$(cpu_all)
        d0=$(sum_all junction_deliveries_total 'outcome="delivered"')
        c0=$(cpu_all) b0=$(cpu_ticks "$bpid") t0=$(now)
        # Events/s offered to each instance (empty: wrk's closed loop).
        each=""
        [ -n "${RATE:-}" ] && each=$(awk -v r="$RATE" -v n="$n" 'BEGIN {print r / n}')
        [ -n "${RATE_PER_INSTANCE:-}" ] && each="$RATE_PER_INSTANCE"
        log "$queue, $n instance(s): ${DURATION}s of POSTs on $CONNS connections${each:+, $each/s per instance}"
        per=$(( CONNS / n ))
        wpids=()
        for i in $(seq 1 "$n"); do
            url="http://127.0.0.1:${PORTS[$((i - 1))]}/orders"
            if [ -n "$each" ]; then
                oha -z "${DURATION}s" -c "$per" -q "$each" -m POST \
                    -H 'content-type: application/json' -d "$BODY" --no-tui --output-format json "$url" \
                    >"$WORK/$queue-$n-$i.oha.json" 2>"$WORK/$queue-$n-$i.oha.err" &
            else
                run_wrk "instances-$queue-$n-$i" "$DURATION" "$per" 1 "$url" "$BENCH_DIR/lua/post.lua" \
                    >"$WORK/$queue-$n-$i.wrk.json" &
            fi
            wpids+=($!)
        done
        for p in "${wpids[@]}"; do wait "$p" || die "the load generator failed"; done
        t_load=$(now)
        accepted=0 p99=0
        for i in $(seq 1 "$n"); do
            if [ -n "$each" ]; then
                f="$WORK/$queue-$n-$i.oha.json"
                ok=$(jq '[.statusCodeDistribution | to_entries[] | select(.key == "202") | .value] | add // 0' "$f")
                p=$(jq '(.latencyPercentiles.p99 // 0) * 1e6 | floor' "$f")
            else
                w=$(cat "$WORK/$queue-$n-$i.wrk.json")
                ok=$(( $(json_get "$w" requests) - $(json_get "$w" non2xx) ))
                p=$(json_get "$w" p99_us)
            fi
            accepted=$((accepted + ok))
            [ "$p" -gt "$p99" ] && p99=$p
        done
        want=$((d0 + 3 * accepted))
        drained=0
        while awk -v a="$t_load" -v b="$(now)" -v l="$DRAIN_LIMIT" 'BEGIN {exit !(b - a < l)}'; do
            if [ "$(sum_all junction_deliveries_total 'outcome="delivered"')" -ge "$want" ]; then drained=1; break; fi
            sleep 0.25
        done
        t1=$(now) c1=$(cpu_all) b1=$(cpu_ticks "$bpid")
        d1=$(sum_all junction_deliveries_total 'outcome="delivered"')
        row=$(awk -v q="$queue" -v n="$n" -v a="$accepted" -v t0="$t0" -v tl="$t_load" -v t1="$t1" \
            -v dd="$((d1 - d0))" -v p99="$p99" -v c="$((c1 - c0))" -v b="$((b1 - b0))" -v hz="$HZ" -v dr="$drained" \
            -v idle="$((i1 - i0))" -v iw="$IDLE_WINDOW" \
            'BEGIN { idle_per_s = idle / hz / iw; net = c / hz - idle_per_s * (t1 - t0)
                     printf "%s\t%d\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\n", q, n, a, a / (tl - t0), dd / (t1 - t0),
                     p99 / 1000, c / hz * 1e6 / a, idle_per_s * 1000, net * 1e6 / a, b / hz * 1e6 / a, (dr ? "yes" : "no") }')
        printf '%s\n' "$row" >>"$WORK/rows.tsv"
        log "$row"
        for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
        cleanup_run "$queue" "$ns"
    done
done

{
    echo "== $(basename "$0"): N instances on one broker, ${DURATION}s, $CONNS connections in total${RATE:+, $RATE events/s offered in total}${RATE_PER_INSTANCE:+, $RATE_PER_INSTANCE events/s offered per instance}; junction $(git -C "$REPO_DIR" rev-parse --short HEAD)"
    column -t -s $'\t' "$WORK/rows.tsv"
} | tee "$WORK/summary.txt"
{
    echo "| backend | instances | accepted | accepted/s | deliveries/s | p99 accept | Junction CPU per event | idle CPU of the instances | net of idle, per event | broker CPU per event | drained |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$WORK/rows.tsv" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s ms | %s µs | %s ms/s | %s µs | %s µs | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}'
} >"$WORK/summary.md"
