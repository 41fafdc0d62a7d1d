#!/usr/bin/env bash
# Installs mod_wasm into Debian's apache2: the module where `apxs -q LIBEXECDIR` says, and
# wasm.load / wasm.conf in mods-available for `a2enmod wasm`. Builds it first if needed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
module=${WASMBRIDGE_MOD_WASM:-${CARGO_TARGET_DIR:-$HERE/../target}/mod_wasm/mod_wasm.so}
[ -f "$module" ] || module=$("$HERE/build.sh" | tail -n 1)

libexec=$(apxs -q LIBEXECDIR)
install -m 644 "$module" "$libexec/mod_wasm.so.new" && mv -f "$libexec/mod_wasm.so.new" "$libexec/mod_wasm.so"
sed "s|/usr/lib/apache2/modules|$libexec|" "$HERE/debian/wasm.load" >/etc/apache2/mods-available/wasm.load
install -m 644 "$HERE/debian/wasm.conf" /etc/apache2/mods-available/wasm.conf
echo "installed $libexec/mod_wasm.so; enable it with: a2enmod wasm && systemctl reload apache2"
