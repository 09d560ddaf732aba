# Shared helpers for the benchmark scripts in bench/. Sourced, not run.
#
# Every script: prints the machine it ran on, installs missing tools from
# Debian packages, builds Junction in release mode, starts its servers on
# fixed loopback ports, and stops exactly the processes it started (by PID)
# on exit. Results go to bench/out/ (gitignored).

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
OUT_DIR="${OUT_DIR:-$BENCH_DIR/out}"
# Own target dir, so a benchmark build never waits on (or invalidates) a developer's.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    if [ -d /work ]; then CARGO_TARGET_DIR=/work/target-bench; else CARGO_TARGET_DIR="$REPO_DIR/target/bench"; fi
fi
export CARGO_TARGET_DIR
JUNCTION_BIN="$CARGO_TARGET_DIR/release/junction"
# Load shape (override by environment).
THREADS="${THREADS:-2}"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
mkdir -p "$OUT_DIR"

# PIDs this script started; stopped (and only these) on exit.
STARTED_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}
trap cleanup EXIT INT TERM

# Stops one process this script started.
stop_pid() {
    local pid="$1" keep=() p
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]+"${keep[@]}"}")
}

# Installs Debian packages for any missing command: ensure_tool CMD PACKAGE...
ensure_tool() {
    local cmd="$1"; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ -x "/usr/sbin/$cmd" ] && return 0
    log "installing $* (for $cmd)"
    if [ ! -f "$OUT_DIR/.apt-updated" ]; then
        apt-get update -q >/dev/null && touch "$OUT_DIR/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

# oha (open-loop, rate-limited load) is not a Debian package: built with cargo once.
ensure_oha() {
    command -v oha >/dev/null 2>&1 && return 0
    log "installing oha with cargo install (a few minutes, once)"
    cargo install -q --locked oha || die "cargo install oha failed"
}

# Open-loop run at a fixed request rate (latency under load without saturating the
# host). run_oha LABEL SECONDS CONNS RATE URL -> prints
# '{"rps":..,"p50_us":..,"p99_us":..,"p999_us":..,"non2xx":..,"errors":..}'
run_oha() {
    local label="$1" dur="$2" conns="$3" rate="$4" url="$5"
    oha -z "${dur}s" -c "$conns" -q "$rate" --no-tui --output-format json "$url" >"$OUT_DIR/$label.oha.json" 2>"$OUT_DIR/$label.oha.err" ||
        { cat "$OUT_DIR/$label.oha.err" >&2; die "oha failed ($label)"; }
    jq -c '{rps: .summary.requestsPerSec, p50_us: ((.latencyPercentiles.p50 // 0) * 1e6 | floor),
            p99_us: ((.latencyPercentiles.p99 // 0) * 1e6 | floor), p999_us: ((.latencyPercentiles["p99.9"] // 0) * 1e6 | floor),
            non2xx: ([.statusCodeDistribution | to_entries[] | select(.key | startswith("2") | not) | .value] | add // 0),
            errors: ([.errorDistribution | to_entries[] | .value] | add // 0)}' "$OUT_DIR/$label.oha.json"
}

# "p50_ms p99_ms failures ok" of an oha JSON summary: failures are answers other
# than OK_STATUS and errors, but not the requests oha itself abandons when its
# duration ends ("aborted due to deadline"). oha_summary FILE OK_STATUS
oha_summary() {
    jq -r --arg ok "$2" '[((.latencyPercentiles.p50 // 0) * 1000 * 100 | round / 100),
        ((.latencyPercentiles.p99 // 0) * 1000 * 100 | round / 100),
        (([.statusCodeDistribution | to_entries[] | select(.key != $ok) | .value] | add // 0)
         + ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)),
        ([.statusCodeDistribution | to_entries[] | select(.key == $ok) | .value] | add // 0)]
        | map(tostring) | join(" ")' "$1"
}

# Prints what the numbers were measured on.
machine_info() {
    echo "== machine =="
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cores:     $(nproc) (online), $(grep -c ^processor /proc/cpuinfo) in /proc/cpuinfo"
    echo "memory:    $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel:    $(uname -srm)"
    echo "os:        $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "rustc:     $(rustc -V)"
    echo "cargo:     $(cargo -V)"
    command -v wrk >/dev/null && echo "wrk:       $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    command -v nginx >/dev/null && echo "nginx:     $(nginx -v 2>&1 | sed 's/.*: //')"
    command -v haproxy >/dev/null && echo "haproxy:   $(haproxy -v | head -1 | awk '{print $3}')"
    command -v rabbitmqctl >/dev/null && echo "rabbitmq:  $(rabbitmqctl version 2>/dev/null || echo '?')"
    if [ -n "${JUNCTION_REF:-}" ]; then
        echo "junction:  commit $(git -C "$REPO_DIR" rev-parse --short "$JUNCTION_REF") (JUNCTION_REF=$JUNCTION_REF, built from git archive)"
    else
        echo "junction:  working tree at $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')$([ -n "$(git -C "$REPO_DIR" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' + uncommitted changes' || true)"
    fi
    echo "disk (out): $(df -T "$OUT_DIR" | awk 'NR==2 {print $2, $1}')"
    echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg)  (other work on this machine skews results)"
    echo "caveat:    load generator and servers share the same $(nproc) cores"
    echo
}

# Percent of CPU busy over the whole machine during the next second.
cpu_busy_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" -v q1="${a[6]}" -v sq1="${a[7]}" -v st1="${a[8]}" \
        -v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" -v q2="${b[6]}" -v sq2="${b[7]}" -v st2="${b[8]}" 'BEGIN {
        busy = (u2 - u1) + (n2 - n1) + (s2 - s1) + (q2 - q1) + (sq2 - sq1) + (st2 - st1)
        idle = (i2 - i1) + (w2 - w1)
        printf "%d\n", ((busy + idle) > 0 ? 100 * busy / (busy + idle) : 0) }'
}

# Waits (at most QUIET_WAIT s, default 300) until other work leaves the CPUs mostly idle
# (< QUIET_BUSY %, default 25), so a benchmark is not measuring someone else's build.
wait_quiet() {
    local limit="${QUIET_WAIT:-300}" max="${QUIET_BUSY:-25}" t=0 busy
    while :; do
        busy=$(cpu_busy_pct)
        if [ "$busy" -lt "$max" ]; then log "machine quiet: ${busy}% busy before start"; return 0; fi
        if [ "$t" -ge "$limit" ]; then log "machine still ${busy}% busy after ${limit}s; measuring anyway (numbers will be low)"; return 0; fi
        sleep 4; t=$((t + 5))
    done
}

# Builds the release binary (no-op when up to date). With JUNCTION_REF set (e.g. HEAD),
# builds that commit from a `git archive` snapshot instead of the working tree, so a
# tree with edits in progress can still be measured at a known commit.
build_junction() {
    local src="$REPO_DIR"
    if [ -n "${JUNCTION_REF:-}" ]; then
        local sha
        sha=$(git -C "$REPO_DIR" rev-parse --short "$JUNCTION_REF") || die "unknown JUNCTION_REF $JUNCTION_REF"
        src="$BENCH_DIR/out/src-$sha"
        if [ ! -f "$src/Cargo.toml" ]; then
            mkdir -p "$src"
            git -C "$REPO_DIR" archive "$sha" | tar -x -C "$src"
        fi
    fi
    # The base and head trees hold workspace crates of the same names and
    # versions, and cargo names their artifacts without the source path: with
    # one target directory, the tree built second could reuse the first one's
    # artifacts as "fresh". Newer source times make cargo rebuild them.
    find "$src/crates" -name '*.rs' -exec touch {} +
    log "building junction (release) from $src into $CARGO_TARGET_DIR"
    (cd "$src" && cargo build --release -q -p junction) || die "build failed"
    [ -x "$JUNCTION_BIN" ] || die "no binary at $JUNCTION_BIN"
}

# Waits until a TCP port accepts connections (bounded).
wait_port() {
    local port="$1"
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listening on 127.0.0.1:$port"
}

# Fails when a port is already taken (another run, or another service).
require_free_port() {
    local port="$1"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use; stop whatever holds it or set BENCH_PORT_BASE"
    fi
}

# RSS of a process in KiB (VmRSS), and its peak (VmHWM).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }

# Starts Junction with a config file; sets JUNCTION_PID. start_junction CONFIG LOGFILE ADMIN_PORT
start_junction() {
    local config="$1" logfile="$2" admin_port="$3"
    "$JUNCTION_BIN" check --config "$config" >/dev/null || die "bad config $config"
    RUST_LOG="${JUNCTION_RUST_LOG:-warn}" "$JUNCTION_BIN" serve --config "$config" 2>"$logfile" &
    JUNCTION_PID=$!
    STARTED_PIDS+=("$JUNCTION_PID")
    # READY_WAIT seconds at most (default 10; a restart on a deep backlog takes longer).
    for _ in $(seq 1 $(( ${READY_WAIT:-10} * 20 ))); do
        if curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$JUNCTION_PID" 2>/dev/null || { cat "$logfile" >&2; die "junction exited"; }
        sleep 0.05
    done
    die "junction not ready on admin port $admin_port"
}

# Writes DIR/nginx.conf: the settings every bench nginx shares (no access log,
# long keep-alive, temp paths inside DIR), with the http-block body read from
# stdin (servers, upstreams). write_nginx_conf DIR WORKERS <<EOF ... EOF
write_nginx_conf() {
    local dir="$1" workers="$2"
    mkdir -p "$dir"
    {
        cat <<CONF
worker_processes $workers;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
CONF
        cat
        echo "}"
    } >"$dir/nginx.conf"
}

# Runs nginx in the foreground from a config file; sets NGINX_PID. start_nginx DIR PORT
start_nginx() {
    local dir="$1" port="$2"
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod 777 "$dir/tmp"
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/logs/stderr" &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
    wait_port "$port"
}

# Pins every process the script started (and their children) to CPUs "$1",
# e.g. pin_all 0 for the 1-connection runs. pin_all CPULIST
pin_all() {
    local pid c
    for pid in "${STARTED_PIDS[@]}"; do
        taskset -a -p -c "$1" "$pid" >/dev/null
        for c in $(pgrep -P "$pid" || true); do taskset -a -p -c "$1" "$c" >/dev/null; done
    done
}

# The upstream of the proxy benchmarks: nginx answering `return 200` with a JSON body
# on every path. start_json_upstream DIR PORT BODY
start_json_upstream() {
    local dir="$1" port="$2" body="$3"
    mkdir -p "$dir"
    write_nginx_conf "$dir" auto <<EOF
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$port;
        default_type application/json;
        location / { return 200 '$body'; }
    }
EOF
    start_nginx "$dir" "$port"
}

# CPU ticks (utime + stime, every thread) of a process and its children, e.g.
# nginx's master and workers: divide by CLK_TCK for seconds. cpu_ticks PID
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

# Sums the samples of one metric family whose labels contain a fragment.
# metric_sum ADMIN_PORT NAME [LABEL_FRAGMENT]
metric_sum() {
    local port="$1" name="$2" frag="${3:-}"
    curl -fsS "http://127.0.0.1:$port/metrics" |
        awk -v n="$name" -v f="$frag" '
            index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") &&
            (f == "" || index($0, f) > 0) { s += $NF }
            END { printf "%d\n", s }'
}

# Runs wrk and prints its one-line JSON summary (from lua/report.lua or lua/post.lua).
# run_wrk LABEL DURATION CONNS THREADS URL [LUA] -> also saves raw output to $OUT_DIR/LABEL.wrk.txt
run_wrk() {
    local label="$1" dur="$2" conns="$3" threads="$4" url="$5" lua="${6:-$BENCH_DIR/lua/report.lua}"
    ${WRK_CMD:-wrk} -t"$threads" -c"$conns" -d"${dur}s" --timeout 5s --latency -s "$lua" "$url" >"$OUT_DIR/$label.wrk.txt" 2>&1 ||
        { cat "$OUT_DIR/$label.wrk.txt" >&2; die "wrk failed ($label)"; }
    grep '^WRKJSON ' "$OUT_DIR/$label.wrk.txt" | sed 's/^WRKJSON //'
}

# Reads a field of a flat JSON object: json_get '{"a":1}' a
json_get() { printf '%s' "$1" | jq -r ".$2"; }
