# Sourced by the interpreters' build scripts (guests/python, guests/php): what they take from
# Debian. Source it; do not run it.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# need_debian_packages PACKAGE...: installs those that are not installed yet.
need_debian_packages() {
    if ! dpkg -s "$@" >/dev/null 2>&1; then
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}

# debian_source PACKAGE: the path of PACKAGE's Debian source, unpacked in the current directory
# (fetched with `apt-get source` the first time, adding a deb-src entry if there is none).
debian_source() {
    local dir
    dir=$(find . -maxdepth 1 -type d -name "$1-[0-9]*" | sort | tail -n 1)
    if [ -z "$dir" ]; then
        need_debian_packages dpkg-dev
        if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
                as_root tee /etc/apt/sources.list.d/wasmbridge-src.sources >/dev/null
            as_root apt-get update -qq >&2
        fi
        apt-get source -qq "$1" >/dev/null 2>&1
        dir=$(find . -maxdepth 1 -type d -name "$1-[0-9]*" | sort | tail -n 1)
    fi
    [ -n "$dir" ] || { echo "error: apt-get source $1 gave no source directory" >&2; return 1; }
    echo "$PWD/${dir#./}"
}
