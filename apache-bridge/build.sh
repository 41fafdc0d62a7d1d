#!/usr/bin/env bash
# Builds mod_wasm.so: the Rust half as a static library, linked with mod_wasm.c by apxs into
# one shared object that exports only `wasm_module` (no runtime library beside it, no
# LD_LIBRARY_PATH). The result is $CARGO_TARGET_DIR/mod_wasm/mod_wasm.so (default target/).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
OUT=$TARGET_DIR/mod_wasm

# WASMBRIDGE_CARGO_SCOPE=--workspace builds with the features the whole workspace unifies,
# as the test command does, so that the host is not compiled a second time for the tests.
# shellcheck disable=SC2086
(cd "$HERE/.." && cargo build --release --locked ${WASMBRIDGE_CARGO_SCOPE:--p wasmbridge-apache})

# apxs (libtool) writes its objects beside the source: build in a directory of our own.
mkdir -p "$OUT"
cp "$HERE/mod_wasm.c" "$HERE/mod_wasm_core.h" "$HERE/exports.map" "$OUT/"
cd "$OUT"
apxs -c -o mod_wasm.so -Wc,-Wall -Wc,-Werror \
    -Wl,-Wl,--version-script="$OUT/exports.map" \
    mod_wasm.c "$TARGET_DIR/release/libwasmbridge_apache.a" -lpthread -ldl -lm >build.log 2>&1 ||
    { cat build.log >&2; exit 1; }
# Replaced by rename, never rewritten in place: a running Apache has the old one mapped.
cp .libs/mod_wasm.so mod_wasm.so.new && mv -f mod_wasm.so.new mod_wasm.so
echo "$OUT/mod_wasm.so"
