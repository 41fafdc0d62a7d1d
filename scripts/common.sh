# Shared by demo.sh, test.sh and bench.sh: installs what is missing and builds.
# Source it; do not run it.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One target directory for the host and the guests. CARGO_TARGET_DIR (e.g. a cache outside
# the clone) is honoured; without it, everything stays in the checkout.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR
WASMBRIDGE_BIN=$TARGET_DIR/release/wasmbridge
WASMBRIDGE_GUESTS=$TARGET_DIR/wasm32-wasip2/release
WASMBRIDGE_MOD_WASM=$TARGET_DIR/mod_wasm/mod_wasm.so
export WASMBRIDGE_BIN WASMBRIDGE_GUESTS WASMBRIDGE_MOD_WASM

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages, installed only when a command they provide is missing.
# Usage: need_packages COMMAND:PACKAGE ...
need_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

setup() {
    need_packages cc:gcc curl:curl
    if ! command -v cargo >/dev/null 2>&1 || ! command -v rustup >/dev/null 2>&1; then
        echo "error: Rust (cargo and rustup) is required; see https://rustup.rs" >&2
        exit 1
    fi
    local installed
    installed=$(rustup target list --installed)
    for target in wasm32-wasip2 wasm32-wasip1 wasm32-unknown-unknown; do
        if ! grep -qx "$target" <<<"$installed"; then
            say "adding the Rust target $target"
            rustup target add "$target"
        fi
    done
}

# What the host is built as: the `wasmbridge` package alone, or (WASMBRIDGE_CARGO_SCOPE set to
# --workspace, as the test command sets it) every member at once. Cargo unifies features over
# the packages it builds, and the tests' HTTP client turns on more of hyper-util than the host
# alone: built one way and tested the other, the host and mod_wasm would compile twice.
build_host() {
    say "building wasmbridge"
    # shellcheck disable=SC2086
    (cd "$ROOT" && cargo build --release --locked ${WASMBRIDGE_CARGO_SCOPE:--p wasmbridge})
}

build_apache() {
    need_packages /usr/sbin/apache2:apache2 apxs:apache2-dev openssl:openssl
    say "building mod_wasm.so (apache-bridge)"
    "$ROOT/apache-bridge/build.sh" >/dev/null
}

# What the tests compare with or read: Debian's own php-cgi and the extension packages of what
# php-cgi.wasm builds, and a font for gd's text.
install_test_packages() {
    # shellcheck source=../guests/debian.sh
    source "$ROOT/guests/debian.sh"
    need_debian_packages php8.2-cgi php8.2-bcmath php8.2-gd php8.2-intl php8.2-mbstring php8.2-sqlite3 \
        php8.2-xml fonts-dejavu-core
}

# Real applications from Debian's archive, test data for tests/tests/php_apps.rs and
# wsgi_apps.rs: the packages of each app and what it depends on.
PHP_APPS=(
    dokuwiki libphp-simplepie php-geshi php-phpseclib php-random-compat libjs-jquery
    libjs-jquery-cookie libjs-jquery-ui
    phpliteadmin libjs-codemirror
    php-slim php-pimple php-psr-http-message php-nikic-fast-route php-psr-container
    mediawiki mediawiki-classes
)
PYTHON_APPS=(
    python3-flask python3-werkzeug python3-jinja2 python3-markupsafe python3-itsdangerous
    python3-click python3-django python3-asgiref python3-sqlparse python3-tz
)
fetch_php_apps() { WASMBRIDGE_PHP_APPS=$(debian_tree "${PHP_APPS[@]}"); export WASMBRIDGE_PHP_APPS; }
fetch_python_apps() { WASMBRIDGE_PYTHON_APPS=$(debian_tree "${PYTHON_APPS[@]}"); export WASMBRIDGE_PYTHON_APPS; }

# debian_tree PACKAGE...: the packages downloaded and unpacked once into one tree laid out as
# Debian installs it, with absolute symlinks made relative so that the tree stands on its own;
# prints the tree's path.
debian_tree() {
    local cache=$HOME/.cache/wasmbridge-apps key root link target
    key=$(printf '%s\n' "$@" | sha256sum | cut -c1-12)
    root=$cache/root-$key
    if [ ! -f "$root/.complete" ]; then
        say "downloading $1 and the rest from Debian's archive (test data)"
        rm -rf "$cache/debs-$key" "$root" && mkdir -p "$cache/debs-$key" "$root"
        (cd "$cache/debs-$key" && { apt-get download -qq "$@" 2>/dev/null ||
            { as_root apt-get update -qq && apt-get download -qq "$@"; }; }) >&2
        for deb in "$cache/debs-$key"/*.deb; do dpkg -x "$deb" "$root"; done
        find "$root" -type l | while read -r link; do
            target=$(readlink "$link")
            case $target in
            /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$root$target")" "$link" ;;
            esac
        done
        # Links to what a package's install script would have made (e.g. dokuwiki's .htaccess).
        find "$root" -xtype l -delete
        rm -rf "$cache/debs-$key"
        touch "$root/.complete"
    fi
    echo "$root"
}

build_python() {
    say "building CPython for WASI (guests/python; skipped when dist/ matches the recipe)"
    "$ROOT/guests/python/build.sh"
}

build_php() {
    say "building php-cgi for WASI (guests/php; skipped when dist/ matches the recipe)"
    "$ROOT/guests/php/build.sh"
}

# Tools the templates build with, from the registries, pinned; each in a directory of its own.
TOOLS=${WASMBRIDGE_TOOLS:-$HOME/.cache/wasmbridge-tools}
COMPONENTIZE_PY_VERSION=0.25.1
install_template_tools() {
    local venv=$TOOLS/componentize-py-$COMPONENTIZE_PY_VERSION
    if [ ! -x "$venv/bin/componentize-py" ]; then
        say "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI), for the python-http template"
        dpkg -s python3-venv >/dev/null 2>&1 || need_packages no-such-command:python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    export WASMBRIDGE_COMPONENTIZE_PY=$venv/bin/componentize-py

    # The js-http template's own package.json and lock file, installed once per lock file.
    local template=$ROOT/guests/templates/js-http lock
    lock=$(sha256sum "$template/package-lock.json" | cut -c1-12)
    local js=$TOOLS/js-http-$lock
    if [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
        say "installing componentize-js (npm, as guests/templates/js-http pins it), for the js-http template"
        need_packages node:nodejs npm:npm
        rm -rf "$js"
        mkdir -p "$js"
        sed 's/{{name}}/js-http-tools/' "$template/package.json" >"$js/package.json"
        sed 's/{{name}}/js-http-tools/' "$template/package-lock.json" >"$js/package-lock.json"
        (cd "$js" && npm install --no-audit --no-fund --loglevel=error)
    fi
    export WASMBRIDGE_JS_NODE_MODULES=$js/node_modules
}

# The Debian packages (packaging/), from the binary, mod_wasm.so and the hello guest.
build_packages() {
    need_packages help2man:help2man dpkg-shlibdeps:dpkg-dev
    say "building the Debian packages (wasmbridge, libapache2-mod-wasm)"
    WASMBRIDGE_DEBS=$TARGET_DIR/debian
    rm -rf "$WASMBRIDGE_DEBS"
    "$ROOT/packaging/build-debs.sh" "$WASMBRIDGE_BIN" "$WASMBRIDGE_MOD_WASM" \
        "$WASMBRIDGE_GUESTS/hello_http.wasm" "$WASMBRIDGE_DEBS" >/dev/null
    export WASMBRIDGE_DEBS
}

build_guests() {
    say "building the guests (wasm32-wasip2, and the CGI programs for wasm32-wasip1)"
    (cd "$ROOT/guests" && cargo build --release --locked --target wasm32-wasip2)
    (cd "$ROOT/guests" && cargo build --release --locked --target wasm32-wasip1 -p cgi-hello -p cgi-probe -p cgi-worker)
}
