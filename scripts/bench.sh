#!/usr/bin/env bash
# Throughput and latency under wrk, every peer measured in the same run on the same machine:
# - hello component: `wasmbridge serve` against `wasmtime serve -S cli` (when a wasmtime 48
#   binary is at hand), and Apache + mod_wasm against Apache serving the same bytes as a file;
#   the same for a WASI 0.3 component (guests/fixtures/http3), whose instances serve many requests;
# - Python hello CGI (and a three-line print script): the CPython snapshot through
#   `wasmbridge serve` and through Apache + mod_wasm, against native `python3` run by mod_cgid;
# - a Flask page (Debian's Flask): WSGI workers through `wasmbridge serve --wsgi` against
#   gunicorn, through Apache + mod_wasm (WasmWSGI) against mod_wsgi in daemon mode, and a fresh
#   instance per request of an app snapshot against the app as a native CGI script;
# - PHP page: php-cgi.wasm (a fresh instance per request, and CGI workers) through both,
#   against native php-cgi under mod_cgid and PHP-FPM behind mod_proxy_fcgi;
# - wrapped CGI apps (`wasmbridge wrap`) against the same programs in CGI mode;
# - a DokuWiki page and MediaWiki's Main Page (Debian's dokuwiki and mediawiki, unchanged)
#   through Apache + mod_wasm (fresh instances of php-cgi.wasm, fresh instances of a snapshot
#   with the app compiled into OPcache, workers) against the same app on PHP-FPM (OPcache on)
#   behind mod_proxy_fcgi.
# Apache is Debian's apache2 with mpm_event, from a generated config on loopback ports.
# Writes the tables to BENCHMARKS.md. This is a benchmark, not a test: it asserts nothing.
#
#   WASMTIME=/path/to/wasmtime        use that wasmtime binary
#   BENCH_BUILD_WASMTIME=1            build wasmtime-cli 48.0.8 into ~/.cache/wasmbridge-tools (slow, once)
#   BENCH_SECONDS=10 BENCH_CONNECTIONS=64 BENCH_CGI_CONNECTIONS=16 BENCH_ROUNDS=4
#   BENCH_PHP_WORKERS=4
source "$(dirname "$0")/common.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
CGI_CONNECTIONS=${BENCH_CGI_CONNECTIONS:-16}
# A single 10-second run on this kind of machine varies by ±15%: four rounds average that out.
ROUNDS=${BENCH_ROUNDS:-4}
# CGI workers per app (per Apache child): PHP-FPM's pool below has at most 5 children.
PHP_WORKERS=${BENCH_PHP_WORKERS:-4}
# WSGI processes of every server alike: gunicorn's and mod_wsgi's, wasmbridge's workers (under
# Apache, per child: Debian's mpm_event starts 2 children, so half as many each).
WSGI_WORKERS=${BENCH_WSGI_WORKERS:-2}
APACHE_WSGI_WORKERS=$((WSGI_WORKERS / 2 > 0 ? WSGI_WORKERS / 2 : 1))
WASMTIME_VERSION=48.0.8

setup
need_packages wrk:wrk /usr/bin/python3:python3 php-cgi8.2:php8.2-cgi php-fpm8.2:php8.2-fpm \
    php8.2:php8.2-cli
install_test_packages # the extensions MediaWiki needs under PHP-FPM (and its installer)
build_host
build_apache
build_guests
build_python
build_php
fetch_php_apps
fetch_python_apps
need_packages gunicorn:gunicorn
need_debian_packages libapache2-mod-wsgi-py3

find_wasmtime() {
    if [ -n "${WASMTIME:-}" ]; then echo "$WASMTIME"; return; fi
    local cached=$TOOLS/wasmtime-$WASMTIME_VERSION/bin/wasmtime
    if [ ! -x "$cached" ] && [ "${BENCH_BUILD_WASMTIME:-0}" = 1 ]; then
        say "building wasmtime-cli $WASMTIME_VERSION (once; cached in $TOOLS)"
        cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --root "$TOOLS/wasmtime-$WASMTIME_VERSION" >&2
    fi
    if [ -x "$cached" ]; then echo "$cached"; return; fi
    if command -v wasmtime >/dev/null && wasmtime --version | grep -q " 48\."; then command -v wasmtime; fi
}
WASMTIME=$(find_wasmtime)

RESULTS_DIR=$(mktemp -d)
# Apache's children run as www-data: what it serves is copied where they can read it.
chmod 755 "$RESULTS_DIR"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ ! -f "$RESULTS_DIR/httpd.conf" ] || /usr/sbin/apache2 -f "$RESULTS_DIR/httpd.conf" -k stop 2>/dev/null || true
    sleep 1
    rm -rf "$RESULTS_DIR"
}
trap cleanup EXIT

# wait_for URL: until it answers 200.
wait_for() {
    local status
    for _ in $(seq 600); do
        status=$(curl -s -o /dev/null -w '%{http_code}' "$1") && [ "$status" = 200 ] && return 0
        sleep 0.1
    done
    echo "$1 did not answer 200 (the last answer: $status)" >&2; cat "$RESULTS_DIR"/*.log >&2; exit 1
}

# serve PORT COMMAND...: a server in the background, waited for.
serve() {
    local port=$1; shift
    "$@" >"$RESULTS_DIR/server-$port.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$port/"
}

# to_ms VALUE: wrk's 1.23ms / 456.78us / 1.2s as milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}

# measure NAME URL CONNECTIONS: one wrk run; appends "NAME rps p50 p99" to the raw results.
measure() {
    local out rps p50 p99 errors
    # (A page that takes seconds in a fresh instance is slow, not lost: no 2 s timeout.)
    out=$(wrk -t2 -c"$3" -d"${SECONDS_PER_RUN}s" --timeout 60s --latency "$2")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -z "$errors" ] || echo "warning: $1: $errors" >&2
    echo "$1 $rps $p50 $p99" >>"$RESULTS_DIR/raw"
    say "$1: $rps req/s, p50 ${p50} ms, p99 ${p99} ms"
}

# rounds CONNECTIONS NAME URL [NAME URL...]: warms each up, then alternates ROUNDS rounds so
# that no server always runs on a cooler machine.
rounds() {
    local connections=$1; shift
    local args=("$@") i
    for ((i = 1; i < ${#args[@]}; i += 2)); do
        wrk -t2 -c"$connections" -d2s "${args[i]}" >/dev/null
    done
    for _ in $(seq "$ROUNDS"); do
        for ((i = 0; i < ${#args[@]}; i += 2)); do
            measure "${args[i]}" "${args[i + 1]}" "$connections"
        done
    done
}

# The apps, where www-data can read them.
HELLO=$RESULTS_DIR/hello_http.wasm
cp "$WASMBRIDGE_GUESTS/hello_http.wasm" "$HELLO"
HELLO3=$RESULTS_DIR/http3.wasm
cp "$WASMBRIDGE_GUESTS/http3.wasm" "$HELLO3"
mkdir -p "$RESULTS_DIR/python" "$RESULTS_DIR/app" "$RESULTS_DIR/cgi-bin" "$RESULTS_DIR/htdocs"
cp -r "$ROOT/guests/python/dist/python.wasm" "$ROOT/guests/python/dist/lib" "$RESULTS_DIR/python/"
cp "$ROOT/guests/fixtures/python/hello.py" "$RESULTS_DIR/app/"
{ echo '#!/usr/bin/python3'; cat "$ROOT/guests/fixtures/python/hello.py"; } >"$RESULTS_DIR/cgi-bin/hello.py"
chmod 755 "$RESULTS_DIR/cgi-bin/hello.py"
mkdir -p "$RESULTS_DIR/php/www" "$RESULTS_DIR/php/www-workers" "$RESULTS_DIR/php/tmp"
cp "$ROOT/guests/php/dist/php-cgi.wasm" "$RESULTS_DIR/php/"
cp "$ROOT/guests/fixtures/php/hello.php" "$RESULTS_DIR/php/www/"
cp "$ROOT/guests/fixtures/php/hello.php" "$RESULTS_DIR/php/www/index.php" # what serve() waits for
cp "$ROOT/guests/fixtures/php/hello.php" "$RESULTS_DIR/php/www-workers/"
{ echo '#!/usr/bin/php-cgi8.2'; cat "$ROOT/guests/fixtures/php/hello.php"; } >"$RESULTS_DIR/cgi-bin/hello.php"
chmod 755 "$RESULTS_DIR/cgi-bin/hello.php"
printf 'Hello from WebAssembly!\n' >"$RESULTS_DIR/htdocs/hello.txt"
# The three-line CGI script of guests/python/README.md's defaults.
printf 'print("Content-Type: text/plain")\nprint()\nprint("Hello, World!")\n' >"$RESULTS_DIR/app/print.py"
{ echo '#!/usr/bin/python3'; cat "$RESULTS_DIR/app/print.py"; } >"$RESULTS_DIR/cgi-bin/print.py"
chmod 755 "$RESULTS_DIR/cgi-bin/print.py"
# The Flask app of the tests on Debian's Flask 2.2: for python.wasm (granted at /app and
# /packages), gunicorn, mod_wsgi (app.wsgi) and mod_cgid (wsgiref's CGI handler).
FLASK=$RESULTS_DIR/flask
mkdir -p "$FLASK"
cp -r "$ROOT/guests/fixtures/python-wsgi/flaskapp" "$FLASK/app"
cp -r "$WASMBRIDGE_PYTHON_APPS/usr/lib/python3/dist-packages" "$FLASK/packages"
printf 'from app import app as application\n' >"$FLASK/app/app.wsgi"
printf '#!/usr/bin/python3\nimport sys\nsys.path[:0] = ["%s/app", "%s/packages"]\nfrom wsgiref.handlers import CGIHandler\nfrom app import app\nCGIHandler().run(app)\n' \
    "$FLASK" "$FLASK" >"$RESULTS_DIR/cgi-bin/flask.py"
chmod 755 "$RESULTS_DIR/cgi-bin/flask.py"
flask_grants=(--dir "$RESULTS_DIR/python/lib::/usr/local/lib::ro" --dir "$FLASK/app::/app::ro"
    --dir "$FLASK/packages::/packages::ro")
"$WASMBRIDGE_BIN" wizer --init-func wasmbridge-warm "${flask_grants[@]}" \
    --env PYTHONPATH=/app:/packages --env PYTHON_WARM=app:app \
    -o "$RESULTS_DIR/python/flask-python.wasm" "$RESULTS_DIR/python/python.wasm"
# The same two apps wrapped into wasi:http components (wasmbridge wrap), each with its script
# fixed, so that they can be mounted anywhere.
"$WASMBRIDGE_BIN" wrap -o "$RESULTS_DIR/python/hello-wrapped.wasm" "$RESULTS_DIR/python/python.wasm" /app/hello.py
"$WASMBRIDGE_BIN" wrap -o "$RESULTS_DIR/php/hello-wrapped.wasm" "$RESULTS_DIR/php/php-cgi.wasm" /www/hello.php
# DokuWiki as Debian installs it, links resolved (guests/php/README.md), with one page of
# headings, lists, a table and code; its state belongs to www-data, as Debian's does.
DW=$RESULTS_DIR/dokuwiki
mkdir -p "$DW/usr/share" "$DW/var/lib/php/sessions" "$DW/etc" "$DW/tmp"
cp -rL "$WASMBRIDGE_PHP_APPS"/usr/share/{dokuwiki,php,php-geshi,javascript} "$DW/usr/share/"
cp -rL "$WASMBRIDGE_PHP_APPS/var/lib/dokuwiki" "$DW/var/lib/"
cp -rL "$WASMBRIDGE_PHP_APPS/etc/dokuwiki" "$DW/etc/"
# Debian's PHP reads the system's time zones, which FPM in its chroot finds only here.
cp -r /usr/share/zoneinfo "$DW/usr/share/"
{
    echo '====== A page to measure ======'
    for i in 1 2 3 4 5; do
        echo "===== Section $i ====="
        echo "Some **bold**, //italic// and [[wiki:syntax|linked]] text in section $i, long enough to wrap."
        echo "  * a list item"
        echo "  * another, with ''monospace''"
        echo "^ column ^ value ^"
        echo "| row $i | $((i * 42)) |"
        echo "<code php>echo 'code $i';</code>"
    done
} >"$DW/var/lib/dokuwiki/data/pages/bench.txt"
chmod 1777 "$DW/tmp"
# MediaWiki likewise, set up by its own installer (maintenance/install.php, run by Debian's
# php8.2-cli) on SQLite in /var/lib/mediawiki, its LocalSettings.php beside its code; the
# paths in it are the ones the guest and FPM's chroot see.
MW=$RESULTS_DIR/mediawiki
mkdir -p "$MW/usr/share" "$MW/var/lib/mediawiki" "$MW/var/lib/php/sessions" "$MW/var/cache/mediawiki" "$MW/tmp"
cp -rL "$WASMBRIDGE_PHP_APPS/usr/share/mediawiki" "$MW/usr/share/"
cp -r /usr/share/zoneinfo "$MW/usr/share/"
php8.2 "$MW/usr/share/mediawiki/maintenance/install.php" --dbtype sqlite \
    --dbpath "$MW/var/lib/mediawiki/data" --dbname bench_wiki --scriptpath /mediawiki \
    --server http://127.0.0.1:18090 --pass 'a benchmarked wiki, 2026' \
    --confpath "$MW/usr/share/mediawiki" "Bench Wiki" Admin >"$RESULTS_DIR/mediawiki-install.log"
sed -i "s#$MW/var/lib/#/var/lib/#g" "$MW/usr/share/mediawiki/LocalSettings.php"
# (Sessions where Debian's php.ini keeps them, for FPM in its chroot.)
chmod 1733 "$DW/var/lib/php/sessions" "$MW/var/lib/php/sessions"
chmod 1777 "$MW/tmp"
# Each app again as a snapshot of php-cgi.wasm with its scripts compiled into OPcache
# (guests/php/README.md), to start every fresh instance with them.
"$WASMBRIDGE_BIN" wizer --init-func wasmbridge-warm --dir "$DW/usr/share::/usr/share::ro" \
    --env PHP_OPCACHE_WARM=/usr/share/dokuwiki:/usr/share/php \
    -o "$RESULTS_DIR/php/dokuwiki-php.wasm" "$RESULTS_DIR/php/php-cgi.wasm"
"$WASMBRIDGE_BIN" wizer --init-func wasmbridge-warm --dir "$MW/usr/share::/usr/share::ro" \
    --env PHP_OPCACHE_WARM=/usr/share/mediawiki/index.php:/usr/share/mediawiki/includes \
    -o "$RESULTS_DIR/php/mediawiki-php.wasm" "$RESULTS_DIR/php/php-cgi.wasm" 2>"$RESULTS_DIR/mediawiki-warm.log"
chmod -R a+rX "$RESULTS_DIR"
[ "$(id -u)" != 0 ] || chown -R www-data:www-data "$DW/var/lib/dokuwiki" "$MW/var/lib/mediawiki" \
    "$MW/var/cache/mediawiki"

# wasmbridge serve, and wasmtime serve when there is one.
serve 18080 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18080 "$HELLO"
[ -z "$WASMTIME" ] || serve 18081 "$WASMTIME" serve --addr 127.0.0.1:18081 -S cli "$HELLO"
serve 18094 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18094 "$HELLO3"
[ -z "$WASMTIME" ] || serve 18095 "$WASMTIME" serve --addr 127.0.0.1:18095 -S cli "$HELLO3"
serve 18082 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18082 \
    --dir "$RESULTS_DIR/python/lib::/usr/local/lib" --dir "$RESULTS_DIR/app::/app" \
    "$RESULTS_DIR/python/python.wasm" /app/hello.py
serve 18093 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18093 \
    --dir "$RESULTS_DIR/python/lib::/usr/local/lib" --dir "$RESULTS_DIR/app::/app" \
    "$RESULTS_DIR/python/python.wasm" /app/print.py

serve 18083 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18083 \
    --dir "$RESULTS_DIR/php/www::/www::ro" \
    --dir "$RESULTS_DIR/php/tmp::/tmp" --cgi-docroot /www "$RESULTS_DIR/php/php-cgi.wasm"
# Flask: WSGI workers, and gunicorn with as many.
serve 18091 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18091 "${flask_grants[@]}" \
    --python-path /app --python-path /packages --cgi-workers "$WSGI_WORKERS" --wsgi app:app \
    "$RESULTS_DIR/python/python.wasm"
serve 18092 env PYTHONPATH="$FLASK/app:$FLASK/packages" gunicorn --workers "$WSGI_WORKERS" \
    --bind 127.0.0.1:18092 app:app
# The same with CGI workers: long-lived php-cgi instances taking requests over FastCGI.
serve 18088 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18088 --cgi-workers "$PHP_WORKERS" \
    --dir "$RESULTS_DIR/php/www::/www::ro" \
    --dir "$RESULTS_DIR/php/tmp::/tmp" --cgi-docroot /www "$RESULTS_DIR/php/php-cgi.wasm"
# The wrapped apps: components for wasmbridge serve, and for wasmtime serve when there is one.
python_dirs=(--dir "$RESULTS_DIR/python/lib::/usr/local/lib" --dir "$RESULTS_DIR/app::/app")
php_dirs=(--dir "$RESULTS_DIR/php/www::/www" --dir "$RESULTS_DIR/php/tmp::/tmp")
serve 18084 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18084 "${python_dirs[@]}" "$RESULTS_DIR/python/hello-wrapped.wasm"
serve 18085 "$WASMBRIDGE_BIN" serve --addr 127.0.0.1:18085 "${php_dirs[@]}" "$RESULTS_DIR/php/hello-wrapped.wasm"
if [ -n "$WASMTIME" ]; then
    serve 18086 "$WASMTIME" serve --addr 127.0.0.1:18086 -S cli "${python_dirs[@]}" "$RESULTS_DIR/python/hello-wrapped.wasm"
    serve 18087 "$WASMTIME" serve --addr 127.0.0.1:18087 -S cli "${php_dirs[@]}" "$RESULTS_DIR/php/hello-wrapped.wasm"
fi

# PHP-FPM as Debian configures its pool (dynamic, at most 5 children), with Debian's php.ini
# (OPcache on).
FPM_POOL='pm = dynamic
pm.max_children = 5
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3'
cat >"$RESULTS_DIR/php-fpm.conf" <<EOF
[global]
pid = $RESULTS_DIR/php-fpm.pid
error_log = $RESULTS_DIR/php-fpm.log
daemonize = no
[www]
$([ "$(id -u)" = 0 ] && printf 'user = www-data\ngroup = www-data\n')
listen = 127.0.0.1:19000
$FPM_POOL
EOF
# The same pool for DokuWiki, chrooted to its tree so that it finds /etc/dokuwiki and
# /var/lib/dokuwiki where Debian's package looks (as the wasm guest is granted them).
if [ "$(id -u)" = 0 ]; then
    cat >>"$RESULTS_DIR/php-fpm.conf" <<EOF
[dokuwiki]
user = www-data
group = www-data
listen = 127.0.0.1:19001
chroot = $DW
$FPM_POOL
[mediawiki]
user = www-data
group = www-data
listen = 127.0.0.1:19002
chroot = $MW
$FPM_POOL
EOF
fi
php-fpm8.2 -y "$RESULTS_DIR/php-fpm.conf" >"$RESULTS_DIR/php-fpm.out" 2>&1 &
pids+=($!)

# php_app_conf NAME TREE FPM_PORT DIRECTIVE...: Apache serving the PHP app Debian installs in
# TREE/usr/share/NAME four ways: /NAME/ in fresh instances of php-cgi.wasm, /NAME-workers/ in
# CGI workers, /NAME-warm/ in fresh instances of NAME-php.wasm (its warmed snapshot), and
# /NAME-fpm/ on the PHP-FPM pool at FPM_PORT, chrooted to TREE. DIRECTIVEs (the grants) go to
# mod_wasm.
php_app_conf() {
    local name=$1 tree=$2 port=$3 way
    shift 3
    for way in "" -workers -warm -fpm; do echo "Alias /$name$way/ $tree/usr/share/$name/"; done
    cat <<EOF
<Directory $tree/usr/share/$name>
    WasmModule $RESULTS_DIR/php/php-cgi.wasm
$(printf '    %s\n' "$@")
    WasmEnableCGI On
    WasmMapCGIFileNames On
    <If "%{REQUEST_URI} =~ m#^/$name-fpm/#">
        SetHandler "proxy:fcgi://127.0.0.1:$port"
        ProxyFCGISetEnvIf "reqenv('SCRIPT_FILENAME') =~ m#$tree(/usr/share/$name/.*)#" SCRIPT_FILENAME "\$1"
        ProxyFCGISetEnvIf "true" DOCUMENT_ROOT "/usr/share/$name"
    </If>
    <ElseIf "%{REQUEST_URI} =~ m#^/$name-workers/#">
        SetHandler wasm-handler
        WasmCGIWorkers $PHP_WORKERS
    </ElseIf>
    <ElseIf "%{REQUEST_URI} =~ m#^/$name-warm/#">
        SetHandler wasm-handler
        WasmModule $RESULTS_DIR/php/$name-php.wasm
    </ElseIf>
    <Else>
        SetHandler wasm-handler
    </Else>
</Directory>
EOF
}

# One Apache for them all: a static file, the component, Python through mod_wasm, Python
# through mod_cgid.
modules=/usr/lib/apache2/modules
MPM_CONF=/etc/apache2/mods-available/mpm_event.conf
cat >"$RESULTS_DIR/httpd.conf" <<EOF
ServerRoot $RESULTS_DIR
ServerName 127.0.0.1
PidFile $RESULTS_DIR/httpd.pid
DefaultRuntimeDir $RESULTS_DIR
ErrorLog $RESULTS_DIR/error.log
LogLevel warn
Listen 127.0.0.1:18090
$([ "$(id -u)" = 0 ] && printf 'User www-data\nGroup www-data\n')
LoadModule mpm_event_module $modules/mod_mpm_event.so
# The MPM's settings as Debian ships them (\`a2enmod mpm_event\` enables this file), for every
# row alike; without it Apache's compiled-in ones apply (MinSpareThreads 75: more children).
Include $MPM_CONF
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule alias_module $modules/mod_alias.so
LoadModule cgid_module $modules/mod_cgid.so
LoadModule env_module $modules/mod_env.so
LoadModule proxy_module $modules/mod_proxy.so
LoadModule proxy_fcgi_module $modules/mod_proxy_fcgi.so
LoadModule wasm_module $WASMBRIDGE_MOD_WASM
LoadModule wsgi_module $modules/mod_wsgi.so
ScriptSock $RESULTS_DIR/cgid.sock
DocumentRoot $RESULTS_DIR/htdocs
# As Debian's apache2.conf has it: no .htaccess lookups.
<Directory />
    AllowOverride None
</Directory>
<Directory $RESULTS_DIR>
    Require all granted
</Directory>
ScriptAlias /cgi/ $RESULTS_DIR/cgi-bin/
# php-cgi run by mod_cgid wants to know it was started by the server.
<Directory $RESULTS_DIR/cgi-bin>
    SetEnv REDIRECT_STATUS 200
</Directory>
Alias /php/ $RESULTS_DIR/php/www/
Alias /fpm/ $RESULTS_DIR/php/www/
<Directory $RESULTS_DIR/php/www>
    WasmModule $RESULTS_DIR/php/php-cgi.wasm
    WasmMapDir /www $RESULTS_DIR/php/www ro
    WasmMapDir /tmp $RESULTS_DIR/php/tmp
    WasmEnableCGI On
    WasmMapCGIFileNames On
    <If "%{REQUEST_URI} =~ m#^/php/#">
        SetHandler wasm-handler
    </If>
    <Else>
        SetHandler "proxy:fcgi://127.0.0.1:19000"
    </Else>
</Directory>
# The same page with CGI workers, configured as guests/php/README.md shows.
Alias /php-workers/ $RESULTS_DIR/php/www-workers/
<Directory $RESULTS_DIR/php/www-workers>
    SetHandler wasm-handler
    WasmModule $RESULTS_DIR/php/php-cgi.wasm
    WasmMapDir /www $RESULTS_DIR/php/www-workers ro
    WasmMapDir /tmp $RESULTS_DIR/php/tmp
    WasmEnableCGI On
    WasmMapCGIFileNames On
    WasmCGIWorkers $PHP_WORKERS
</Directory>
# DokuWiki and MediaWiki: php-cgi.wasm granted each app's directories at Debian's paths, and
# PHP-FPM in the app's chroot.
$(php_app_conf dokuwiki "$DW" 19001 \
    "WasmMapDir /usr/share $DW/usr/share ro" \
    "WasmMapDir /etc/dokuwiki $DW/etc/dokuwiki ro" \
    "WasmMapDir /var/lib/dokuwiki $DW/var/lib/dokuwiki" \
    "WasmMapDir /tmp $DW/tmp")
$(php_app_conf mediawiki "$MW" 19002 \
    "WasmMapDir /usr/share $MW/usr/share ro" \
    "WasmMapDir /var/lib/mediawiki $MW/var/lib/mediawiki" \
    "WasmMapDir /var/cache/mediawiki $MW/var/cache/mediawiki" \
    "WasmMapDir /tmp $MW/tmp" \
    "WasmTimeout 120")
<Location /hello>
    SetHandler wasm-handler
    WasmModule $HELLO
</Location>
<Location /hello3>
    SetHandler wasm-handler
    WasmModule $HELLO3
</Location>
<Location /python>
    SetHandler wasm-handler
    WasmRoot $RESULTS_DIR/python
    WasmModule python.wasm
    WasmMapDir /usr/local/lib $RESULTS_DIR/python/lib
    WasmMapDir /app $RESULTS_DIR/app
    WasmArg /app/hello.py
    WasmEnableCGI On
</Location>
# Flask: WSGI workers and fresh instances of the app's snapshot, and mod_wsgi in daemon mode
# with as many processes, one thread each.
<Location /flask>
    SetHandler wasm-handler
    WasmModule $RESULTS_DIR/python/python.wasm
    WasmMapDir /usr/local/lib $RESULTS_DIR/python/lib ro
    WasmMapDir /app $FLASK/app ro
    WasmMapDir /packages $FLASK/packages ro
    WasmPythonPath /app /packages
    WasmWSGI app:app
    WasmCGIWorkers $APACHE_WSGI_WORKERS
</Location>
<Location /flask-fresh>
    SetHandler wasm-handler
    WasmModule $RESULTS_DIR/python/flask-python.wasm
    WasmMapDir /usr/local/lib $RESULTS_DIR/python/lib ro
    WasmMapDir /app $FLASK/app ro
    WasmMapDir /packages $FLASK/packages ro
    WasmPythonPath /app /packages
    WasmWSGI app:app
    WasmCGIWorkers 0
</Location>
WSGISocketPrefix $RESULTS_DIR/wsgi
WSGIDaemonProcess flask processes=$WSGI_WORKERS threads=1 python-path=$FLASK/app:$FLASK/packages
WSGIScriptAlias /flask-wsgi $FLASK/app/app.wsgi process-group=flask application-group=%{GLOBAL}
<Location /python-print>
    SetHandler wasm-handler
    WasmModule $RESULTS_DIR/python/python.wasm
    WasmMapDir /usr/local/lib $RESULTS_DIR/python/lib
    WasmMapDir /app $RESULTS_DIR/app
    WasmArg /app/print.py
    WasmEnableCGI On
</Location>
<Location /python-wrapped>
    SetHandler wasm-handler
    WasmModule $RESULTS_DIR/python/hello-wrapped.wasm
    WasmMapDir /usr/local/lib $RESULTS_DIR/python/lib
    WasmMapDir /app $RESULTS_DIR/app
</Location>
<Location /php-wrapped>
    SetHandler wasm-handler
    WasmModule $RESULTS_DIR/php/hello-wrapped.wasm
    WasmMapDir /www $RESULTS_DIR/php/www ro
    WasmMapDir /tmp $RESULTS_DIR/php/tmp
</Location>
EOF
/usr/sbin/apache2 -f "$RESULTS_DIR/httpd.conf" -k start
APACHE=http://127.0.0.1:18090
for path in /hello.txt /hello /python /cgi/hello.py /php/hello.php /php-workers/hello.php \
    /cgi/hello.php /fpm/hello.php /python-wrapped /php-wrapped /flask/ /flask-fresh/ /flask-wsgi/ \
    /cgi/flask.py/ /python-print /cgi/print.py; do
    wait_for "$APACHE$path"
done
DOKUWIKI_ROWS=(dokuwiki-apache-wasm "$APACHE/dokuwiki/doku.php?id=bench"
    dokuwiki-apache-warm "$APACHE/dokuwiki-warm/doku.php?id=bench"
    dokuwiki-apache-workers "$APACHE/dokuwiki-workers/doku.php?id=bench")
[ "$(id -u)" != 0 ] || DOKUWIKI_ROWS+=(dokuwiki-fpm "$APACHE/dokuwiki-fpm/doku.php?id=bench")
MEDIAWIKI_ROWS=(mediawiki-apache-wasm "$APACHE/mediawiki/index.php?title=Main_Page"
    mediawiki-apache-warm "$APACHE/mediawiki-warm/index.php?title=Main_Page"
    mediawiki-apache-workers "$APACHE/mediawiki-workers/index.php?title=Main_Page")
[ "$(id -u)" != 0 ] || MEDIAWIKI_ROWS+=(mediawiki-fpm "$APACHE/mediawiki-fpm/index.php?title=Main_Page")
for ((i = 1; i < ${#DOKUWIKI_ROWS[@]}; i += 2)); do wait_for "${DOKUWIKI_ROWS[i]}"; done
for ((i = 1; i < ${#MEDIAWIKI_ROWS[@]}; i += 2)); do wait_for "${MEDIAWIKI_ROWS[i]}"; done

say "hello: wasmbridge serve, wasmtime serve, Apache + mod_wasm, Apache static file"
args=(wasmbridge http://127.0.0.1:18080/)
[ -z "$WASMTIME" ] || args+=(wasmtime http://127.0.0.1:18081/)
args+=(apache-wasm "$APACHE/hello" apache-static "$APACHE/hello.txt")
rounds "$CONNECTIONS" "${args[@]}"
say "WASI 0.3 hello: wasmbridge serve, wasmtime serve, Apache + mod_wasm, Apache static file"
args=(hello3-wasmbridge http://127.0.0.1:18094/)
[ -z "$WASMTIME" ] || args+=(hello3-wasmtime http://127.0.0.1:18095/)
args+=(hello3-apache-wasm "$APACHE/hello3/" apache-static "$APACHE/hello.txt")
rounds "$CONNECTIONS" "${args[@]}"
say "Python hello CGI: wasmbridge serve, Apache + mod_wasm, Apache + mod_cgid + python3, wrapped"
args=(python-wasmbridge http://127.0.0.1:18082/ python-apache-wasm "$APACHE/python"
    python-native "$APACHE/cgi/hello.py" python-wrapped http://127.0.0.1:18084/
    python-apache-wrapped "$APACHE/python-wrapped")
[ -z "$WASMTIME" ] || args+=(python-wrapped-wasmtime http://127.0.0.1:18086/)
rounds "$CGI_CONNECTIONS" "${args[@]}"
say "Python three-line print CGI: wasmbridge serve, Apache + mod_wasm, Apache + mod_cgid + python3"
rounds "$CGI_CONNECTIONS" print-wasmbridge http://127.0.0.1:18093/ \
    print-apache-wasm "$APACHE/python-print" print-native "$APACHE/cgi/print.py"
say "Flask page: wasmbridge serve --wsgi, gunicorn, Apache + mod_wasm (workers, fresh instances), Apache + mod_wsgi, Apache + mod_cgid"
rounds "$CGI_CONNECTIONS" flask-wasmbridge "http://127.0.0.1:18091/?name=bench" \
    flask-gunicorn "http://127.0.0.1:18092/?name=bench" \
    flask-apache-wasm "$APACHE/flask/?name=bench" flask-mod-wsgi "$APACHE/flask-wsgi/?name=bench" \
    flask-apache-fresh "$APACHE/flask-fresh/?name=bench" flask-native "$APACHE/cgi/flask.py/?name=bench"
say "PHP page: wasmbridge serve, Apache + mod_wasm (fresh instances, workers), Apache + mod_cgid + php-cgi, Apache + PHP-FPM, wrapped"
args=(php-wasmbridge http://127.0.0.1:18083/hello.php php-apache-wasm "$APACHE/php/hello.php"
    php-wasmbridge-workers http://127.0.0.1:18088/hello.php
    php-apache-workers "$APACHE/php-workers/hello.php"
    php-native "$APACHE/cgi/hello.php" php-fpm "$APACHE/fpm/hello.php"
    php-wrapped http://127.0.0.1:18085/ php-apache-wrapped "$APACHE/php-wrapped")
[ -z "$WASMTIME" ] || args+=(php-wrapped-wasmtime http://127.0.0.1:18087/)
rounds "$CGI_CONNECTIONS" "${args[@]}"

say "DokuWiki page: Apache + mod_wasm (fresh instances, warmed snapshot, workers), Apache + PHP-FPM"
rounds "$CGI_CONNECTIONS" "${DOKUWIKI_ROWS[@]}"
say "MediaWiki's Main Page: Apache + mod_wasm (fresh instances, warmed snapshot, workers), Apache + PHP-FPM"
rounds "$CGI_CONNECTIONS" "${MEDIAWIKI_ROWS[@]}"

# Averages per server.
table=$(awk '
    { n[$1] += 1; rps[$1] += $2; p50[$1] += $3; p99[$1] += $4 }
    END { for (k in n) printf "%s %.0f %.2f %.2f\n", k, rps[k] / n[k], p50[k] / n[k], p99[k] / n[k] }
' "$RESULTS_DIR/raw")
rps_of() { awk -v k="$1" '$1 == k { print $2 }' <<<"$table"; }

declare -A LABELS=(
    [wasmbridge]="wasmbridge serve hello_http.wasm"
    [wasmtime]="wasmtime serve -S cli hello_http.wasm"
    [apache-wasm]="Apache + mod_wasm, hello_http.wasm"
    [apache-static]="Apache, the same 24 bytes as a static file"
    [hello3-wasmbridge]="wasmbridge serve http3.wasm (WASI 0.3, instances reused)"
    [hello3-wasmtime]="wasmtime serve -S cli http3.wasm (WASI 0.3, instances reused)"
    [hello3-apache-wasm]="Apache + mod_wasm, http3.wasm (WASI 0.3, instances reused)"
    [python-wasmbridge]="wasmbridge serve python.wasm hello.py"
    [python-apache-wasm]="Apache + mod_wasm, python.wasm hello.py"
    [python-native]="Apache + mod_cgid, native python3 hello.py"
    [print-wasmbridge]="wasmbridge serve python.wasm print.py"
    [print-apache-wasm]="Apache + mod_wasm, python.wasm print.py"
    [print-native]="Apache + mod_cgid, native python3 print.py"
    [flask-wasmbridge]="wasmbridge serve --wsgi app:app --cgi-workers $WSGI_WORKERS python.wasm"
    [flask-gunicorn]="gunicorn --workers $WSGI_WORKERS app:app (native python3)"
    [flask-apache-wasm]="Apache + mod_wasm, WasmWSGI app:app, WasmCGIWorkers $APACHE_WSGI_WORKERS per child"
    [flask-mod-wsgi]="Apache + mod_wsgi, daemon mode, processes=$WSGI_WORKERS threads=1 (native python3)"
    [flask-apache-fresh]="Apache + mod_wasm, a fresh instance per request of a snapshot with the app imported"
    [flask-native]="Apache + mod_cgid, the app as a native CGI script (wsgiref's CGIHandler)"
    [php-wasmbridge]="wasmbridge serve php-cgi.wasm hello.php"
    [php-apache-wasm]="Apache + mod_wasm, php-cgi.wasm hello.php"
    [php-wasmbridge-workers]="wasmbridge serve --cgi-workers $PHP_WORKERS, php-cgi.wasm hello.php"
    [php-apache-workers]="Apache + mod_wasm, WasmCGIWorkers $PHP_WORKERS, php-cgi.wasm hello.php"
    [php-native]="Apache + mod_cgid, native php-cgi8.2 hello.php"
    [php-fpm]="Apache + mod_proxy_fcgi, php-fpm8.2 hello.php"
    [python-wrapped]="wasmbridge serve, python.wasm hello.py wrapped (wasmbridge wrap)"
    [python-apache-wrapped]="Apache + mod_wasm, the same wrapped component"
    [python-wrapped-wasmtime]="wasmtime serve -S cli, the same wrapped component"
    [php-wrapped]="wasmbridge serve, php-cgi.wasm hello.php wrapped (wasmbridge wrap)"
    [php-apache-wrapped]="Apache + mod_wasm, the same wrapped component"
    [php-wrapped-wasmtime]="wasmtime serve -S cli, the same wrapped component"
    [dokuwiki-apache-wasm]="Apache + mod_wasm, php-cgi.wasm, a fresh instance per request"
    [dokuwiki-apache-warm]="Apache + mod_wasm, a fresh instance per request of a snapshot with the app in OPcache"
    [dokuwiki-apache-workers]="Apache + mod_wasm, WasmCGIWorkers $PHP_WORKERS (OPcache on)"
    [dokuwiki-fpm]="Apache + mod_proxy_fcgi, php-fpm8.2 (OPcache on)"
    [mediawiki-apache-wasm]="Apache + mod_wasm, php-cgi.wasm, a fresh instance per request"
    [mediawiki-apache-warm]="Apache + mod_wasm, a fresh instance per request of a snapshot with the app in OPcache"
    [mediawiki-apache-workers]="Apache + mod_wasm, WasmCGIWorkers $PHP_WORKERS (OPcache on)"
    [mediawiki-fpm]="Apache + mod_proxy_fcgi, php-fpm8.2 (OPcache on)"
)

# row NAME BASE...: a table row with the throughput against each BASE ("–" when not measured).
row() {
    local name=$1 rps p50 p99 ratios="" base b
    shift
    read -r _ rps p50 p99 < <(awk -v k="$name" '$1 == k' <<<"$table") || return 0
    for base in "$@"; do
        b=$(rps_of "$base")
        if [ -n "$b" ]; then
            ratios+=" | $(awk -v a="$rps" -v b="$b" 'BEGIN { printf "%.2f×", a / b }')"
        else
            ratios+=" | –"
        fi
    done
    echo "| ${LABELS[$name]} | $rps | $p50 | $p99$ratios |"
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d). Numbers from different machines do not compare;"
    echo "ratios measured in the same run do."
    echo
    echo "- Machine: $cpu, $(nproc) cores, $mem, $(uname -sr); wrk runs on the same cores"
    echo "- Every row: \`wrk -t2 -d${SECONDS_PER_RUN}s --latency\`, $ROUNDS rounds, alternating with its peers; averages shown"
    echo "- Apache: $(/usr/sbin/apache2 -v | awk -F': ' '/version/ { print $2 }') with mpm_event as Debian configures it ($(awk '/^[[:space:]]*[A-Z]/ { printf "%s%s %s", sep, $1, $2; sep = ", " }' "$MPM_CONF"))"
    [ -z "$WASMTIME" ] || echo "- wasmtime: $("$WASMTIME" --version)"
    echo
    echo "## Hello component (\`guests/hello-http\`, 24 bytes), $CONNECTIONS connections"
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs wasmtime serve | vs Apache static |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in wasmbridge wasmtime apache-wasm apache-static; do row "$name" wasmtime apache-static; done
    echo
    echo "## WASI 0.3 hello component (\`guests/fixtures/http3\`, \`/\`, 33 bytes), $CONNECTIONS connections"
    echo
    echo "An async handler (\`wasi:http/handler@0.3.0\`) whose instances serve up to 128 requests, 16 at once, under both servers' defaults; Apache's static file is the one above."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs wasmtime serve | vs Apache static |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in hello3-wasmbridge hello3-wasmtime hello3-apache-wasm apache-static; do row "$name" hello3-wasmtime apache-static; done
    echo
    echo "## Python hello CGI (\`guests/fixtures/python/hello.py\`, \`cgi.FieldStorage\`), $CGI_CONNECTIONS connections"
    echo
    echo "CPython 3.11 for WASI as a wizer snapshot (\`guests/python\`) against $(/usr/bin/python3 --version) started per request by mod_cgid."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs native CGI |"
    echo "|---|---:|---:|---:|---:|"
    for name in python-wasmbridge python-apache-wasm python-native; do row "$name" python-native; done
    echo
    echo "The three-line \`print\` script (no imports) the same ways:"
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs native CGI |"
    echo "|---|---:|---:|---:|---:|"
    for name in print-wasmbridge print-apache-wasm print-native; do row "$name" print-native; done
    echo
    echo "## A Flask page (Debian's Flask 2.2, a Jinja2 template: \`guests/fixtures/python-wsgi/flaskapp\`), $CGI_CONNECTIONS connections"
    echo
    echo "python.wasm serving the app through its WSGI gateway, in long-lived workers or in a fresh instance per request of a snapshot taken with the app imported (\`wasmbridge wizer --init-func wasmbridge-warm\`), against the same app and packages on $(/usr/bin/python3 --version): gunicorn $(gunicorn --version 2>&1 | awk '{ print $NF }' | tr -d ')') with $WSGI_WORKERS sync workers, mod_wsgi $(dpkg-query -W -f '${Version}' libapache2-mod-wsgi-py3) in daemon mode with $WSGI_WORKERS processes of one thread, and a native CGI script under mod_cgid. Under Apache, wasmbridge's workers are per child: $APACHE_WSGI_WORKERS in each of the 2 children Debian's mpm_event starts."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs gunicorn | vs mod_wsgi | vs native CGI |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for name in flask-wasmbridge flask-gunicorn flask-apache-wasm flask-mod-wsgi flask-apache-fresh flask-native; do
        row "$name" flask-gunicorn flask-mod-wsgi flask-native
    done
    echo
    echo "## PHP page (\`guests/fixtures/php/hello.php\`), $CGI_CONNECTIONS connections"
    echo
    echo "php-cgi 8.2 for WASI as a wizer snapshot after startup (\`guests/php\`), a fresh instance per request (OPcache off) or $PHP_WORKERS long-lived CGI workers (OPcache on) (per Apache child) taking requests over FastCGI, against Debian's $(php-cgi8.2 -v | head -n 1 | cut -d' ' -f1-2) as a CGI program under mod_cgid and as PHP-FPM (Debian's pool defaults, OPcache on)."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs native php-cgi | vs PHP-FPM |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in php-wasmbridge php-apache-wasm php-wasmbridge-workers php-apache-workers php-native php-fpm; do
        row "$name" php-native php-fpm
    done
    echo
    echo "## Wrapped CGI apps (\`wasmbridge wrap\`), the same pages, $CGI_CONNECTIONS connections"
    echo
    echo "The interpreter and the script made into one \`wasi:http/proxy\` component by the CGI adapter (\`guests/cgi-adapter\`), served as a component; against the same program in CGI mode on the same server (measured in the rounds above; wasmtime has no CGI mode: wasmbridge serve's)."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs CGI mode | vs native CGI |"
    echo "|---|---:|---:|---:|---:|---:|"
    for lang in python php; do
        row "$lang-wrapped" "$lang-wasmbridge" "$lang-native"
        row "$lang-apache-wrapped" "$lang-apache-wasm" "$lang-native"
        row "$lang-wrapped-wasmtime" "$lang-wasmbridge" "$lang-native"
    done
    echo
    echo "## A DokuWiki page (Debian's dokuwiki, \`doku.php?id=bench\`), $CGI_CONNECTIONS connections"
    echo
    echo "The same wiki and page (rendered once, then from DokuWiki's cache), unchanged: php-cgi.wasm granted its directories at Debian's paths (a fresh instance per request, OPcache off; a fresh instance of a snapshot taken with DokuWiki's and /usr/share/php's scripts compiled into OPcache, \`wasmbridge wizer --init-func wasmbridge-warm\`; or workers, OPcache on), against PHP-FPM chrooted to the same tree with Debian's php.ini (OPcache on)."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs PHP-FPM |"
    echo "|---|---:|---:|---:|---:|"
    for name in dokuwiki-apache-wasm dokuwiki-apache-warm dokuwiki-apache-workers dokuwiki-fpm; do
        row "$name" dokuwiki-fpm
    done
    echo
    echo "## MediaWiki's Main Page (Debian's mediawiki 1.39 on SQLite, \`index.php?title=Main_Page\`), $CGI_CONNECTIONS connections"
    echo
    echo "Installed by its own \`maintenance/install.php\`, then served unchanged the same ways (the snapshot with index.php and includes/ compiled, which fill 46 of OPcache's 64 MB: $(sed -n 's/^wasmbridge-warm: //p' "$RESULTS_DIR/mediawiki-warm.log" | tail -n 1))."
    echo
    echo "| server | requests/s | p50 (ms) | p99 (ms) | vs PHP-FPM |"
    echo "|---|---:|---:|---:|---:|"
    for name in mediawiki-apache-wasm mediawiki-apache-warm mediawiki-apache-workers mediawiki-fpm; do
        row "$name" mediawiki-fpm
    done
} >"$ROOT/BENCHMARKS.md"
cat "$ROOT/BENCHMARKS.md"
