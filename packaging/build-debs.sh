#!/usr/bin/env bash
# Builds the Debian packages from what the build made, with Debian's own tools (dpkg-deb,
# dpkg-shlibdeps for the dependencies, help2man for the man page):
#   wasmbridge           /usr/bin/wasmbridge, a systemd unit serving /etc/wasmbridge/apps.toml,
#                        the man page, and a hello app the default manifest serves
#   libapache2-mod-wasm  mod_wasm.so, with wasm.load and wasm.conf in mods-available
# Usage: build-debs.sh WASMBRIDGE_BINARY MOD_WASM_SO HELLO_WASM OUT_DIR; prints the .deb paths.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/..
binary=$1 module=$2 hello=$3 out=$4
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# dpkg-shlibdeps wants a source package's layout around it.
mkdir -p "$work/src/debian"
printf 'Source: wasmbridge\n\nPackage: wasmbridge\nArchitecture: any\n' >"$work/src/debian/control"
shlibs() { (cd "$work/src" && dpkg-shlibdeps -O "$1" 2>/dev/null | sed -n 's/^shlibs:Depends=//p'); }

# control PACKAGE DEPENDS DESCRIPTION... > DEBIAN/control
control() {
    local package=$1 depends=$2 size
    shift 2
    size=$(du -sk --exclude=DEBIAN "$work/$package" | cut -f1)
    cat <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: wasmbridge developers <wasmbridge@localhost>
Installed-Size: $size
Depends: $depends
Section: httpd
Priority: optional
Homepage: https://github.com/wasmbridge/wasmbridge
Description: $1
$(shift; printf ' %s\n' "$@")
CONTROL
}

# wasmbridge
pkg=$work/wasmbridge
install -D -m 755 "$binary" "$pkg/usr/bin/wasmbridge"
strip --strip-unneeded "$pkg/usr/bin/wasmbridge" 2>/dev/null || true
install -D -m 644 "$HERE/wasmbridge/wasmbridge.service" "$pkg/lib/systemd/system/wasmbridge.service"
install -D -m 644 "$HERE/wasmbridge/apps.toml" "$pkg/etc/wasmbridge/apps.toml"
install -D -m 644 "$HERE/wasmbridge/default" "$pkg/etc/default/wasmbridge"
install -D -m 644 "$hello" "$pkg/usr/share/wasmbridge/examples/hello.wasm"
install -D -m 644 "$ROOT/README.md" "$pkg/usr/share/doc/wasmbridge/README.md"
install -D -m 644 "$ROOT/SECURITY.md" "$pkg/usr/share/doc/wasmbridge/SECURITY.md"
mkdir -p "$pkg/usr/share/man/man1"
help2man --no-info --name "a WebAssembly host for web servers" --version-string "$version" \
    --include <(printf '[SEE ALSO]\nwasmbridge serve --help, wasmbridge wrap --help, /usr/share/doc/wasmbridge/README.md\n') \
    "$pkg/usr/bin/wasmbridge" | gzip -9n >"$pkg/usr/share/man/man1/wasmbridge.1.gz"
# `serve` has most of the options: its own page.
help2man --no-info --name "serve WebAssembly apps over HTTP" --version-string "$version" \
    "$pkg/usr/bin/wasmbridge serve" 2>/dev/null | gzip -9n >"$pkg/usr/share/man/man1/wasmbridge-serve.1.gz" || true
mkdir -p "$pkg/DEBIAN"
install -m 755 "$HERE"/wasmbridge/{postinst,prerm,postrm} "$pkg/DEBIAN/"
printf '/etc/wasmbridge/apps.toml\n/etc/default/wasmbridge\n' >"$pkg/DEBIAN/conffiles"
control wasmbridge "$(shlibs "$pkg/usr/bin/wasmbridge")" \
    "WebAssembly host for web servers: wasi:http components and CGI programs" \
    "wasmbridge serves wasi:http components (WASI 0.2 and 0.3) and CGI programs built for" \
    "WASI (Python, PHP) over HTTP/1.1, HTTP/2 and HTTPS, each request in a sandbox with its" \
    "own memory, time and fuel limits. One manifest serves many apps (Spin manifests too)." \
    >"$pkg/DEBIAN/control"
dpkg-deb --build --root-owner-group "$pkg" "$out/wasmbridge_${version}_$arch.deb" >/dev/null

# libapache2-mod-wasm
pkg=$work/libapache2-mod-wasm
libexec=/usr/lib/apache2/modules
install -D -m 644 "$module" "$pkg$libexec/mod_wasm.so"
strip --strip-unneeded "$pkg$libexec/mod_wasm.so" 2>/dev/null || true
install -D -m 644 "$ROOT/apache-bridge/debian/wasm.load" "$pkg/etc/apache2/mods-available/wasm.load"
install -D -m 644 "$ROOT/apache-bridge/debian/wasm.conf" "$pkg/etc/apache2/mods-available/wasm.conf"
install -D -m 644 "$ROOT/README.md" "$pkg/usr/share/doc/libapache2-mod-wasm/README.md"
mkdir -p "$pkg/DEBIAN"
install -m 755 "$HERE"/libapache2-mod-wasm/{postinst,prerm,postrm} "$pkg/DEBIAN/"
printf '/etc/apache2/mods-available/wasm.load\n/etc/apache2/mods-available/wasm.conf\n' >"$pkg/DEBIAN/conffiles"
# The module API of Debian's apache2-bin, as Debian's module packages depend on it.
api=$(dpkg-query -W -f='${Provides}' apache2-bin | grep -o 'apache2-api-[0-9]*' | head -n 1)
control libapache2-mod-wasm "$api, $(shlibs "$pkg$libexec/mod_wasm.so")" \
    "WebAssembly apps in Apache httpd (mod_wasm)" \
    "mod_wasm serves wasi:http components and CGI programs built for WASI (Python, PHP)" \
    "from Apache, each request sandboxed and metered by the wasmbridge host. It reads" \
    "VMware Wasm Labs' mod_wasm configurations unchanged." \
    >"$pkg/DEBIAN/control"
dpkg-deb --build --root-owner-group "$pkg" "$out/libapache2-mod-wasm_${version}_$arch.deb" >/dev/null

echo "$out/wasmbridge_${version}_$arch.deb"
echo "$out/libapache2-mod-wasm_${version}_$arch.deb"
