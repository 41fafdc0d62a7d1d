#!/usr/bin/env bash
# Builds everything and serves the example apps on loopback, one `wasmbridge serve` each:
#   http://127.0.0.1:8080/                 hello-http, a wasi:http component (Rust)
#   http://127.0.0.1:8081/?file=hello.py   PrettyFy, a Python CGI app on CPython for WASI
#   http://127.0.0.1:8082/                 cgi-hello, a Rust CGI program (wasm32-wasip1)
# DEMO_HOST overrides the address (default 127.0.0.1). Ctrl-C stops them all.
source "$(dirname "$0")/common.sh"

setup
build_host
build_guests
build_python

HOST=${DEMO_HOST:-127.0.0.1}
PY=$ROOT/guests/python
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
serve() {
    local port=$1; shift
    "$WASMBRIDGE_BIN" serve --addr "$HOST:$port" "$@" &
    pids+=($!)
}
serve 8080 "$WASMBRIDGE_GUESTS/hello_http.wasm"
serve 8081 --dir "$PY/dist/lib::/usr/local/lib" --dir "$PY/apps/prettyfy::/app" \
    "$PY/dist/python.wasm" /app/prettyfy.py
serve 8082 "$TARGET_DIR/wasm32-wasip1/release/cgi-hello.wasm"

say "serving, Ctrl-C stops:
    curl http://$HOST:8080/
    curl 'http://$HOST:8081/?file=hello.py'
    curl 'http://$HOST:8081/?file=../../../../etc/passwd'   # the traversal attack: an error page
    curl http://$HOST:8082/"
wait -n "${pids[@]}"
