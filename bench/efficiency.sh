#!/usr/bin/env bash
# CPU per request of Junction beside nginx and HAProxy, in one run (issue 20).
#
# Raw requests/s on a shared 2-core machine swings by up to 30 % between runs,
# mostly with how the load generator, the origin and the proxy share the cores.
# What a proxy itself costs is steadier: the CPU time (utime + stime from
# /proc/PID/stat, every thread, nginx's master and workers) its processes spent,
# divided by the requests they answered, under the same closed-loop load. Every
# scenario runs each server once per round, rounds interleaved; the table keeps
# each server's lowest-CPU round with that round's requests/s, and the median
# of its rounds' p99.
#
# Scenarios (SCENARIOS, default all four):
#   get    a small GET proxied to an nginx origin (`return 200`, 49-byte JSON):
#          Junction's default policy stack (breaker, retry budget, metrics,
#          dependency graph), nginx proxy_pass with a keep-alive pool, HAProxy
#          (http-reuse always), and bench/hyper-floor (the smallest hyper proxy,
#          thread per core: what the HTTP stack alone costs here).
#   cache  the same GET as a cache hit: Junction `cache: { ttl: 300s }`, nginx
#          proxy_cache, HAProxy's cache (`total-max-size 64`).
#   post   a proxied POST with a 4 KiB JSON body (bench/lua/post4k.lua).
#   async  a durable accept on the embedded queue (journal fdatasync before the
#          202; the subscribers unreachable so only accepts run), CONNS_ASYNC
#          (64) connections posting 207 bytes, beside RabbitMQ: bench/rabbit-peer
#          with as many publishers awaiting confirms of persistent messages into
#          a durable queue; its row is the broker's (beam.smp) CPU per message.
#
# Each server runs 2 data threads or workers (Junction's data plane is one
# thread per core; nginx worker_processes 2; HAProxy nbthread 2).
#
# Output: bench/out/efficiency/summary.txt (table) and summary.md (the same as a
# Markdown table for BENCHMARKS.md), every round in rounds.tsv.
#
# Env: SCENARIOS ("get cache post async"), ROUNDS (3), DURATION (8), CONNS (32),
#      ASYNC_QUEUE_OPTS: more keys of the async run's queue (e.g. "max_depth: 100000000"),
#      CONNS_ASYNC (64), WRK_THREADS (1), BENCH_PORT_BASE (18400), AMQP_URI,
#      JUNCTION_REF (build a commit instead of the working tree).
#      BINARY: a junction binary built already (no build).
# This script's load shape (set before lib.sh, whose defaults differ).
DURATION="${DURATION:-8}"
CONNS="${CONNS:-32}"
source "$(dirname "$0")/lib.sh"

SCENARIOS="${SCENARIOS:-get cache post async}"
ROUNDS="${ROUNDS:-3}"
CONNS_ASYNC="${CONNS_ASYNC:-64}"
WRK_THREADS="${WRK_THREADS:-1}"
AMQP_URI="${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}"
BASE="${BENCH_PORT_BASE:-18400}"
UP=$((BASE + 1)) NGX=$((BASE + 2)) NGC=$((BASE + 3)) HAP=$((BASE + 4)) HAPC=$((BASE + 5))
HF=$((BASE + 6)) JP=$((BASE + 7)) JA=$((BASE + 17)) JQ=$((BASE + 8)) JQA=$((BASE + 18)) DEAD=$((BASE + 9))
WORK="$OUT_DIR/efficiency"
BODY='{"id":42,"name":"widget","price":19.99,"stock":7}'
TICK=$(getconf CLK_TCK)

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool haproxy haproxy
ensure_tool jq jq
ensure_tool curl curl
rm -rf "$WORK" && mkdir -p "$WORK"
machine_info | tee "$WORK/machine.txt"
for p in $UP $NGX $NGC $HAP $HAPC $HF $JP $JA $JQ $JQA $DEAD; do require_free_port "$p"; done
if [ -n "${BINARY:-}" ]; then JUNCTION_BIN="$BINARY"; else build_junction; fi
log "building bench/hyper-floor (release)"
(cd "$BENCH_DIR/hyper-floor" && cargo build --release -q) || die "hyper-floor build failed"
case " $SCENARIOS " in *" async "*)
    log "building bench/rabbit-peer (release)"
    (cd "$BENCH_DIR/rabbit-peer" && cargo build --release -q) || die "rabbit-peer build failed" ;;
esac

# --- servers ----------------------------------------------------------------------
start_json_upstream "$WORK/upstream" "$UP" "$BODY"

write_nginx_conf "$WORK/nginx" 2 <<EOF
    proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=bench:10m max_size=100m;
    upstream origin { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$NGX;
        client_max_body_size 1m;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server {
        listen 127.0.0.1:$NGC;
        location / {
            proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_cache bench; proxy_cache_valid 200 5m;
        }
    }
EOF
start_nginx "$WORK/nginx" "$NGX"
NGX_PID=$NGINX_PID
wait_port "$NGC"

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
    nbthread 2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
cache bench
    total-max-size 64
    max-age 300
frontend plain
    bind 127.0.0.1:$HAP
    default_backend origin
frontend cached
    bind 127.0.0.1:$HAPC
    http-request cache-use bench
    http-response cache-store bench
    default_backend origin
backend origin
    http-response set-header Cache-Control "max-age=300" if { res.hdr_cnt(cache-control) eq 0 }
    server up1 127.0.0.1:$UP
EOF
haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.log" &
HAP_PID=$!
STARTED_PIDS+=("$HAP_PID")
wait_port "$HAP"; wait_port "$HAPC"

"$CARGO_TARGET_DIR/release/hyper-floor" "127.0.0.1:$HF" "http://127.0.0.1:$UP" tpc 2 2>"$WORK/hyper-floor.log" &
HF_PID=$!
STARTED_PIDS+=("$HF_PID")
wait_port "$HF"

# Junction: the default policy stack (no setting turns the breaker, the retry
# budget, the metrics or the dependency graph off), RUST_LOG=warn.
cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$JP
admin: { listen: 127.0.0.1:$JA }
queue: { backend: embedded, path: $WORK/queue-proxy }
limits: { max_body: 1MiB }
upstreams:
  origin: { url: "http://127.0.0.1:$UP" }
routes:
  - { name: cached, match: { method: GET, path: /cached/{id} }, upstream: origin, cache: { ttl: 300s } }
  - { name: proxied, match: { path: "/{*rest}" }, upstream: origin }
EOF
start_junction "$WORK/junction.yaml" "$WORK/junction.log" "$JA"
JP_PID=$JUNCTION_PID

# The async route: subscribers on a closed port (their breakers open, nothing is
# delivered), so only durable accepts run.
cat >"$WORK/junction-async.yaml" <<EOF
listen: 127.0.0.1:$JQ
admin: { listen: 127.0.0.1:$JQA }
queue: { backend: embedded, path: $WORK/queue-async${ASYNC_QUEUE_OPTS:+, $ASYNC_QUEUE_OPTS} }
upstreams:
  s1: { url: "http://127.0.0.1:$DEAD" }
  s2: { url: "http://127.0.0.1:$DEAD" }
  s3: { url: "http://127.0.0.1:$DEAD" }
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
case " $SCENARIOS " in *" async "*)
    start_junction "$WORK/junction-async.yaml" "$WORK/junction-async.log" "$JQA"
    JQ_PID=$JUNCTION_PID ;;
esac
BEAM_PID=$(pgrep -o -f 'beam.smp.*rabbit' || true)

# One closed-loop run against one server; prints "cpu_us_per_req rps p99_ms requests".
# measure LABEL PID URL CONNS [LUA]
measure() {
    local label="$1" pid="$2" url="$3" conns="$4" lua="${5:-$BENCH_DIR/lua/report.lua}" before after out
    before=$(cpu_ticks "$pid")
    out=$(run_wrk "$label" "$DURATION" "$conns" "$WRK_THREADS" "$url" "$lua")
    after=$(cpu_ticks "$pid")
    local ok rps p99 n
    n=$(json_get "$out" requests)
    ok=$((n - $(json_get "$out" non2xx)))
    [ "$ok" -gt 0 ] || die "$label: no successful answer ($out)"
    [ "$(json_get "$out" non2xx)" -eq 0 ] || log "$label: $(json_get "$out" non2xx) answers were not 2xx"
    rps=$(json_get "$out" rps)
    p99=$(json_get "$out" p99_us)
    awk -v t=$((after - before)) -v hz="$TICK" -v n="$ok" -v rps="$rps" -v p99="$p99" \
        'BEGIN {printf "%.2f %.0f %.2f %d\n", t / hz * 1e6 / n, rps, p99 / 1000, n}'
}

# RabbitMQ's CPU per confirmed message: the broker's ticks over one rabbit-peer run
# (no warm-up inside it: the ticks cover exactly the run's messages).
measure_rabbit() {
    local label="$1" before after out rps p99 n
    [ -n "$BEAM_PID" ] || die "no RabbitMQ broker (beam.smp) running"
    before=$(cpu_ticks "$BEAM_PID")
    "$CARGO_TARGET_DIR/release/rabbit-peer" --uri "$AMQP_URI" --publishers "$CONNS_ASYNC" --duration "$DURATION" \
        --warmup 0 --size 207 --queue "junction-efficiency-peer" >"$OUT_DIR/$label.peer.txt" 2>&1 ||
        { cat "$OUT_DIR/$label.peer.txt" >&2; die "rabbit-peer failed"; }
    after=$(cpu_ticks "$BEAM_PID")
    out=$(grep '^PEERJSON ' "$OUT_DIR/$label.peer.txt" | sed 's/^PEERJSON //')
    rps=$(json_get "$out" rps)
    p99=$(json_get "$out" p99_us)
    n=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN {printf "%d", r * d}')
    awk -v t=$((after - before)) -v hz="$TICK" -v n="$n" -v rps="$rps" -v p99="$p99" \
        'BEGIN {printf "%.2f %.0f %.2f %d\n", t / hz * 1e6 / n, rps, p99 / 1000, n}'
}

# Servers per scenario: "name|pid|url" (the async peer is run by measure_rabbit).
servers_of() {
    case "$1" in
        get) printf '%s\n' "junction|$JP_PID|http://127.0.0.1:$JP/products/42" "nginx|$NGX_PID|http://127.0.0.1:$NGX/products/42" \
            "haproxy|$HAP_PID|http://127.0.0.1:$HAP/products/42" "hyper-floor|$HF_PID|http://127.0.0.1:$HF/products/42" ;;
        cache) printf '%s\n' "junction|$JP_PID|http://127.0.0.1:$JP/cached/42" "nginx|$NGX_PID|http://127.0.0.1:$NGC/cached/42" \
            "haproxy|$HAP_PID|http://127.0.0.1:$HAPC/cached/42" ;;
        post) printf '%s\n' "junction|$JP_PID|http://127.0.0.1:$JP/orders" "nginx|$NGX_PID|http://127.0.0.1:$NGX/orders" \
            "haproxy|$HAP_PID|http://127.0.0.1:$HAP/orders" ;;
        async) printf '%s\n' "junction|${JQ_PID:-}|http://127.0.0.1:$JQ/orders" "rabbitmq|$BEAM_PID|-" ;;
        *) die "unknown scenario $1 (get cache post async)" ;;
    esac
}

# Warm every path once (cache keys stored, pools open).
for url in "http://127.0.0.1:$JP/cached/42" "http://127.0.0.1:$NGC/cached/42" "http://127.0.0.1:$HAPC/cached/42"; do
    curl -fsS -o /dev/null "$url"; curl -fsS -o /dev/null "$url"
done

wait_quiet
declare -A BEST
printf 'round\tscenario\tserver\tcpu_us_per_op\trps\tp99_ms\tops\n' >"$WORK/rounds.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        while IFS='|' read -r name pid url; do
            label="$scenario-$name-$round"
            case "$scenario:$name" in
                async:rabbitmq) r=$(measure_rabbit "$label") ;;
                async:*) r=$(measure "$label" "$pid" "$url" "$CONNS_ASYNC" "$BENCH_DIR/lua/post.lua") ;;
                post:*) r=$(measure "$label" "$pid" "$url" "$CONNS" "$BENCH_DIR/lua/post4k.lua") ;;
                *) r=$(measure "$label" "$pid" "$url" "$CONNS") ;;
            esac
            log "round $round $scenario $name: cpu_us/op rps p99_ms ops = $r"
            printf '%s\t%s\t%s\t%s\n' "$round" "$scenario" "$name" "$(tr ' ' '\t' <<<"$r")" >>"$WORK/rounds.tsv"
            cur="${BEST[$scenario:$name]:-}"
            if [ -z "$cur" ] || awk -v a="${r%% *}" -v b="${cur%% *}" 'BEGIN {exit !(a < b)}'; then BEST[$scenario:$name]="$r"; fi
        done < <(servers_of "$scenario")
    done
done

# p99 of one server over every round, the median: one round's tail on these shared
# cores swings far more than its CPU (a best-CPU round's p99 can be any of them).
p99_median() {
    awk -F'\t' -v sc="$1" -v sv="$2" 'NR > 1 && $2 == sc && $3 == sv {print $6}' "$WORK/rounds.tsv" |
        sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
sha=$(git -C "$REPO_DIR" rev-parse --short "${JUNCTION_REF:-HEAD}")
what() {
    case "$1" in
        get) echo "proxied GET (49-byte JSON)" ;; cache) echo "cache hit" ;;
        post) echo "proxied POST, 4 KiB body" ;; async) echo "durable async accept (CPU per accepted event)" ;;
    esac
}
{
    echo "== CPU per operation, best of $ROUNDS interleaved rounds (wrk -t$WRK_THREADS, ${DURATION}s; $CONNS connections, async $CONNS_ASYNC); junction $sha"
    for scenario in $SCENARIOS; do
        echo
        echo "-- $(what "$scenario")"
        printf "%-14s %14s %12s %14s %14s\n" "server" "CPU µs / op" "ops/s" "p99 ms (med)" "CPU vs nginx"
        ref="${BEST[$scenario:nginx]:-${BEST[$scenario:rabbitmq]:-}}"
        while IFS='|' read -r name _ _; do
            read -r cpu rps _ <<<"${BEST[$scenario:$name]}"
            p99=$(p99_median "$scenario" "$name")
            printf "%-14s %14s %12s %14s %14s\n" "$name" "$cpu" "$rps" "$p99" \
                "$(awk -v a="$cpu" -v b="${ref%% *}" 'BEGIN {printf "%.2fx", a / b}')"
        done < <(servers_of "$scenario")
    done
    echo
    echo "(async: the rabbitmq row is the broker's CPU per confirmed persistent message, $CONNS_ASYNC publishers; its 'vs' column is the reference)"
} | tee "$WORK/summary.txt"
{
    echo "| scenario | server | CPU µs / op (best round) | ops/s (that round) | p99 ms (median of rounds) | CPU vs nginx (async: vs RabbitMQ) |"
    echo "|---|---|---|---|---|---|"
    for scenario in $SCENARIOS; do
        ref="${BEST[$scenario:nginx]:-${BEST[$scenario:rabbitmq]:-}}"
        while IFS='|' read -r name _ _; do
            read -r cpu rps _ <<<"${BEST[$scenario:$name]}"
            p99=$(p99_median "$scenario" "$name")
            printf "| %s | %s | %s | %s | %s | %s |\n" "$(what "$scenario")" "$name" "$cpu" "$rps" "$p99" \
                "$(awk -v a="$cpu" -v b="${ref%% *}" 'BEGIN {printf "%.2f×", a / b}')"
        done < <(servers_of "$scenario")
    done
} >"$WORK/summary.md"
log "table: $WORK/summary.txt (markdown: $WORK/summary.md)"
