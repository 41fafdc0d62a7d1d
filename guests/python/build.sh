#!/usr/bin/env bash
# Builds CPython 3.11 for wasm32-wasi from Debian's source package with Debian's LLVM 16 and
# wasi-libc (no WASI SDK download). Work happens in $PYTHON_BUILD_DIR (default
# ~/.cache/wasmbridge-python); the result is copied to guests/python/dist/.
#
# dist/ gets python.wasm and lib/python3.11 (the stdlib), apps/prettyfy/lib gets Pygments, and
# all is rebuilt only when this recipe changes (dist/recipe.sha256). python.wasm is a snapshot
# taken by `wasmbridge wizer` ($WASMBRIDGE_BIN) after src/main.c has started the interpreter.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${PYTHON_BUILD_DIR:-$HOME/.cache/wasmbridge-python}
VERSION=3.11
DIST=$HERE/dist

recipe=$(cat "$0" "$HERE"/../debian.sh "$HERE"/src/* | sha256sum | cut -d' ' -f1)
if [ -f "$DIST/python.wasm" ] && [ "$(cat "$DIST/recipe.sha256" 2>/dev/null)" = "$recipe" ]; then
    exit 0
fi
# The same recipe built before, by another checkout or an earlier CI run on this machine.
stash=$WORK/dist-$recipe.tar
if [ -f "$stash" ]; then
    rm -rf "$DIST" && tar -xf "$stash" -C "$HERE" && exit 0
fi

# shellcheck source=../debian.sh
source "$HERE/../debian.sh"

# Toolchain and source, from Debian.
need_debian_packages clang-16 lld-16 llvm-16 wasi-libc libclang-rt-16-dev-wasm32
mkdir -p "$WORK"
cd "$WORK"
src=$(debian_source "python$VERSION")

# A directory laid out like a WASI SDK, so that CPython's Tools/wasm/wasi-env accepts it.
sdk=$WORK/sdk
mkdir -p "$sdk/bin" "$sdk/share"
wrapper() { printf '#!/bin/sh\nexec %s --target=wasm32-wasi %s "$@"\n' "$2" "$3" >"$sdk/bin/$1"; chmod +x "$sdk/bin/$1"; }
wrapper clang /usr/bin/clang-16 ""
wrapper clang++ /usr/bin/clang++-16 ""
wrapper clang-cpp /usr/bin/clang-16 "-E"
ln -sf /usr/lib/llvm-16/bin/wasm-ld "$sdk/bin/wasm-ld"
ln -sf /usr/lib/llvm-16/bin/llvm-ar "$sdk/bin/llvm-ar"
ln -sf /usr/lib/llvm-16/bin/llvm-ranlib "$sdk/bin/ranlib"
# Only the WASI headers and libraries: with --sysroot=/usr, clang would also see the host's.
mkdir -p "$sdk/share/wasi-sysroot/include" "$sdk/share/wasi-sysroot/lib"
ln -sfn /usr/include/wasm32-wasi "$sdk/share/wasi-sysroot/include/wasm32-wasi"
ln -sfn /usr/lib/wasm32-wasi "$sdk/share/wasi-sysroot/lib/wasm32-wasi"

build_python=$(command -v "python$VERSION" || command -v python3)
cc=("$sdk/bin/clang" --sysroot="$sdk/share/wasi-sysroot")

# Compression libraries from Debian's sources, as static libraries the stdlib's modules link:
# zlib (zlib, gzip, zipfile's deflate; werkzeug needs it), bzip2 (bz2), xz (lzma).
llvm=/usr/lib/llvm-16/bin
static=(CC="${cc[*]}" AR="$llvm/llvm-ar" RANLIB="$llvm/llvm-ranlib")
libs=$WORK/libs-wasi
lib_zlib() { env "${static[@]}" CFLAGS=-O2 ./configure --static --prefix="$1" && make libz.a && make install; }
lib_bzip2() {
    make "${static[@]}" CFLAGS="-O2 -D_FILE_OFFSET_BITS=64" libbz2.a &&
        mkdir -p "$1/lib" "$1/include" && cp libbz2.a "$1/lib/" && cp bzlib.h "$1/include/"
}
# liblzma alone, single-threaded; src/lzma_wasi.h stands in for the signal masks WASI lacks.
lib_xz() {
    ./configure --host=wasm32-unknown-wasi --prefix="$1" --disable-shared --enable-static \
        --disable-threads --disable-xz --disable-xzdec --disable-lzmadec --disable-lzmainfo \
        --disable-lzma-links --disable-scripts --disable-doc --disable-nls "${static[@]}" CFLAGS=-O2 &&
        make -C src/liblzma CFLAGS="-O2 -D_WASI_EMULATED_SIGNAL -include $HERE/src/lzma_wasi.h" &&
        make -C src/liblzma install
}
# build_lib NAME SOURCE_PACKAGE: lib_NAME's result in $libs/NAME, rebuilt when its recipe changes.
build_lib() {
    local recipe
    recipe=$(declare -f "lib_$1" | cat - "$HERE/src/lzma_wasi.h" | sha256sum | cut -c1-16)
    if [ "$(cat "$libs/$1/recipe" 2>/dev/null)" != "$recipe" ]; then
        local source
        source=$(debian_source "$2")
        rm -rf "$libs/$1" "$WORK/lib-build" && cp -r "$source" "$WORK/lib-build"
        (cd "$WORK/lib-build" && "lib_$1" "$libs/$1" >"$WORK/lib-$1.log" 2>&1) ||
            { tail -20 "$WORK/lib-$1.log"; echo "error: building $1 for WASI failed" >&2; exit 1; }
        echo "$recipe" >"$libs/$1/recipe"
    fi
}
build_lib zlib zlib
build_lib bzip2 bzip2
build_lib xz xz-utils

# The features Debian's libsqlite3 has that apps test for (full-text search, R*Tree, JSON,
# column metadata); no threads, extensions, WAL or mmap in WASI. src/sqlite_wasi.* fill in
# what the unix VFS names and make its lock-free variant the default.
sqlite=$WORK/sqlite-wasi
sqlite_flags="-DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_WAL -DSQLITE_EXTRA_INIT=wasmbridge_sqlite_init -DSQLITE_TEMP_STORE=3 -DSQLITE_MAX_MMAP_SIZE=0 -DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_FTS3_PARENTHESIS -DSQLITE_ENABLE_FTS4 -DSQLITE_ENABLE_FTS5 -DSQLITE_ENABLE_RTREE=1 -DSQLITE_ENABLE_COLUMN_METADATA -DSQLITE_ENABLE_DBSTAT_VTAB -DSQLITE_SOUNDEX=1 -DSQLITE_LIKE_DOESNT_MATCH_BLOBS -DSQLITE_MAX_VARIABLE_NUMBER=250000 -D_WASI_EMULATED_GETPID"
sqlite_recipe=$(cat "$HERE"/src/sqlite_wasi.* <(echo "$sqlite_flags") | sha256sum | cut -c1-16)
if [ "$(cat "$sqlite/recipe" 2>/dev/null)" != "$sqlite_recipe" ]; then
    need_debian_packages tcl
    sqlite_src=$(debian_source sqlite3)
    rm -rf "$sqlite" && mkdir -p "$sqlite/gen" "$sqlite/include" "$sqlite/lib"
    (cd "$sqlite/gen" && "$sqlite_src/configure" -q >/dev/null && make -s sqlite3.c >/dev/null)
    cp "$sqlite/gen/sqlite3.h" "$sqlite/include/"
    # shellcheck disable=SC2086
    "${cc[@]}" -O2 -c "$sqlite/gen/sqlite3.c" -o "$sqlite/sqlite3.o" -include "$HERE/src/sqlite_wasi.h" $sqlite_flags
    "${cc[@]}" -O2 -I"$sqlite/include" -c "$HERE/src/sqlite_wasi.c" -o "$sqlite/sqlite_wasi.o"
    "$llvm/llvm-ar" rcs "$sqlite/lib/libsqlite3.a" "$sqlite/sqlite3.o" "$sqlite/sqlite_wasi.o"
    echo "$sqlite_recipe" >"$sqlite/recipe"
fi

build=$WORK/build-wasi
mkdir -p "$build"
cd "$build"
# Linked into python.wasm: see the comment in src/cabi_realloc.c. (Kept out of the build
# directory, which `make clean` empties.)
"${cc[@]}" -O2 -c "$HERE/src/cabi_realloc.c" -o "$WORK/cabi_realloc.o"
configure_args=(--host=wasm32-unknown-wasi --build="$("$src/config.guess")"
    --with-build-python="$build_python" --disable-test-modules
    CFLAGS="-Wno-int-conversion" LIBS="$WORK/cabi_realloc.o"
    ZLIB_CFLAGS="-I$libs/zlib/include" ZLIB_LIBS="-L$libs/zlib/lib -lz"
    BZIP2_CFLAGS="-I$libs/bzip2/include" BZIP2_LIBS="-L$libs/bzip2/lib -lbz2"
    LIBLZMA_CFLAGS="-I$libs/xz/include" LIBLZMA_LIBS="-L$libs/xz/lib -llzma"
    LIBSQLITE3_CFLAGS="-I$sqlite/include" LIBSQLITE3_LIBS="-L$sqlite/lib -lsqlite3 -lwasi-emulated-getpid")
# Configured again, and built anew, when the arguments or a library change.
stamp="${configure_args[*]} $sqlite_recipe $(cat "$libs"/*/recipe | tr '\n' ' ')"
if [ "$(cat configured 2>/dev/null)" != "$stamp" ]; then
    if [ -f Makefile ]; then make -s clean >/dev/null 2>&1 || true; fi
    rm -f Makefile config.status
    CONFIG_SITE=$src/Tools/wasm/config.site-wasm32-wasi WASI_SDK_PATH=$sdk \
        "$src/Tools/wasm/wasi-env" "$src/configure" -q "${configure_args[@]}"
    echo "$stamp" >configured
fi
WASI_SDK_PATH=$sdk "$src/Tools/wasm/wasi-env" make -j"$(nproc)" -s

# Our entry point (src/main.c) in place of Programs/python.c, linked as CPython links its own.
"${cc[@]}" -O2 -I"$src/Include" -I"$build" \
    -c "$HERE/src/main.c" -o wizer_main.o
link=$(printf 'link:\n\t@echo $(LINKCC) $(PY_CORE_LDFLAGS) $(LINKFORSHARED) $(LINK_PYTHON_OBJS) $(LIBS) $(MODLIBS) $(SYSLIBS)\n' |
    make -s -f Makefile -f - link)
$link wizer_main.o -o python-main.wasm

# The interpreter and its stdlib (without the test suite and the GUI modules). Serve with
# `--dir dist/lib::/usr/local/lib`, the prefix CPython was configured with.
rm -rf "$DIST"
mkdir -p "$DIST/lib/python$VERSION/lib-dynload"
tar -C "$src/Lib" --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter \
    --exclude=turtledemo --exclude=ensurepip --exclude=__pycache__ -cf - . |
    tar -C "$DIST/lib/python$VERSION" -xf -
# The WSGI gateway (`python.wasm --wsgi`), beside the stdlib it only uses.
cp "$HERE/src/wasmbridge_wsgi.py" "$DIST/lib/python$VERSION/"
# Debian's sysconfig names the build's data module without the platform (cgitb, pydoc need it).
cp build/lib.*/_sysconfigdata_*.py "$DIST/lib/python$VERSION/_sysconfigdata__wasm32-wasi.py"
# Bytecode made now, so that requests neither compile nor write into the stdlib directory.
# (Every 3.11.x shares the bytecode format; unchecked hashes skip the source timestamp check.)
"$build_python" -m compileall -q -j0 --invalidation-mode unchecked-hash "$DIST/lib/python$VERSION" >/dev/null || true
# The demo app's highlighter, from PyPI, beside the app (it reaches only what is mapped).
PYGMENTS=pygments==2.18.0
app_lib=$HERE/apps/prettyfy/lib
rm -rf "$app_lib" "$WORK/wheels"
"$build_python" -m pip download -q --no-deps --only-binary=:all: "$PYGMENTS" -d "$WORK/wheels"
mkdir -p "$app_lib"
"$build_python" -m zipfile -e "$WORK"/wheels/pygments-*.whl "$app_lib"
"$build_python" -m compileall -q -j0 --invalidation-mode unchecked-hash "$app_lib" >/dev/null || true

# The snapshot: the interpreter started and the common modules imported, with the stdlib where
# it will be served from (serve it with the same --dir first, as the README shows).
wasmbridge=${WASMBRIDGE_BIN:-$HERE/../../target/release/wasmbridge}
"$wasmbridge" wizer --dir "$DIST/lib::/usr/local/lib" -o "$DIST/python.wasm" "$build/python-main.wasm"

echo "$recipe" >"$DIST/recipe.sha256"
rm -f "$WORK"/dist-*.tar
tar -cf "$stash.tmp" -C "$HERE" dist apps/prettyfy/lib && mv "$stash.tmp" "$stash"
echo "built $DIST/python.wasm"
