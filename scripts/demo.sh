#!/usr/bin/env bash
# Builds everything and serves the example apps on loopback:
#   wasmbridge serve, one app each:
#     http://127.0.0.1:8080/                 hello-http, a wasi:http component (Rust)
#     http://127.0.0.1:8081/?file=hello.py   PrettyFy, a Python CGI app on CPython for WASI
#     http://127.0.0.1:8082/                 cgi-hello, a Rust CGI program (wasm32-wasip1)
#     http://127.0.0.1:8083/                 a guestbook on SQLite, PHP 8.2 for WASI
#     http://127.0.0.1:8084/?file=hello.py   PrettyFy wrapped into one wasi:http component
#     http://127.0.0.1:8085/                 Notes, a WSGI app on SQLite, in CPython workers
#     http://127.0.0.1:8086/count            a WASI 0.3 (async) component: one instance, many requests
#   wasmbridge serve, many apps from one manifest (metrics on http://127.0.0.1:9464/metrics):
#     http://127.0.0.1:8087/  /prettyfy/?file=hello.py  /guestbook/  /notes/  /async/count
#   Apache httpd with mod_wasm, both kinds behind one server:
#     http://127.0.0.1:8088/hello                          hello-http
#     http://127.0.0.1:8088/wasm-module?file=hello.py      PrettyFy, from mod_wasm's demo block
#     http://127.0.0.1:8088/guestbook/                     the PHP guestbook
#     http://127.0.0.1:8088/wrapped?file=hello.py          the wrapped PrettyFy component
#     http://127.0.0.1:8088/notes/                         the Notes WSGI app
#     http://127.0.0.1:8088/async/count                    the WASI 0.3 component
# DEMO_HOST overrides the address (default 127.0.0.1). Ctrl-C stops them all.
source "$(dirname "$0")/common.sh"

setup
build_host
build_apache
build_guests
build_python
build_php

HOST=${DEMO_HOST:-127.0.0.1}
PY=$ROOT/guests/python
DEMO=$(mktemp -d)
pids=()
stop() {
    # A second Ctrl-C (or a TERM beside it) must not cut the clean-up short.
    trap '' INT TERM
    kill "${pids[@]}" 2>/dev/null || true
    /usr/sbin/apache2 -f "$DEMO/httpd.conf" -k stop 2>/dev/null || true
    sleep 1
    rm -rf "$DEMO"
}
trap stop EXIT
trap 'exit 130' INT TERM
serve() {
    local port=$1; shift
    "$WASMBRIDGE_BIN" serve --addr "$HOST:$port" "$@" &
    pids+=($!)
}
serve 8080 "$WASMBRIDGE_GUESTS/hello_http.wasm"
serve 8081 --dir "$PY/dist/lib::/usr/local/lib" --dir "$PY/apps/prettyfy::/app" \
    "$PY/dist/python.wasm" /app/prettyfy.py
serve 8082 "$TARGET_DIR/wasm32-wasip1/release/cgi-hello.wasm"
PHP=$ROOT/guests/php
mkdir -p "$DEMO/php-state/tmp" "$DEMO/php-state/data"
serve 8083 --dir "$PHP/apps/guestbook::/www::ro" \
    --dir "$DEMO/php-state/tmp::/tmp" --dir "$DEMO/php-state/data::/data" \
    --cgi-docroot /www "$PHP/dist/php-cgi.wasm"
# PrettyFy again, wrapped (wasmbridge wrap): a component that wasmtime serve would run too.
"$WASMBRIDGE_BIN" wrap -o "$DEMO/prettyfy.wasm" "$PY/dist/python.wasm" /app/prettyfy.py
serve 8084 --dir "$PY/dist/lib::/usr/local/lib" --dir "$PY/apps/prettyfy::/app" "$DEMO/prettyfy.wasm"
# A WSGI app in a long-lived CPython worker (one: it writes SQLite, which takes no locks).
mkdir -p "$DEMO/notes-data"
serve 8085 --dir "$PY/dist/lib::/usr/local/lib::ro" --dir "$PY/apps/notes::/app::ro" \
    --dir "$DEMO/notes-data::/data" --python-path /app --cgi-workers 1 --wsgi notes:application \
    "$PY/dist/python.wasm"
# A WASI 0.3 component (guests/fixtures/http3): /count says which instance answers and how
# many requests it has served; /sleep?ms=500 shows several at once on one instance.
serve 8086 "$WASMBRIDGE_GUESTS/http3.wasm"
# The same apps from one manifest, on routes of one server (state of their own: SQLite takes no
# locks under WASI, so two servers must not share a database). `kill -HUP` reloads it.
mkdir -p "$DEMO/many/guestbook/tmp" "$DEMO/many/guestbook/data" "$DEMO/many/notes"
cat >"$DEMO/apps.toml" <<MANIFEST
[[app]]
name = "hello"
route = "/..."
source = "$WASMBRIDGE_GUESTS/hello_http.wasm"

[[app]]
name = "prettyfy"
route = "/prettyfy/..."
source = "$PY/dist/python.wasm"
args = ["/app/prettyfy.py"]
dirs = ["$PY/dist/lib::/usr/local/lib::ro", "$PY/apps/prettyfy::/app::ro"]

[[app]]
name = "guestbook"
route = "/guestbook/..."
source = "$PHP/dist/php-cgi.wasm"
dirs = ["$PHP/apps/guestbook::/www::ro", "$DEMO/many/guestbook/tmp::/tmp", "$DEMO/many/guestbook/data::/data"]
[app.cgi]
docroot = "/www"

[[app]]
name = "notes"
route = "/notes/..."
source = "$PY/dist/python.wasm"
kind = "wsgi"
wsgi = "notes:application"
workers = 1
python_path = ["/app"]
dirs = ["$PY/dist/lib::/usr/local/lib::ro", "$PY/apps/notes::/app::ro", "$DEMO/many/notes::/data"]

[[app]]
name = "async"
route = "/async/..."
source = "$WASMBRIDGE_GUESTS/http3.wasm"
MANIFEST
serve 8087 --metrics-addr "$HOST:9464" --access-log "$DEMO/access.log" "$DEMO/apps.toml"

# Apache's children run as www-data: the apps go where they can read them, laid out as in
# mod_wasm's demo (the stdlib under /python/wasi-python).
mkdir -p "$DEMO/wasm_modules" "$DEMO/python/wasi-python/lib"
cp "$WASMBRIDGE_GUESTS/hello_http.wasm" "$WASMBRIDGE_GUESTS/http3.wasm" "$PY/dist/python.wasm" "$DEMO/prettyfy.wasm" "$DEMO/wasm_modules/"
cp -r "$PY/apps/prettyfy/." "$DEMO/python/"
cp -r "$PY/dist/lib/python3.11" "$DEMO/python/wasi-python/lib/"
cp -r "$PHP/dist" "$DEMO/php"
cp -r "$PHP/apps/guestbook" "$DEMO/guestbook"
cp -r "$PY/apps/notes" "$DEMO/notes"
mkdir -p "$DEMO/notes-state"
mkdir -p "$DEMO/guestbook-state/tmp" "$DEMO/guestbook-state/data"
chmod -R a+rX "$DEMO"
[ "$(id -u)" != 0 ] || chown -R www-data:www-data "$DEMO/guestbook-state" "$DEMO/notes-state"
modules=/usr/lib/apache2/modules
cat >"$DEMO/httpd.conf" <<CONF
ServerRoot $DEMO
ServerName $HOST
PidFile $DEMO/httpd.pid
DefaultRuntimeDir $DEMO
ErrorLog /dev/stderr
Listen $HOST:8088
$([ "$(id -u)" = 0 ] && printf 'User www-data\nGroup www-data\n')
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule alias_module $modules/mod_alias.so
LoadModule dir_module $modules/mod_dir.so
LoadModule wasm_module $WASMBRIDGE_MOD_WASM
WasmCacheDir $DEMO/cache
<Location /hello>
    SetHandler wasm-handler
    WasmModule $DEMO/wasm_modules/hello_http.wasm
</Location>
<Location /wasm-module>
    SetHandler wasm-handler
    WasmRoot   $DEMO/wasm_modules
    WasmModule python.wasm
    WasmMapDir /python $DEMO/python
    WasmArg    /python/prettyfy.py
    WasmEnv    PYTHONHOME /python/wasi-python/lib/python3.11
    WasmEnv    PYTHONPATH /python/wasi-python/lib/python3.11
    WasmEnableCGI On
</Location>
<Location /wrapped>
    SetHandler wasm-handler
    WasmModule $DEMO/wasm_modules/prettyfy.wasm
    WasmMapDir /usr/local/lib $DEMO/python/wasi-python/lib
    WasmMapDir /app $DEMO/python
</Location>
<Location /async>
    SetHandler wasm-handler
    WasmModule $DEMO/wasm_modules/http3.wasm
</Location>
<Location /notes>
    SetHandler wasm-handler
    WasmModule $DEMO/wasm_modules/python.wasm
    WasmMapDir /usr/local/lib $DEMO/python/wasi-python/lib ro
    WasmMapDir /app $DEMO/notes ro
    WasmMapDir /data $DEMO/notes-state
    WasmPythonPath /app
    WasmWSGI notes:application
    WasmCGIWorkers 1
</Location>
Alias /guestbook $DEMO/guestbook
<Directory $DEMO/guestbook>
    Require all granted
    DirectoryIndex index.php
    <FilesMatch "\.php\$">
        SetHandler wasm-handler
    </FilesMatch>
    WasmModule $DEMO/php/php-cgi.wasm
    WasmMapDir /www $DEMO/guestbook ro
    WasmMapDir /tmp $DEMO/guestbook-state/tmp
    WasmMapDir /data $DEMO/guestbook-state/data
    WasmEnableCGI On
    WasmMapCGIFileNames On
</Directory>
CONF
/usr/sbin/apache2 -f "$DEMO/httpd.conf" -k start

say "serving, Ctrl-C stops:
    curl http://$HOST:8080/
    curl 'http://$HOST:8081/?file=hello.py'
    curl 'http://$HOST:8081/?file=../../../../etc/passwd'   # the traversal attack: an error page
    curl http://$HOST:8082/
    curl http://$HOST:8083/                                 # the PHP guestbook (a browser is nicer)
    curl 'http://$HOST:8084/?file=hello.py'                 # PrettyFy as one wrapped component
    curl -d text=hello http://$HOST:8085/                   # a note for the WSGI app (see :8085/)
    curl http://$HOST:8086/count                            # run it twice: the same instance
    curl http://$HOST:8087/notes/                           # one server, five apps on routes
    curl http://$HOST:9464/metrics                          # what each of them did
    curl http://$HOST:8088/hello                            # the same apps through Apache
    curl 'http://$HOST:8088/wasm-module?file=hello.py'
    curl http://$HOST:8088/guestbook/
    curl 'http://$HOST:8088/wrapped?file=hello.py'
    curl http://$HOST:8088/notes/
    curl http://$HOST:8088/async/count"
wait -n "${pids[@]}"
