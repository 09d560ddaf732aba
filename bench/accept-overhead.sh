#!/usr/bin/env bash
# Junction's durable accept beside the broker's own client publishing with
# confirms to the same topology, in the same run (issue 15's accept-overhead
# target).
#
# Per backend in QUEUES (default "rabbitmq nats kafka"), Junction serves one
# async route (topic with 3 subscribers, all unreachable: accept only, as in
# async-enqueue.sh) and the peer publishes what Junction's backend publishes
# per event:
#   rabbitmq  bench/rabbit-peer --fanout 3 --queue-type quorum (a fanout
#             exchange bound to 3 quorum queues, publisher confirms)
#   nats      bench/nats-peer --consumers 3 (one file-storage stream with interest
#             retention and 3 durable pull consumers, awaiting each ack)
#   kafka     bench/broker-peer --broker kafka (idempotent, acks=all, 6 partitions)
# Two shapes, Junction and peer alternating, ROUNDS times:
#   closed loop: CONNS HTTP connections (wrk) against CONNS publishers, each
#     awaiting its answer before the next: the most either side does on these
#     shared cores (wrk, Junction, the peer and the broker all share them);
#   fixed rate: RATE events/s in total (oha -q; the peer's --rate) with CONNS
#     connections/publishers: latency at the same offered load, below saturation.
# For nats also the HTTP floor: bench/nats-peer --serve --shape tpc (the
# smallest HTTP front to the same publish, thread per core like Junction's data
# plane), driven like Junction: what any HTTP gateway pays above the bare client.
# Per run: events/s, p50/p99, CPU per event of the client side (Junction's
# process, or the peer's) and of the broker (utime + stime from /proc over
# the measured window divided by the events answered in it).
#
# Env: QUEUES, RATE (2000), ROUNDS (2), CONNS, DURATION, WARMUP, BENCH_PORT_BASE (18400),
# BINARY (a junction binary instead of building this tree), AMQP_URI, NATS_URL, KAFKA_BROKERS.
source "$(dirname "$0")/lib.sh"

QUEUES="${QUEUES:-rabbitmq nats kafka}"
RATE="${RATE:-2000}"
ROUNDS="${ROUNDS:-2}"
BASE="${BENCH_PORT_BASE:-18400}"
J_PORT=$((BASE + 1)) J_ADMIN=$((BASE + 2)) DEAD=$((BASE + 3)) FLOOR=$((BASE + 4))
AMQP_URI="${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
WORK="$OUT_DIR/accept-overhead"
URL="http://127.0.0.1:$J_PORT/orders"
FLOOR_URL="http://127.0.0.1:$FLOOR/orders"
BODY='{"orderId":"o-000000123456","customerId":"c-98765","items":[{"sku":"SKU-1001","qty":2,"price":19.99},{"sku":"SKU-2002","qty":1,"price":5.5}],"currency":"EUR","total":45.48,"createdAt":"2024-05-01T12:00:00Z"}'
HZ=$(getconf CLK_TCK)

ensure_tool wrk wrk
ensure_tool jq jq
ensure_tool curl curl
ensure_oha
machine_info
if [ -n "${BINARY:-}" ]; then JUNCTION_BIN="$BINARY"; else build_junction; fi
for peer in rabbit-peer nats-peer broker-peer; do
    case "$peer:$QUEUES" in
        rabbit-peer:*rabbitmq* | nats-peer:*nats* | broker-peer:*kafka*)
            log "building bench/$peer (release)"
            (cd "$BENCH_DIR/$peer" && cargo build --release -q) || die "$peer build failed" ;;
    esac
done
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $J_PORT $J_ADMIN $DEAD $FLOOR; do require_free_port "$p"; done

broker_pid() {
    case "$1" in
        rabbitmq) pgrep -o -f 'beam.smp.*rabbit' ;;
        nats) pgrep -o -x nats-server ;;
        kafka) pgrep -o -x tansu ;;
    esac
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
us_per() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }'; }

# Runs the peer of BACKEND with RATE_ARG (0: closed loop), measuring its own and
# the broker's CPU over the measured window. peer_run BACKEND RATE LABEL -> one
# JSON line {rps, p50_us, p99_us, client_us, broker_us}
peer_run() {
    local backend="$1" rate="$2" label="$3" bpid="$4" cmd pid c0 b0 c1 b1 n
    case "$backend" in
        rabbitmq) cmd=("$CARGO_TARGET_DIR/release/rabbit-peer" --uri "$AMQP_URI" --fanout 3 --queue-type quorum
                       --queue "junction-bench-overhead-$$") ;;
        nats) cmd=("$CARGO_TARGET_DIR/release/nats-peer" --url "$NATS_URL" --consumers 3
                   --stream "junction_bench_overhead_$$") ;;
        kafka) cmd=("$CARGO_TARGET_DIR/release/broker-peer" --broker kafka --url "$KAFKA_BROKERS" --partitions 6) ;;
    esac
    "${cmd[@]}" --publishers "$CONNS" --duration "$DURATION" --warmup "$WARMUP" --size 207 --rate "$rate" \
        >"$WORK/$label.txt" 2>&1 &
    pid=$!
    # The peer sets up (queues, stream, topic) before its warm-up starts: the
    # window is taken from the warm-up's end to just before the run's.
    sleep "$WARMUP"; sleep 0.5
    c0=$(ticks "$pid") b0=$(ticks "$bpid")
    sleep "$(awk -v d="$DURATION" 'BEGIN {print d - 0.5}')"
    c1=$(ticks "$pid") b1=$(ticks "$bpid")
    wait "$pid" || { cat "$WORK/$label.txt" >&2; die "peer failed ($label)"; }
    local json
    json=$(grep '^PEERJSON ' "$WORK/$label.txt" | sed 's/^PEERJSON //')
    # Events in the CPU window: the peer's rate over the window's length.
    n=$(awk -v r="$(json_get "$json" rps)" -v d="$DURATION" 'BEGIN {printf "%d", r * (d - 0.5)}')
    jq -nc --argjson p "$json" --arg c "$(us_per $((c1 - c0)) "$n")" --arg b "$(us_per $((b1 - b0)) "$n")" \
        '{rps: $p.rps, p50_us: $p.p50_us, p99_us: $p.p99_us, client_us: $c, broker_us: $b}'
}

# An HTTP server (Junction, or the NATS floor) at RATE (0: wrk's closed loop),
# CPU over the measured run.
# http_run RATE LABEL BROKER_PID SERVER_PID URL -> the same JSON line as peer_run
http_run() {
    local rate="$1" label="$2" bpid="$3" spid="$4" url="$5" c0 b0 c1 b1 json n
    if [ "$rate" = 0 ]; then
        run_wrk "$label-warmup" "$WARMUP" "$CONNS" "$THREADS" "$url" "$BENCH_DIR/lua/post.lua" >/dev/null
        c0=$(ticks "$spid") b0=$(ticks "$bpid")
        json=$(run_wrk "$label" "$DURATION" "$CONNS" "$THREADS" "$url" "$BENCH_DIR/lua/post.lua")
        c1=$(ticks "$spid") b1=$(ticks "$bpid")
        n=$(( $(json_get "$json" requests) - $(json_get "$json" non2xx) ))
        json=$(jq -nc --argjson w "$json" --argjson n "$n" '{rps: ($n / $w.seconds), p50_us: $w.p50_us, p99_us: $w.p99_us}')
    else
        local oha_args=(-c "$CONNS" -q "$rate" -m POST -H 'content-type: application/json' -d "$BODY" --no-tui --output-format json)
        oha -z "${WARMUP}s" "${oha_args[@]}" "$url" >/dev/null 2>&1 || die "oha warm-up failed"
        c0=$(ticks "$spid") b0=$(ticks "$bpid")
        oha -z "${DURATION}s" "${oha_args[@]}" "$url" >"$WORK/$label.oha.json" 2>"$WORK/$label.oha.err" ||
            { cat "$WORK/$label.oha.err" >&2; die "oha failed ($label)"; }
        c1=$(ticks "$spid") b1=$(ticks "$bpid")
        n=$(jq '[.statusCodeDistribution | to_entries[] | select(.key == "202") | .value] | add // 0' "$WORK/$label.oha.json")
        json=$(jq -c --argjson n "$n" --argjson d "$DURATION" '{rps: ($n / $d),
            p50_us: ((.latencyPercentiles.p50 // 0) * 1e6 | floor), p99_us: ((.latencyPercentiles.p99 // 0) * 1e6 | floor)}' \
            "$WORK/$label.oha.json")
    fi
    jq -nc --argjson j "$json" --arg c "$(us_per $((c1 - c0)) "$n")" --arg b "$(us_per $((b1 - b0)) "$n")" \
        '$j + {client_us: $c, broker_us: $b}'
}

RESULTS="$WORK/results.tsv"
printf 'backend\tround\tshape\tsystem\tevents_per_s\tp50_us\tp99_us\tclient_cpu_us\tbroker_cpu_us\n' >"$RESULTS"
record() { # record BACKEND ROUND SHAPE SYSTEM JSON
    printf '%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(json_get "$5" rps)" "$(json_get "$5" p50_us)" \
        "$(json_get "$5" p99_us)" "$(json_get "$5" client_us)" "$(json_get "$5" broker_us)" >>"$RESULTS"
}

for backend in $QUEUES; do
    bpid=$(broker_pid "$backend") || true
    [ -n "$bpid" ] || die "no $backend broker process running (bash scripts/services starts them)"
    NS="ovh$(date +%s)"
    case "$backend" in
        rabbitmq) QUEUE_LINE="queue: { backend: rabbitmq, url: \"$AMQP_URI\", prefix: $NS }" ;;
        nats) QUEUE_LINE="queue: { backend: nats, url: \"$NATS_URL\", prefix: $NS }" ;;
        kafka) QUEUE_LINE="queue: { backend: kafka, url: \"kafka://$KAFKA_BROKERS\", prefix: $NS, replication_factor: 1 }" ;;
        *) die "QUEUES takes rabbitmq, nats and kafka, not $backend" ;;
    esac
    cat >"$WORK/junction-$backend.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
$QUEUE_LINE
upstreams:
  dead: { url: "http://127.0.0.1:$DEAD" }
routes:
  - name: orders
    match: { method: POST, path: /orders }
    async:
      topic: orders
      subscribers:
        - { name: sub-1, upstream: dead, path: /hook }
        - { name: sub-2, upstream: dead, path: /hook }
        - { name: sub-3, upstream: dead, path: /hook }
EOF
    start_junction "$WORK/junction-$backend.yaml" "$WORK/junction-$backend.log" "$J_ADMIN"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"probe":1}' "$URL")
    [ "$code" = 202 ] || die "POST $URL answered $code on $backend"
    for round in $(seq 1 "$ROUNDS"); do
        for shape in closed rate; do
            r=0; [ "$shape" = rate ] && r="$RATE"
            wait_quiet
            log "$backend round $round, $shape: junction"
            record "$backend" "$round" "$shape" junction \
                "$(http_run "$r" "$backend-$round-$shape-junction" "$bpid" "$JUNCTION_PID" "$URL")"
            wait_quiet
            log "$backend round $round, $shape: peer"
            record "$backend" "$round" "$shape" peer "$(peer_run "$backend" "$r" "$backend-$round-$shape-peer" "$bpid")"
            if [ "$backend" = nats ]; then
                wait_quiet
                log "$backend round $round, $shape: http floor (nats-peer --serve, thread per core)"
                "$CARGO_TARGET_DIR/release/nats-peer" --url "$NATS_URL" --consumers 3 --serve "127.0.0.1:$FLOOR" \
                    --shape tpc --stream "junction_bench_floor_$$" >"$WORK/floor.log" 2>&1 &
                fpid=$!
                STARTED_PIDS+=("$fpid")
                for _ in $(seq 1 50); do curl -fs -o /dev/null -d '{}' "$FLOOR_URL" && break; sleep 0.1; done
                record "$backend" "$round" "$shape" floor \
                    "$(http_run "$r" "$backend-$round-$shape-floor" "$bpid" "$fpid" "$FLOOR_URL")"
                stop_pid "$fpid"
            fi
        done
    done
    stop_pid "$JUNCTION_PID"
    case "$backend" in
        rabbitmq)
            log "deleting this run's queues ($NS.*)"
            for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$NS\."); do rabbitmqctl -q delete_queue "$q" >/dev/null; done ;;
        nats)
            for st in "${NS}_orders" "${NS}_dlq" "${NS}_idem" "junction_bench_floor_$$"; do
                "$CARGO_TARGET_DIR/release/nats-peer" --url "$NATS_URL" --publishers 0 --duration 0 --warmup 0 \
                    --stream "$st" >/dev/null 2>&1 || true
            done ;;
    esac
done

{
    echo "== accept overhead: Junction (HTTP POST -> durable publish, 3 subscribers) beside the broker's own client, same run"
    echo "   closed loop: $CONNS connections/publishers; rate: $RATE events/s in total; ${DURATION}s each after ${WARMUP}s warm-up; $ROUNDS rounds"
    column -t -s $'\t' "$RESULTS"
    echo
    echo "per backend and shape, medians over the rounds: junction / peer"
    awk -F'\t' 'NR > 1 { k = $1 "\t" $3 "\t" $4; n[k]++; rps[k, n[k]] = $5; p50[k, n[k]] = $6; p99[k, n[k]] = $7; cpu[k, n[k]] = $8 }
        function med(a, k, c,   i, j, t, v) { for (i = 1; i <= c; i++) v[i] = a[k, i]
            for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2 }
        END { printf "%-10s %-7s %22s %22s %22s %24s\n", "backend", "shape", "events/s (j/p)", "p50 us (j/p, +%)", "p99 us (j/p)", "client CPU us/event (j/p)"
            for (k in n) { split(k, f, "\t"); if (f[3] != "junction") continue
                j = f[1] "\t" f[2] "\tjunction"; p = f[1] "\t" f[2] "\tpeer"
                a = med(rps, j, n[j]); b = med(rps, p, n[p]); c = med(p50, j, n[j]); d = med(p50, p, n[p])
                printf "%-10s %-7s %10.0f/%-10.0f %8d/%-6d %+5.0f%% %10d/%-10d %11.1f/%-11.1f\n", f[1], f[2], a, b, c, d,
                    (d > 0 ? 100 * (c - d) / d : 0), med(p99, j, n[j]), med(p99, p, n[p]), med(cpu, j, n[j]), med(cpu, p, n[p])
                fl = f[1] "\t" f[2] "\tfloor"; if (!(fl in n)) continue
                e = med(rps, fl, n[fl]); g = med(p50, fl, n[fl])
                printf "%-10s %-7s %10.0f/%-10.0f %8d/%-6d %+5.0f%% %10d/%-10d %11.1f/%-11.1f  (http floor / peer)\n", f[1], f[2] "-floor", e, b, g, d,
                    (d > 0 ? 100 * (g - d) / d : 0), med(p99, fl, n[fl]), med(p99, p, n[p]), med(cpu, fl, n[fl]), med(cpu, p, n[p]) } }' "$RESULTS" | sort
    echo "raw: $RESULTS"
} | tee "$OUT_DIR/accept-overhead.txt"
