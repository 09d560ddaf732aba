#!/usr/bin/env bash
# Durable accept rate and delivery rate of an async route, against RabbitMQ publisher confirms.
#
# Junction: one async route (POST /orders, embedded queue, journal fdatasync
# before the 202) with 3 subscribers, each an nginx `return 200` server on its
# own port. wrk POSTs a 207-byte JSON body on 64 connections for 10 s (after a
# warm-up whose backlog is drained first). Reported: accepted/s (202s only)
# and accept latency; then deliveries/s, read from junction_deliveries_total
# every 0.5 s until all 3 x accepted deliveries are done (bounded).
# Then accept only: the same route on a fresh queue with its subscribers on a
# closed port (breakers open, nothing delivered), same wrk shape. Then backlog
# drain: Junction restarted on that queue with the subscribers reachable, timed
# until every pending event reached all 3.
#
# Peer, same run: bench/rabbit-peer (lapin), 64 publishers on their own
# channels, durable queue, persistent messages, each awaiting its confirm.
#
# SUBSCRIBERS=h2c: the nginx subscribers listen for HTTP/2 without TLS and Junction's
# upstreams say `http2: true` (one multiplexed connection per delivery thread and
# subscriber); the default, http1, is keep-alive HTTP/1.1.
#
# QUEUE=redis | postgres | rabbitmq | nats | kafka | sqs: the same runs on that backend
# (REDIS_URL, POSTGRES_URL, AMQP_URI, NATS_URL, KAFKA_BROKERS, SQS_ENDPOINT; a fresh prefix or
# schema per run, removed at the end where the server keeps it on disk) instead of the embedded
# queue. The peer is the broker's own client where there is one: NATS JetStream publishes
# awaiting acks (bench/nats-peer) for nats, pgbench committing one INSERT per transaction on 64
# connections for postgres, rdkafka producing idempotently with acks=all (bench/broker-peer) for
# kafka, the AWS SDK publishing to an SNS topic fanned out to 3 SQS queues (bench/broker-peer)
# for sqs, RabbitMQ confirms otherwise.
#
# CPU: the Junction process's utime + stime (/proc/PID/stat) over the accept-only run,
# divided by the events it accepted, is reported as CPU per accepted event.
#
# Env: CONNS DURATION WARMUP THREADS, DRAIN_LIMIT (120 s), BENCH_PORT_BASE (18000), SUBSCRIBERS (http1),
# QUEUE (embedded), BINARY (a junction binary instead of building this tree).
source "$(dirname "$0")/lib.sh"

BASE="${BENCH_PORT_BASE:-18000}"
J_PORT=$((BASE + 21)) J_ADMIN=$((BASE + 31))
S1=$((BASE + 22)) S2=$((BASE + 23)) S3=$((BASE + 24))
DRAIN_LIMIT="${DRAIN_LIMIT:-120}"
SUBSCRIBERS="${SUBSCRIBERS:-http1}"
QUEUE="${QUEUE:-embedded}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
SQS_ENDPOINT="${SQS_ENDPOINT:-http://127.0.0.1:4566}"
# The local SQS server takes any credentials; AWS itself takes the standard chain's.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
case "$SUBSCRIBERS" in
    http1) LISTEN_OPT="" UP_OPT="" ;;
    h2c) LISTEN_OPT=" http2" UP_OPT=", http2: true" ;;
    *) die "SUBSCRIBERS is http1 or h2c, not $SUBSCRIBERS" ;;
esac
AMQP_URI="${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}"
WORK="$OUT_DIR/async-enqueue"
URL="http://127.0.0.1:$J_PORT/orders"

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool jq jq
ensure_tool curl curl
machine_info
if [ -n "${BINARY:-}" ]; then JUNCTION_BIN="$BINARY"; else build_junction; fi
log "building bench/rabbit-peer (release)"
(cd "$BENCH_DIR/rabbit-peer" && cargo build --release -q) || die "rabbit-peer build failed"
PEER_BIN="$CARGO_TARGET_DIR/release/rabbit-peer"
if [ "$QUEUE" = nats ]; then
    log "building bench/nats-peer (release)"
    (cd "$BENCH_DIR/nats-peer" && cargo build --release -q) || die "nats-peer build failed"
fi
if [ "$QUEUE" = kafka ] || [ "$QUEUE" = sqs ]; then
    log "building bench/broker-peer (release)"
    (cd "$BENCH_DIR/broker-peer" && cargo build --release -q) || die "broker-peer build failed"
fi
rm -rf "$WORK" && mkdir -p "$WORK/subscribers"
for p in $J_PORT $J_ADMIN $S1 $S2 $S3; do require_free_port "$p"; done

# --- three fast subscribers: one nginx, three ports ----------------------------
write_nginx_conf "$WORK/subscribers" 1 <<EOF
    keepalive_timeout 120s;
    server { listen 127.0.0.1:$S1$LISTEN_OPT; location / { return 200 'ok'; } }
    server { listen 127.0.0.1:$S2$LISTEN_OPT; location / { return 200 'ok'; } }
    server { listen 127.0.0.1:$S3$LISTEN_OPT; location / { return 200 'ok'; } }
EOF
start_nginx "$WORK/subscribers" "$S1"
wait_port "$S2"; wait_port "$S3"

case "$QUEUE" in
    # The prefix ends in the queue's path so the accept-only and drain runs below,
    # which rewrite that path, get their own queue in Redis too.
    redis)
        BENCH_PREFIX="bench-$(date +%s)"
        QUEUE_LINE="queue: { backend: redis, url: \"$REDIS_URL\", prefix: \"$BENCH_PREFIX:$WORK/queue\" }" ;;
    embedded) QUEUE_LINE="queue: { backend: embedded, path: $WORK/queue }" ;;
    # The namespace ends in "main"; the accept-only and drain runs rewrite it to "acpt".
    postgres) NS="bench_$(date +%s)_"
        QUEUE_LINE="queue: { backend: postgres, url: \"$POSTGRES_URL\", schema: ${NS}main }" ;;
    rabbitmq) NS="bench-$(date +%s)-"
        QUEUE_LINE="queue: { backend: rabbitmq, url: \"$AMQP_URI\", prefix: ${NS}main }" ;;
    nats) NS="bench$(date +%s)"
        QUEUE_LINE="queue: { backend: nats, url: \"$NATS_URL\", prefix: ${NS}main }" ;;
    kafka) NS="bench$(date +%s)"
        QUEUE_LINE="queue: { backend: kafka, url: \"kafka://$KAFKA_BROKERS\", prefix: ${NS}main, replication_factor: 1 }" ;;
    sqs) NS="bench$(date +%s)"
        QUEUE_LINE="queue: { backend: sqs, endpoint: \"$SQS_ENDPOINT\", prefix: ${NS}main }" ;;
    *) die "QUEUE is embedded, redis, postgres, rabbitmq, nats, kafka or sqs, not $QUEUE" ;;
esac
# Rewrites a config to the accept-only queue (a separate one, on every backend).
to_accept_queue() { sed -e "s#$WORK/queue#$WORK/queue-accept#" -e "s#${NS:-@none@}main#${NS:-@none@}acpt#" "$@"; }
cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
$QUEUE_LINE
upstreams:
  s1: { url: "http://127.0.0.1:$S1"$UP_OPT }
  s2: { url: "http://127.0.0.1:$S2"$UP_OPT }
  s3: { url: "http://127.0.0.1:$S3"$UP_OPT }
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
start_junction "$WORK/junction.yaml" "$WORK/junction.log" "$J_ADMIN"
sleep 1
IDLE_KIB=$(rss_kib "$JUNCTION_PID")

code=$(curl -s -o "$WORK/probe.json" -w '%{http_code}' -H 'content-type: application/json' -d '{"probe":1}' "$URL")
[ "$code" = 202 ] || die "POST $URL answered $code: $(cat "$WORK/probe.json")"

delivered() { metric_sum "$J_ADMIN" junction_deliveries_total 'outcome="delivered"'; }
# junction_events_accepted_total is recorded for reference; the run's accepted count is
# wrk's 2xx count, because that counter is not incremented at every commit.
accepted() { metric_sum "$J_ADMIN" junction_events_accepted_total; }
depth() { metric_sum "$J_ADMIN" junction_queue_depth; }
now() { date +%s.%N; }
sample() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$(now)" "$(accepted)" "$(delivered)" "$(depth)" "$(rss_kib "$JUNCTION_PID")" >>"$1"
}

# Waits (bounded by DRAIN_LIMIT) until no message is undelivered (junction_queue_depth 0),
# sampling to a timeline file. wait_drained TIMELINE -> prints "seconds_waited drained(0/1)"
wait_drained() {
    local timeline="$1" t0 d last_d=-1 still=0
    t0=$(now)
    while :; do
        sample "$timeline"
        d=$(delivered)
        if [ "$(depth)" -eq 0 ]; then echo "$(awk -v a="$t0" -v b="$(now)" 'BEGIN {print b - a}') 1"; return; fi
        if [ "$d" = "$last_d" ]; then still=$((still + 1)); else still=0; fi
        last_d=$d
        if [ "$still" -ge 20 ] || awk -v a="$t0" -v b="$(now)" -v l="$DRAIN_LIMIT" 'BEGIN {exit !(b - a > l)}'; then
            echo "$(awk -v a="$t0" -v b="$(now)" 'BEGIN {print b - a}') 0"; return
        fi
        sleep 0.5
    done
}

# --- warm-up, then drain it so the measured run starts from an empty backlog -------
wait_quiet
log "warm-up: ${WARMUP}s of POSTs, then drain"
run_wrk async-warmup "$WARMUP" "$CONNS" "$THREADS" "$URL" "$BENCH_DIR/lua/post.lua" >/dev/null
wait_drained "$WORK/warmup-timeline.tsv" >/dev/null

# --- measured run --------------------------------------------------------------------
TIMELINE="$WORK/timeline.tsv"
printf 'epoch\taccepted_total\tdelivered_total\tqueue_depth\trss_kib\n' >"$TIMELINE"
A0=$(accepted); D0=$(delivered)
log "measuring: ${DURATION}s, $CONNS connections POSTing 207-byte JSON"
T_START=$(now)
run_wrk async-enqueue "$DURATION" "$CONNS" "$THREADS" "$URL" "$BENCH_DIR/lua/post.lua" >"$WORK/wrk.json" &
WRK_PID=$!
while kill -0 "$WRK_PID" 2>/dev/null; do
    sample "$TIMELINE"
    sleep 0.5
done
wait "$WRK_PID" || die "wrk failed"
T_LOAD_END=$(now)
D_LOAD_END=$(delivered)
read -r DRAIN_SECS DRAINED < <(wait_drained "$TIMELINE")
T_DONE=$(now)
A1=$(accepted); D1=$(delivered)
PEAK_KIB=$(awk -F'\t' 'NR > 1 && $5 > m {m = $5} END {print m + 0}' "$TIMELINE")
WRK=$(cat "$WORK/wrk.json")

# --- accept only: the same route, its subscribers unreachable --------------------------
# Deliveries fail, the breakers open and the dispatchers pause, so this measures what
# durable accepts alone cost (what RabbitMQ's publisher confirms measure below).
stop_pid "$JUNCTION_PID"
DEAD=$((BASE + 29))
require_free_port "$DEAD"
to_accept_queue -e "s#127.0.0.1:$S1\"#127.0.0.1:$DEAD\"#" \
    -e "s#127.0.0.1:$S2\"#127.0.0.1:$DEAD\"#" -e "s#127.0.0.1:$S3\"#127.0.0.1:$DEAD\"#" \
    "$WORK/junction.yaml" >"$WORK/junction-accept.yaml"
start_junction "$WORK/junction-accept.yaml" "$WORK/junction-accept.log" "$J_ADMIN"
wait_quiet
log "accept only: ${DURATION}s, $CONNS connections, subscribers unreachable (after ${WARMUP}s warm-up)"
run_wrk async-accept-warmup "$WARMUP" "$CONNS" "$THREADS" "$URL" "$BENCH_DIR/lua/post.lua" >/dev/null
TICKS0=$(awk '{print $14 + $15}' "/proc/$JUNCTION_PID/stat")
ACCEPT=$(run_wrk async-accept "$DURATION" "$CONNS" "$THREADS" "$URL" "$BENCH_DIR/lua/post.lua")
TICKS1=$(awk '{print $14 + $15}' "/proc/$JUNCTION_PID/stat")
ACCEPT_CPU_MS=$(( (TICKS1 - TICKS0) * 1000 / $(getconf CLK_TCK) ))
ACCEPT_RSS_KIB=$(rss_kib "$JUNCTION_PID")
stop_pid "$JUNCTION_PID"

# --- backlog drain: the accept-only backlog, delivered to the 3 nginx subscribers -----------
# Restarted on that queue with the reachable subscribers: nothing else competes for the
# cores, so this is the delivery capacity. Timed from the restart to an empty queue.
to_accept_queue "$WORK/junction.yaml" >"$WORK/junction-drain.yaml"
wait_quiet
log "backlog drain: restart on the accept-only queue with the subscribers reachable"
T_RESTART=$(now)
READY_WAIT=60 start_junction "$WORK/junction-drain.yaml" "$WORK/junction-drain.log" "$J_ADMIN"
T_READY=$(now)
BACKLOG=$(depth)
read -r BL_SECS BL_DRAINED < <(wait_drained "$WORK/drain-timeline.tsv")
BL_DELIVERED=$(delivered)
stop_pid "$JUNCTION_PID"

# --- peer: the broker's own client, durable publishes awaiting confirmation -------------------
wait_quiet
case "$QUEUE" in
    nats)
        PEER_NAME="nats jetstream (file, acks)"
        log "peer: NATS JetStream, $CONNS publishers awaiting acks, ${DURATION}s after ${WARMUP}s warm-up"
        "$CARGO_TARGET_DIR/release/nats-peer" --url "$NATS_URL" --publishers "$CONNS" --duration "$DURATION" \
            --warmup "$WARMUP" --size 207 >"$WORK/peer.txt" 2>&1 || { cat "$WORK/peer.txt" >&2; die "nats-peer failed"; }
        PEER=$(grep '^PEERJSON ' "$WORK/peer.txt" | sed 's/^PEERJSON //') ;;
    kafka|sqs)
        if [ "$QUEUE" = kafka ]; then
            PEER_NAME="kafka (rdkafka, idempotent, acks=all)" PEER_ARGS=(--broker kafka --url "$KAFKA_BROKERS" --partitions 6)
        else
            PEER_NAME="sns -> 3 sqs queues (aws sdk)" PEER_ARGS=(--broker sqs --url "$SQS_ENDPOINT" --fanout 3)
        fi
        log "peer: $PEER_NAME, $CONNS publishers awaiting acks, ${DURATION}s after ${WARMUP}s warm-up"
        "$CARGO_TARGET_DIR/release/broker-peer" "${PEER_ARGS[@]}" --publishers "$CONNS" --duration "$DURATION" \
            --warmup "$WARMUP" --size 207 >"$WORK/peer.txt" 2>&1 || { cat "$WORK/peer.txt" >&2; die "broker-peer failed"; }
        PEER=$(grep '^PEERJSON ' "$WORK/peer.txt" | sed 's/^PEERJSON //') ;;
    postgres)
        PEER_NAME="postgresql (INSERT+COMMIT each)"
        log "peer: pgbench, $CONNS connections each committing one 207-byte INSERT, ${DURATION}s"
        psql -q "$POSTGRES_URL" -c "DROP TABLE IF EXISTS junction_bench_peer; CREATE TABLE junction_bench_peer (id bigserial PRIMARY KEY, body bytea)"
        printf "INSERT INTO junction_bench_peer (body) VALUES (decode(repeat('78', 207), 'hex'));\n" >"$WORK/peer.sql"
        pgbench -n -c "$CONNS" -j "$THREADS" -T "$DURATION" -r -f "$WORK/peer.sql" "$POSTGRES_URL" >"$WORK/peer.txt" 2>&1 \
            || { cat "$WORK/peer.txt" >&2; die "pgbench failed"; }
        psql -q "$POSTGRES_URL" -c "DROP TABLE junction_bench_peer"
        TPS=$(awk '/^tps = / {print $3; exit}' "$WORK/peer.txt")
        LAT_MS=$(awk '/^latency average = / {print $4; exit}' "$WORK/peer.txt")
        # pgbench gives the average latency, not percentiles: reported as p50, p99 "0" (n/a).
        PEER="{\"rps\":$TPS,\"p50_us\":$(awk -v l="$LAT_MS" 'BEGIN {printf "%d", l * 1000}'),\"p99_us\":0,\"nacks\":0}" ;;
    *)
        PEER_NAME="rabbitmq (durable, persistent, confirms)"
        log "peer: RabbitMQ, $CONNS publishers with confirms, ${DURATION}s after ${WARMUP}s warm-up"
        "$PEER_BIN" --uri "$AMQP_URI" --publishers "$CONNS" --duration "$DURATION" --warmup "$WARMUP" --size 207 \
            >"$WORK/peer.txt" 2>&1 || { cat "$WORK/peer.txt" >&2; die "rabbit-peer failed"; }
        PEER=$(grep '^PEERJSON ' "$WORK/peer.txt" | sed 's/^PEERJSON //') ;;
esac

{
    echo "== async enqueue: $CONNS connections x ${DURATION}s POST 207-byte JSON (after ${WARMUP}s warm-up, drained); 3 nginx subscribers ($SUBSCRIBERS), $QUEUE queue =="
    awk -v w="$WRK" -v accepted=$(( $(json_get "$WRK" requests) - $(json_get "$WRK" non2xx) )) -v delivered=$((D1 - D0)) -v dle=$((D_LOAD_END - D0)) -v macc=$((A1 - A0)) \
        -v ts="$T_START" -v tle="$T_LOAD_END" -v td="$T_DONE" -v drained="$DRAINED" \
        -v req="$(json_get "$WRK" requests)" -v secs="$(json_get "$WRK" seconds)" -v p50="$(json_get "$WRK" p50_us)" -v p99="$(json_get "$WRK" p99_us)" \
        -v non2xx="$(json_get "$WRK" non2xx)" -v serr="$(json_get "$WRK" socket_errors)" \
        -v prps="$(json_get "$PEER" rps)" -v pp50="$(json_get "$PEER" p50_us)" -v pp99="$(json_get "$PEER" p99_us)" \
        -v pn="$(json_get "$PEER" nacks)" -v pname="$PEER_NAME" -v cpu="$ACCEPT_CPU_MS" \
        -v areq="$(json_get "$ACCEPT" requests)" -v asecs="$(json_get "$ACCEPT" seconds)" -v ap50="$(json_get "$ACCEPT" p50_us)" \
        -v ap99="$(json_get "$ACCEPT" p99_us)" -v anon="$(json_get "$ACCEPT" non2xx)" -v aserr="$(json_get "$ACCEPT" socket_errors)" 'BEGIN {
        printf "%-36s %12s %10s %10s %s\n", "system", "accepted/s", "p50 (us)", "p99 (us)", "notes"
        printf "%-36s %12.0f %10d %10d non-2xx %d, socket errors %d\n", "junction, delivering to 3", (req - non2xx) / secs, p50, p99, non2xx, serr
        printf "%-36s %12.0f %10d %10d non-2xx %d, socket errors %d\n", "junction, accept only", (areq - anon) / asecs, ap50, ap99, anon, aserr
        printf "%-36s %12.0f %10d %10d nacks/errors %d\n", pname, prps, pp50, pp99, pn
        printf "junction CPU per accepted event (accept only): %.1f us (%d ms over %d events); accept overhead vs the peer: %.0f%% of its rate\n", cpu * 1000 / (areq - anon), cpu, areq - anon, 100 * ((areq - anon) / asecs) / prps
        printf "\n"
        printf "events accepted in the run (202s seen by wrk): %d; junction_events_accepted_total moved by %d\n", accepted, macc
        printf "deliveries: %d for %d expected (3 x 202s; a few more are normal: requests cut off by wrk'"'"'s end can still commit)%s\n", delivered, 3 * accepted, drained ? "" : "  NOT DRAINED within the limit"
        printf "delivery rate, load start -> drained: %.0f deliveries/s over %.1f s\n", delivered / (td - ts), td - ts
        printf "delivery rate during the load: %.0f deliveries/s; after it (drain only): %.0f deliveries/s over %.1f s\n", dle / (tle - ts), (delivered - dle) / (td - tle), td - tle
    }'
    awk -v n="$BACKLOG" -v d="$BL_DELIVERED" -v s="$BL_SECS" -v ok="$BL_DRAINED" -v r0="$T_RESTART" -v r1="$T_READY" 'BEGIN {
        printf "backlog drain: %d events pending at restart (ready in %.1f s); %d deliveries in %.1f s = %.0f deliveries/s (%.0f events/s to all 3)%s\n", n, r1 - r0, d, s, d / s, d / s / 3, ok ? "" : "  NOT DRAINED within the limit"
    }'
    echo "junction RSS: idle $(kib_to_mib "$IDLE_KIB") MiB, peak during run $(kib_to_mib "$PEAK_KIB") MiB; after the accept-only run $(kib_to_mib "$ACCEPT_RSS_KIB") MiB"
    if [ "$QUEUE" = embedded ]; then
        echo "queue dir size after run: $(du -sh "$WORK/queue" | cut -f1); after the accept-only run: $(du -sh "$WORK/queue-accept" | cut -f1)"
    elif [ "$QUEUE" = redis ]; then
        echo "redis memory after the runs: $(redis-cli -u "$REDIS_URL" info memory | awk -F: '/^used_memory_human/ {print $2}' | tr -d '\r')"
    fi
    echo "timeline (epoch, accepted, delivered, depth, rss): $TIMELINE"
} | tee "$OUT_DIR/async-enqueue.txt"

case "$QUEUE" in
    postgres)
        log "dropping this run's schemas (${NS}main, ${NS}acpt)"
        psql -q "$POSTGRES_URL" -c "DROP SCHEMA IF EXISTS ${NS}main CASCADE; DROP SCHEMA IF EXISTS ${NS}acpt CASCADE" ;;
    rabbitmq)
        log "deleting this run's queues (${NS}*; its two empty exchanges stay)"
        for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^${NS}"); do rabbitmqctl -q delete_queue "$q" >/dev/null; done ;;
    nats)
        log "deleting this run's streams (${NS}*; nats-peer deletes the stream it is named before it starts)"
        for p in main acpt; do
            for st in orders dlq idem; do
                "$CARGO_TARGET_DIR/release/nats-peer" --url "$NATS_URL" --publishers 0 --duration 0 --warmup 0 \
                    --stream "${NS}${p}_${st}" >/dev/null 2>&1 || true
            done
        done ;;
esac
if [ "$QUEUE" = redis ]; then
    log "removing this run's keys from Redis ($BENCH_PREFIX:*)"
    redis-cli -u "$REDIS_URL" --scan --pattern "$BENCH_PREFIX:*" |
        xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null
fi
