#!/usr/bin/env bash
# CPU per cache hit (or, with ROUTE=proxied, per proxied request beside nginx
# proxy_pass): two Junction builds and nginx, interleaved rounds.
#
# What it answers: does a change make a cache hit cost more CPU? Raw requests/s
# swings by up to 30 % between runs on a shared 2-core machine; the CPU time a
# server's processes spend (utime + stime from /proc/PID/stat, every thread, nginx
# master + workers) divided by the requests it served is steadier. Each round runs
# BASE (JUNCTION_BASE, default HEAD~1), HEAD (the working tree) and nginx
# proxy_cache one after the other on one warm key; the table keeps the best
# (lowest-CPU) round of each, plus requests/s and p99 of that round.
#
# Upstream: nginx `return 200` with a 49-byte JSON body (as sync-proxy.sh and
# cache.sh). Junction: `cache: { ttl: 300s }` (the upstream sends no freshness, so
# the route TTL applies), memory backend, RUST_LOG=warn. nginx: proxy_cache_valid
# 200 5m, keep-alive upstream pool, worker_processes 2 (Junction runs 2 data threads).
#
# HEAD_EXTRA: config text appended to HEAD's file only (e.g. 'analyze: { enabled: true }'
# with JUNCTION_BASE=HEAD measures what a setting costs: one build serves both).
#
# Env: ROUNDS (3), DURATION (10), CONNS (64), WRK_THREADS (1), JUNCTION_BASE (HEAD~1),
#      BENCH_PORT_BASE (18300), BINARIES (a directory with junction-base and
#      junction-head from an earlier run: no builds). HEAD is the working tree
#      as built (uncommitted edits included).
source "$(dirname "$0")/lib.sh"

BASE_PORT="${BENCH_PORT_BASE:-18300}"
UP_PORT=$((BASE_PORT + 1)) NGC_PORT=$((BASE_PORT + 2))
JB_PORT=$((BASE_PORT + 3)) JB_ADMIN=$((BASE_PORT + 13))
JH_PORT=$((BASE_PORT + 4)) JH_ADMIN=$((BASE_PORT + 14))
ROUNDS="${ROUNDS:-3}"
WRK_THREADS="${WRK_THREADS:-1}"
JUNCTION_BASE="${JUNCTION_BASE:-HEAD~1}"
ROUTE="${ROUTE:-cached}"
case "$ROUTE" in
    cached)
        CACHE_LINE='    cache: { ttl: 300s }' UNIT=hit PEER="nginx proxy_cache"
        NGINX_CACHE="proxy_cache bench; proxy_cache_valid 200 5m; add_header X-Cache-Status \$upstream_cache_status;"
        ;;
    proxied) CACHE_LINE='' UNIT="proxied request" PEER="nginx proxy_pass" NGINX_CACHE='' ;;
    *) die "ROUTE is cached or proxied, not $ROUTE" ;;
esac
WORK="$OUT_DIR/$ROUTE-cpu"
BODY='{"id":42,"name":"widget","price":19.99,"stock":7}'
TICK=$(getconf CLK_TCK)

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool curl curl
rm -rf "$WORK" && mkdir -p "$WORK"
machine_info | tee "$WORK/machine.txt"
for p in $UP_PORT $NGC_PORT $JB_PORT $JB_ADMIN $JH_PORT $JH_ADMIN; do require_free_port "$p"; done

base_sha=$(git -C "$REPO_DIR" rev-parse --short "$JUNCTION_BASE")
head_sha=$(git -C "$REPO_DIR" rev-parse --short HEAD)
if [ -n "${BINARIES:-}" ]; then
    # Both builds of an earlier run (e.g. bench/out/proxied-instructions): no builds.
    cp "$BINARIES/junction-base" "$BINARIES/junction-head" "$WORK/" || die "no builds in $BINARIES"
elif [ "$base_sha" = "$head_sha" ] && git -C "$REPO_DIR" diff --quiet HEAD; then
    # The same tree: one build for both.
    JUNCTION_REF="" build_junction && cp "$JUNCTION_BIN" "$WORK/junction-head"
    cp "$WORK/junction-head" "$WORK/junction-base"
else
    JUNCTION_REF="$base_sha" build_junction && cp "$JUNCTION_BIN" "$WORK/junction-base"
    JUNCTION_REF="" build_junction && cp "$JUNCTION_BIN" "$WORK/junction-head"
fi

start_json_upstream "$WORK/upstream" "$UP_PORT" "$BODY"
write_nginx_conf "$WORK/nginx-cache" 2 <<EOF
    proxy_cache_path $WORK/nginx-cache/cache levels=1:2 keys_zone=bench:10m max_size=100m;
    upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGC_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $NGINX_CACHE
        }
    }
EOF
start_nginx "$WORK/nginx-cache" "$NGC_PORT"
NGC_PID=$NGINX_PID

junction_config() {
    cat <<EOF
listen: 127.0.0.1:$1
admin: { listen: 127.0.0.1:$2 }
upstreams:
  up: { url: "http://127.0.0.1:$UP_PORT", timeout: 2s }
routes:
  - name: cached
    match: { method: GET, path: /products/{id} }
    upstream: up
$CACHE_LINE
EOF
}
junction_config "$JB_PORT" "$JB_ADMIN" >"$WORK/base.yaml"
{ junction_config "$JH_PORT" "$JH_ADMIN"; [ -z "${HEAD_EXTRA:-}" ] || echo "$HEAD_EXTRA"; } >"$WORK/head.yaml"
JUNCTION_BIN="$WORK/junction-base" start_junction "$WORK/base.yaml" "$WORK/base.log" "$JB_ADMIN"
JB_PID=$JUNCTION_PID
JUNCTION_BIN="$WORK/junction-head" start_junction "$WORK/head.yaml" "$WORK/head.log" "$JH_ADMIN"
JH_PID=$JUNCTION_PID

# One measured run: prints "cpu_us_per_req rps p99_ms requests".
measure() {
    local label="$1" pid="$2" url="$3" before after out
    curl -fsS -o /dev/null "$url" && curl -fsS -o /dev/null "$url"   # warm: the key is stored
    before=$(cpu_ticks "$pid")
    out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url")
    after=$(cpu_ticks "$pid")
    echo "$out" >"$WORK/$label.wrk.txt"
    local reqs rps p99
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
    awk -v t=$((after - before)) -v hz="$TICK" -v n="$reqs" -v rps="$rps" -v p99="$p99" \
        'BEGIN {printf "%.2f %.0f %.2f %d\n", t / hz * 1e6 / n, rps, p99, n}'
}

declare -A BEST
for round in $(seq 1 "$ROUNDS"); do
    for target in base head nginx; do
        case $target in
            base) r=$(measure "base-$round" "$JB_PID" "http://127.0.0.1:$JB_PORT/products/1") ;;
            head) r=$(measure "head-$round" "$JH_PID" "http://127.0.0.1:$JH_PORT/products/1") ;;
            nginx) r=$(measure "nginx-$round" "$NGC_PID" "http://127.0.0.1:$NGC_PORT/products/1") ;;
        esac
        log "round $round $target: cpu_us/req rps p99_ms requests = $r"
        echo "$round $target $r" >>"$WORK/rounds.txt"
        cur="${BEST[$target]:-}"
        if [ -z "$cur" ] || awk -v a="${r%% *}" -v b="${cur%% *}" 'BEGIN {exit !(a < b)}'; then BEST[$target]="$r"; fi
    done
done
hits_head=$(curl -fsS "http://127.0.0.1:$JH_ADMIN/metrics" | awk '/^junction_cache_hits_total/ {print $2}')
{
    echo "== CPU per $UNIT, best of $ROUNDS interleaved rounds (wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, one key)"
    printf "%-34s %14s %12s %9s\n" "server" "CPU µs / req" "requests/s" "p99 ms"
    for target in base head nginx; do
        read -r cpu rps p99 _ <<<"${BEST[$target]}"
        case $target in
            base) name="Junction $base_sha (base)" ;;
            head) name="Junction $head_sha (head${HEAD_EXTRA:+, $HEAD_EXTRA})" ;;
            nginx) name="$PEER" ;;
        esac
        printf "%-34s %14s %12s %9s\n" "$name" "$cpu" "$rps" "$p99"
    done
    [ "$ROUTE" = cached ] && echo "head counted $hits_head cache hits (every round's requests after the first were hits)"
    awk -v a="${BEST[head]%% *}" -v b="${BEST[base]%% *}" -v u="$UNIT" 'BEGIN {printf "head / base CPU per %s: %.3f\n", u, a / b}'
} | tee "$WORK/summary.txt"
