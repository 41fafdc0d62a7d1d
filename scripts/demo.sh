#!/usr/bin/env bash
# Builds everything and serves the hello-http example on http://127.0.0.1:8080/ (DEMO_ADDR
# overrides the address). Ctrl-C stops it.
source "$(dirname "$0")/common.sh"

setup
build_host
build_guests
say "serving hello-http: try  curl http://${DEMO_ADDR:-127.0.0.1:8080}/"
exec "$WASMBRIDGE_BIN" serve --addr "${DEMO_ADDR:-127.0.0.1:8080}" "$WASMBRIDGE_GUESTS/hello_http.wasm"
