#!/usr/bin/env bash
# Throughput and latency under wrk, every peer measured in the same run on the same machine:
# - hello-http: `wasmbridge serve` against `wasmtime serve -S cli` (when a wasmtime 48 binary is
#   at hand);
# - Python hello CGI: `wasmbridge serve` with the CPython snapshot against native `python3` run
#   by Apache's mod_cgid (Debian's apache2, from a generated config on a loopback port).
# Writes the tables to BENCHMARKS.md. This is a benchmark, not a test: it asserts nothing.
#
#   WASMTIME=/path/to/wasmtime        use that wasmtime binary
#   BENCH_BUILD_WASMTIME=1            build wasmtime-cli 48.0.8 into ~/.cache/wasmbridge-tools (slow, once)
#   BENCH_SECONDS=10 BENCH_CONNECTIONS=64 BENCH_CGI_CONNECTIONS=16 BENCH_ROUNDS=2
source "$(dirname "$0")/common.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
CGI_CONNECTIONS=${BENCH_CGI_CONNECTIONS:-16}
ROUNDS=${BENCH_ROUNDS:-2}
TOOLS=${WASMBRIDGE_TOOLS:-$HOME/.cache/wasmbridge-tools}
WASMTIME_VERSION=48.0.8

setup
need_packages wrk:wrk apache2:apache2 /usr/bin/python3:python3
build_host
build_guests
build_python

find_wasmtime() {
    if [ -n "${WASMTIME:-}" ]; then echo "$WASMTIME"; return; fi
    local cached=$TOOLS/wasmtime-$WASMTIME_VERSION/bin/wasmtime
    if [ ! -x "$cached" ] && [ "${BENCH_BUILD_WASMTIME:-0}" = 1 ]; then
        say "building wasmtime-cli $WASMTIME_VERSION (once; cached in $TOOLS)"
        cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --root "$TOOLS/wasmtime-$WASMTIME_VERSION" >&2
    fi
    if [ -x "$cached" ]; then echo "$cached"; return; fi
    if command -v wasmtime >/dev/null && wasmtime --version | grep -q " 48\."; then command -v wasmtime; fi
}
WASMTIME=$(find_wasmtime)

HELLO=$WASMBRIDGE_GUESTS/hello_http.wasm
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# start NAME PORT COMMAND... : starts a server in the background and waits until it answers.
start() {
    local port=$2; shift 2
    "$@" >"$RESULTS_DIR/server-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server on port $port did not start:" >&2; cat "$RESULTS_DIR/server-$port.log" >&2; exit 1
}

# to_ms VALUE: wrk's 1.23ms / 456.78us / 1.2s as milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# measure NAME PORT [CONNECTIONS]: one wrk run; appends "NAME rps p50 p99" to the raw results.
measure() {
    local out
    out=$(wrk -t2 -c"${3:-$CONNECTIONS}" -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:$2/")
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -z "$errors" ] || echo "warning: $1: $errors" >&2
    echo "$1 $rps $p50 $p99" >>"$RESULTS_DIR/raw"
    say "$1: $rps req/s, p50 ${p50} ms, p99 ${p99} ms"
}

RESULTS_DIR=$(mktemp -d)
declare -A LABELS=([wasmbridge]="wasmbridge serve" [wasmtime]="wasmtime serve -S cli"
    [python-wasm]="wasmbridge serve python.wasm hello.py" [python-native]="apache2 mod_cgid, python3 hello.py")
start wasmbridge 18080 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18080 "$HELLO"
if [ -n "$WASMTIME" ]; then
    start wasmtime 18081 "$WASMTIME" serve --addr 127.0.0.1:18081 -S cli "$HELLO"
else
    say "no wasmtime $WASMTIME_VERSION binary: measuring wasmbridge alone (BENCH_BUILD_WASMTIME=1 builds one)"
fi

# Warm up both, then alternate rounds so that neither always runs on a cooler machine.
for port in 18080 18081; do
    [ "$port" = 18081 ] && [ -z "$WASMTIME" ] && continue
    wrk -t2 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
done
for _ in $(seq "$ROUNDS"); do
    measure wasmbridge 18080
    [ -z "$WASMTIME" ] || measure wasmtime 18081
done

# Python hello CGI: the snapshot under wasmbridge against python3 under Apache's mod_cgid.
PY_APP=$ROOT/guests/fixtures/python
PY_DIST=$ROOT/guests/python/dist
start python-wasm 18090 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18090 \
    --dir "$PY_DIST/lib::/usr/local/lib" --dir "$PY_APP::/app" "$PY_DIST/python.wasm" /app/hello.py

apache=$(mktemp -d)
chmod 755 "$apache"
mkdir -p "$apache/cgi-bin"
{ echo '#!/usr/bin/python3'; cat "$PY_APP/hello.py"; } >"$apache/cgi-bin/hello.py"
chmod 755 "$apache/cgi-bin/hello.py"
modules=/usr/lib/apache2/modules
cat >"$apache/httpd.conf" <<EOF
ServerRoot $apache
ServerName 127.0.0.1
PidFile $apache/httpd.pid
DefaultRuntimeDir $apache
ErrorLog $apache/error.log
LogLevel warn
Listen 127.0.0.1:18091
$([ "$(id -u)" = 0 ] && printf 'User www-data\nGroup www-data\n')
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule alias_module $modules/mod_alias.so
LoadModule cgid_module $modules/mod_cgid.so
ScriptSock $apache/cgid.sock
ScriptAlias / $apache/cgi-bin/hello.py
<Directory $apache/cgi-bin>
    Require all granted
</Directory>
EOF
/usr/sbin/apache2 -f "$apache/httpd.conf" -k start
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
      /usr/sbin/apache2 -f "$apache/httpd.conf" -k stop 2>/dev/null || true; sleep 1; rm -rf "$apache"' EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:18091/ >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs http://127.0.0.1:18091/ | grep -q "Hello from Python" || { cat "$apache/error.log" >&2; exit 1; }
for port in 18090 18091; do
    wrk -t2 -c"$CGI_CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
done
for _ in $(seq "$ROUNDS"); do
    measure python-wasm 18090 "$CGI_CONNECTIONS"
    measure python-native 18091 "$CGI_CONNECTIONS"
done

# Averages per server, and the ratio against wasmtime serve.
table=$(awk '
    { n[$1] += 1; rps[$1] += $2; p50[$1] += $3; p99[$1] += $4 }
    END { for (k in n) printf "%s %.0f %.2f %.2f\n", k, rps[k] / n[k], p50[k] / n[k], p99[k] / n[k] }
' "$RESULTS_DIR/raw" | sort)
base=$(awk '$1 == "wasmtime" { print $2 }' <<<"$table")
cgi_base=$(awk '$1 == "python-native" { print $2 }' <<<"$table")

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d). Numbers from different machines do not compare;"
    echo "ratios measured in the same run do."
    echo
    echo "- Machine: $cpu, $(nproc) cores, $mem, $(uname -sr)"
    echo "- Load: \`wrk -t2 -c$CONNECTIONS -d${SECONDS_PER_RUN}s --latency\` from the same machine, $ROUNDS rounds each, alternating; averages shown"
    echo "- App: \`guests/hello-http\` (a wasi:http component answering 24 bytes), a fresh instance per request"
    [ -z "$WASMTIME" ] || echo "- Peer: $("$WASMTIME" --version) as \`wasmtime serve -S cli\`"
    echo
    echo "| server | requests/s | p50 latency (ms) | p99 latency (ms) | throughput vs wasmtime serve |"
    echo "|---|---:|---:|---:|---:|"
    while read -r name rps p50 p99; do
        label=${LABELS[$name]}
        ratio="–"
        [ -z "$base" ] || ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f×", a / b }')
        echo "| \`$label\` | $rps | $p50 | $p99 | $ratio |"
    done <<<"$(grep -v '^python' <<<"$table")"
    echo
    echo "## Python hello CGI"
    echo
    echo "- Load: \`wrk -t2 -c$CGI_CONNECTIONS -d${SECONDS_PER_RUN}s --latency\`, $ROUNDS rounds each, alternating"
    echo "- App: \`guests/fixtures/python/hello.py\` (parses the query with \`cgi.FieldStorage\`, prints 5 lines)"
    echo "- wasmbridge: \`guests/python/dist/python.wasm\` (CPython 3.11 for WASI, a wizer snapshot) in CGI mode"
    echo "- Peer: $(/usr/sbin/apache2 -v | awk -F': ' '/version/ { print $2 }'), mpm_event and mod_cgid, running $(/usr/bin/python3 --version) natively"
    echo
    echo "| server | requests/s | p50 latency (ms) | p99 latency (ms) | throughput vs native CGI |"
    echo "|---|---:|---:|---:|---:|"
    while read -r name rps p50 p99; do
        label=${LABELS[$name]}
        ratio=$(awk -v a="$rps" -v b="$cgi_base" 'BEGIN { printf "%.2f×", a / b }')
        echo "| \`$label\` | $rps | $p50 | $p99 | $ratio |"
    done <<<"$(grep '^python' <<<"$table" | sort -r)"
} >"$ROOT/BENCHMARKS.md"
cat "$ROOT/BENCHMARKS.md"
rm -rf "$RESULTS_DIR"
