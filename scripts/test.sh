#!/usr/bin/env bash
# Builds everything and runs every test: the host's unit tests and the end-to-end tests, which
# start the real wasmbridge binary and a real Apache httpd with mod_wasm on loopback ports and
# talk to them over HTTP.
source "$(dirname "$0")/common.sh"
# Everything is built once, with the features the test build unifies (see build_host).
export WASMBRIDGE_CARGO_SCOPE=--workspace

setup
build_host
build_apache
build_guests
build_packages
build_python
build_php
install_template_tools
install_test_packages
fetch_php_apps
fetch_python_apps
say "running the tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
(cd "$ROOT" && cargo test --release --locked --workspace "$@") 2>&1 | tee "$log" || status=$?

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
