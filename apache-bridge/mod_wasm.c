/* mod_wasm: WebAssembly apps behind Apache httpd 2.4.
 *
 * A drop-in for VMware Wasm Labs' mod_wasm: the same handler name and directives, serving WASI
 * preview-1 and command programs CGI-style and wasi:http components natively, through the
 * wasmbridge host (the Rust half, linked into this module; see mod_wasm_core.h).
 *
 *   <Location /app>
 *       SetHandler    wasm-handler
 *       WasmRoot      /var/www/wasm_modules
 *       WasmModule    python3.11.wasm
 *       WasmMapDir    /python /var/www/python
 *       WasmArg       /python/prettyfy.py
 *       WasmEnableCGI On
 *   </Location>
 *
 * The host runs only in the children: its threads start in child_init, after the fork. The
 * parent checks the configuration (a bad module fails `apachectl configtest` with its line)
 * and compiles the modules into the on-disk cache in a throwaway process, so that children
 * start with compiled code.
 */

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "util_script.h"
#include "unixd.h"

#include "apr_strings.h"
#include "apr_lib.h"

#include <errno.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mod_wasm_core.h"

module AP_MODULE_DECLARE_DATA wasm_module;
APLOG_USE_MODULE(wasm);

#define UNSET -1
#define WASM_DEFAULT_MAX_MEMORY ((apr_off_t)512 * 1024 * 1024)
#define WASM_DEFAULT_TIMEOUT apr_time_from_sec(60)
#define BODY_CHUNK 65536
/* How often a request whose guest has nothing to say checks that its client is still there. */
#define CLIENT_CHECK_MS 200

typedef struct {
    const char *root;              /* WasmRoot */
    const char *module;            /* WasmModule, as written */
    const char *module_at;         /* "file:line" of WasmModule, for messages */
    apr_array_header_t *dirs;      /* "host::guest", from WasmDir and WasmMapDir */
    apr_array_header_t *envs;      /* "NAME=VALUE" */
    apr_array_header_t *args;      /* WasmArg */
    int cgi;                       /* WasmEnableCGI */
    int map_cgi_filenames;         /* WasmMapCGIFileNames */
    int cgi_script_arg;            /* WasmCGIScriptArg */
    apr_off_t max_memory;          /* WasmMaxMemory */
    apr_interval_time_t timeout;   /* WasmTimeout */
    int cgi_workers;               /* WasmCGIWorkers */
    int instance_reuse;            /* WasmMaxInstanceReuse */
    int instance_concurrency;      /* WasmMaxInstanceConcurrentReuse */
    apr_interval_time_t idle_instance_timeout; /* WasmIdleInstanceTimeout */
    const char *wsgi;              /* WasmWSGI: MODULE:CALLABLE */
    const char *wsgi_at;           /* "file:line" of WasmWSGI, for messages */
    const char *wsgi_mount;        /* the <Location> WasmWSGI is in: the app's SCRIPT_NAME */
    apr_array_header_t *python_path; /* WasmPythonPath: guest directories */
    apr_array_header_t *exts;      /* WasmCGIExt: script extensions, without the dot */
    apr_array_header_t *outbound;  /* WasmAllowedOutboundHosts: SCHEME://HOST[:PORT] rules */
} wasm_dir_conf;

typedef struct {
    const char *cache_dir;         /* WasmCacheDir; "off" turns the cache off */
    const char *engine_options;    /* WasmEngineOptions, comma-separated; NULL: none */
} wasm_server_conf;

/* The app of every configured section, as a request there sees it (merged with what
 * encloses it), found by check_config: the precompile step compiles them, and each child loads
 * them as it starts. Set at configuration time only. */
static apr_array_header_t *configured_apps;

static server_rec *main_server;

/* The user that fills the compile cache (the parent's, root when Apache starts as root): the
 * children trust entries of this user only. */
static uid_t cache_owner;

/* ---- configuration ---------------------------------------------------------------------- */

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    wasm_dir_conf *conf = apr_pcalloc(p, sizeof *conf);
    conf->dirs = apr_array_make(p, 2, sizeof(const char *));
    conf->envs = apr_array_make(p, 2, sizeof(const char *));
    conf->args = apr_array_make(p, 2, sizeof(const char *));
    conf->cgi = UNSET;
    conf->map_cgi_filenames = UNSET;
    conf->cgi_script_arg = UNSET;
    conf->max_memory = UNSET;
    conf->timeout = UNSET;
    conf->cgi_workers = UNSET;
    conf->instance_reuse = UNSET;
    conf->instance_concurrency = UNSET;
    conf->idle_instance_timeout = UNSET;
    conf->exts = apr_array_make(p, 1, sizeof(const char *));
    conf->python_path = apr_array_make(p, 1, sizeof(const char *));
    conf->outbound = apr_array_make(p, 1, sizeof(const char *));
    return conf;
}

/* A nested section inherits what it does not set: directories and variables add up, the
 * arguments are replaced as a whole. */
static void *merge_dir_conf(apr_pool_t *p, void *base_, void *add_)
{
    wasm_dir_conf *base = base_, *add = add_;
    wasm_dir_conf *conf = apr_pcalloc(p, sizeof *conf);
    conf->root = add->root ? add->root : base->root;
    conf->module = add->module ? add->module : base->module;
    conf->module_at = add->module ? add->module_at : base->module_at;
    conf->dirs = apr_array_append(p, base->dirs, add->dirs);
    conf->envs = apr_array_append(p, base->envs, add->envs);
    conf->args = add->args->nelts ? add->args : base->args;
    conf->cgi = add->cgi != UNSET ? add->cgi : base->cgi;
    conf->map_cgi_filenames =
        add->map_cgi_filenames != UNSET ? add->map_cgi_filenames : base->map_cgi_filenames;
    conf->cgi_script_arg =
        add->cgi_script_arg != UNSET ? add->cgi_script_arg : base->cgi_script_arg;
    conf->max_memory = add->max_memory != UNSET ? add->max_memory : base->max_memory;
    conf->timeout = add->timeout != UNSET ? add->timeout : base->timeout;
    conf->cgi_workers = add->cgi_workers != UNSET ? add->cgi_workers : base->cgi_workers;
    conf->instance_reuse =
        add->instance_reuse != UNSET ? add->instance_reuse : base->instance_reuse;
    conf->instance_concurrency = add->instance_concurrency != UNSET
        ? add->instance_concurrency : base->instance_concurrency;
    conf->idle_instance_timeout = add->idle_instance_timeout != UNSET
        ? add->idle_instance_timeout : base->idle_instance_timeout;
    conf->exts = add->exts->nelts ? add->exts : base->exts;
    conf->wsgi = add->wsgi ? add->wsgi : base->wsgi;
    conf->wsgi_at = add->wsgi ? add->wsgi_at : base->wsgi_at;
    conf->wsgi_mount = add->wsgi ? add->wsgi_mount : base->wsgi_mount;
    conf->python_path = add->python_path->nelts ? add->python_path : base->python_path;
    conf->outbound = add->outbound->nelts ? add->outbound : base->outbound;
    return conf;
}

static void *create_server_conf(apr_pool_t *p, server_rec *s)
{
    return apr_pcalloc(p, sizeof(wasm_server_conf));
}

/* The module's path: absolute, or relative to WasmRoot. NULL while that cannot be known. */
static const char *module_path(apr_pool_t *p, const wasm_dir_conf *conf)
{
    if (!conf->module) {
        return NULL;
    }
    if (conf->module[0] == '/') {
        return conf->module;
    }
    if (!conf->root) {
        return NULL;
    }
    return apr_pstrcat(p, conf->root, "/", conf->module, NULL);
}

/* How wb_inspect is to check a section's module: 2 as a CGI worker, 1 as a CGI program, 3 as
 * a component whose instances serve many requests (WASI 0.3), 0 by what it exports. */
static int inspect_as(const wasm_dir_conf *conf)
{
    return conf->cgi_workers > 0 ? 2 : conf->cgi == 1 ? 1 : conf->instance_reuse > 1 ? 3 : 0;
}

/* Checks the module as far as the section says yet; called by every directive it depends on,
 * so that the error names the line that made it wrong. */
static const char *check_module(cmd_parms *cmd, const wasm_dir_conf *conf)
{
    const char *path = module_path(cmd->temp_pool, conf);
    char error[1024];
    if (path && wb_inspect(path, inspect_as(conf), error, sizeof error) != 0) {
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, error);
    }
    return NULL;
}

static const char *check_dir(cmd_parms *cmd, const char *path)
{
    apr_finfo_t info;
    if (path[0] != '/') {
        return apr_psprintf(cmd->pool, "%s: `%s` is not an absolute path", cmd->cmd->name, path);
    }
    if (apr_stat(&info, path, APR_FINFO_TYPE, cmd->temp_pool) != APR_SUCCESS ||
        info.filetype != APR_DIR) {
        return apr_psprintf(cmd->pool, "%s: `%s` is not a directory", cmd->cmd->name, path);
    }
    return NULL;
}

static const char *set_root(cmd_parms *cmd, void *conf_, const char *root)
{
    wasm_dir_conf *conf = conf_;
    const char *error = check_dir(cmd, root);
    if (error) {
        return error;
    }
    conf->root = root;
    return check_module(cmd, conf);
}

static const char *set_module(cmd_parms *cmd, void *conf_, const char *module)
{
    wasm_dir_conf *conf = conf_;
    conf->module = module;
    conf->module_at = apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename,
                                   cmd->directive->line_num);
    return check_module(cmd, conf);
}

static const char *add_dir(cmd_parms *cmd, void *conf_, const char *dir)
{
    wasm_dir_conf *conf = conf_;
    const char *error = check_dir(cmd, dir);
    if (error) {
        return error;
    }
    *(const char **)apr_array_push(conf->dirs) = apr_pstrcat(cmd->pool, dir, "::", dir, NULL);
    return NULL;
}

/* WasmMapDir GUEST HOST [ro], in mod_wasm's order; `ro` grants the directory read-only. */
static const char *map_dir(cmd_parms *cmd, void *conf_, const char *guest, const char *host,
                           const char *mode)
{
    wasm_dir_conf *conf = conf_;
    const char *error = check_dir(cmd, host);
    if (error) {
        return error;
    }
    if (guest[0] != '/') {
        return apr_psprintf(cmd->pool, "WasmMapDir: the guest path `%s` must be absolute", guest);
    }
    if (mode && strcasecmp(mode, "ro")) {
        return apr_psprintf(cmd->pool, "WasmMapDir: `%s` is not a mode; `ro` grants read-only",
                            mode);
    }
    *(const char **)apr_array_push(conf->dirs) =
        apr_pstrcat(cmd->pool, host, "::", guest, mode ? "::ro" : "", NULL);
    return NULL;
}

static const char *add_env(cmd_parms *cmd, void *conf_, const char *name, const char *value)
{
    wasm_dir_conf *conf = conf_;
    if (!*name || strchr(name, '=')) {
        return apr_psprintf(cmd->pool, "WasmEnv: `%s` is not a variable name", name);
    }
    *(const char **)apr_array_push(conf->envs) = apr_pstrcat(cmd->pool, name, "=", value, NULL);
    return NULL;
}

static const char *add_arg(cmd_parms *cmd, void *conf_, const char *arg)
{
    wasm_dir_conf *conf = conf_;
    *(const char **)apr_array_push(conf->args) = arg;
    return NULL;
}

static const char *set_cgi(cmd_parms *cmd, void *conf_, int on)
{
    wasm_dir_conf *conf = conf_;
    conf->cgi = on;
    return check_module(cmd, conf);
}

static const char *set_map_cgi_filenames(cmd_parms *cmd, void *conf_, int on)
{
    ((wasm_dir_conf *)conf_)->map_cgi_filenames = on;
    return NULL;
}

/* WasmCGIScriptArg On: the script WasmMapCGIFileNames mapped is also the module's last
 * argument, for an interpreter that takes its script from argv (python.wasm), so that one
 * section serves every script of a directory, as `--cgi-docroot` does. */
static const char *set_cgi_script_arg(cmd_parms *cmd, void *conf_, int on)
{
    ((wasm_dir_conf *)conf_)->cgi_script_arg = on;
    return NULL;
}

/* WasmMaxMemory 256M: linear memory per request, in bytes with an optional K, M or G, up to
 * what a 32-bit memory can hold (4G). */
static const char *set_max_memory(cmd_parms *cmd, void *conf_, const char *value)
{
    char *end;
    int shift = 0;
    apr_int64_t n;
    errno = 0;
    n = apr_strtoi64(value, &end, 10);
    switch (apr_tolower(*end)) {
    case 'g': shift = 30; end++; break;
    case 'm': shift = 20; end++; break;
    case 'k': shift = 10; end++; break;
    }
    if (errno || end == value || *end || n <= 0 || n > ((apr_int64_t)4 << 30) >> shift) {
        return apr_psprintf(cmd->pool,
                            "WasmMaxMemory: `%s` is not a size from 1 byte to 4G (a number of "
                            "bytes, or with K, M or G)", value);
    }
    ((wasm_dir_conf *)conf_)->max_memory = n << shift;
    return NULL;
}

/* WasmTimeout 30 (seconds) or 500ms: the wall-clock deadline of a request, body included. */
static const char *set_timeout(cmd_parms *cmd, void *conf_, const char *value)
{
    apr_interval_time_t timeout;
    if (ap_timeout_parameter_parse(value, &timeout, "s") != APR_SUCCESS || timeout <= 0) {
        return apr_psprintf(cmd->pool,
                            "WasmTimeout: `%s` is not a duration (seconds, or with ms, s, mi, h)",
                            value);
    }
    ((wasm_dir_conf *)conf_)->timeout = timeout;
    return NULL;
}

/* WasmCGIWorkers 4: serve CGI requests with up to this many long-lived instances per child,
 * which take one request after another over FastCGI on stdin and stdout (as php-cgi from
 * guests/php does); 0, the default, starts a fresh instance for every request. */
static const char *set_cgi_workers(cmd_parms *cmd, void *conf_, const char *value)
{
    char *end;
    apr_int64_t n = apr_strtoi64(value, &end, 10);
    if (*end || end == value || n < 0 || n > 10000) {
        return apr_psprintf(cmd->pool, "WasmCGIWorkers: `%s` is not a number of workers "
                            "(0 to 10000)", value);
    }
    ((wasm_dir_conf *)conf_)->cgi_workers = (int)n;
    return check_module(cmd, conf_);
}

/* WasmMaxInstanceReuse 128 and WasmMaxInstanceConcurrentReuse 16: how many requests one
 * instance of a WASI 0.3 component serves in all and at once (`wasmtime serve`'s
 * --max-instance-reuse-count and --max-instance-concurrent-reuse-count, with their defaults).
 * WASI 0.2 components and CGI programs get a fresh instance for every request. */
static const char *set_instance_count(cmd_parms *cmd, void *conf_, const char *value)
{
    wasm_dir_conf *conf = conf_;
    char *end;
    apr_int64_t n = apr_strtoi64(value, &end, 10);
    if (*end || end == value || n < 1 || n > 1000000) {
        return apr_psprintf(cmd->pool, "%s: `%s` is not a number of requests (1 to 1000000)",
                            cmd->directive->directive, value);
    }
    if (cmd->info) {
        conf->instance_concurrency = (int)n;
        return NULL;
    }
    conf->instance_reuse = (int)n;
    return check_module(cmd, conf);
}

/* WasmIdleInstanceTimeout 1 (seconds) or 500ms: how long an idle instance of a WASI 0.3
 * component waits for its next request (`--idle-instance-timeout`; default 1 second). */
static const char *set_idle_instance_timeout(cmd_parms *cmd, void *conf_, const char *value)
{
    apr_interval_time_t timeout;
    if (ap_timeout_parameter_parse(value, &timeout, "s") != APR_SUCCESS || timeout < 0) {
        return apr_psprintf(cmd->pool, "WasmIdleInstanceTimeout: `%s` is not a duration "
                            "(seconds, or with ms, s, mi, h)", value);
    }
    ((wasm_dir_conf *)conf_)->idle_instance_timeout = timeout;
    return NULL;
}

/* WasmCGIExt php phtml: with WasmMapCGIFileNames, only scripts with these extensions run (by
 * default .php for PHP, .py for Python, else .cgi, by the module's name); other files, and
 * anything through a dot-file or dot-directory, are answered 404. */
static const char *add_cgi_ext(cmd_parms *cmd, void *conf_, const char *ext)
{
    wasm_dir_conf *conf = conf_;
    const char *c;
    if (*ext == '.') {
        ext++;
    }
    for (c = ext; *c; c++) {
        if (!apr_isalnum(*c) && *c != '_' && *c != '-') {
            break;
        }
    }
    if (!*ext || *c) {
        return apr_psprintf(cmd->pool, "WasmCGIExt: `%s` is not a file extension", ext);
    }
    *(const char **)apr_array_push(conf->exts) = ext;
    return NULL;
}

/* WasmWSGI MODULE:CALLABLE: serve a WSGI app with python.wasm (WasmModule) through its
 * gateway, in CGI workers (WasmCGIWorkers; default one per CPU, 0 for a fresh instance per
 * request). In a <Location>, its path is where the app is mounted (SCRIPT_NAME). */
static const char *set_wsgi(cmd_parms *cmd, void *conf_, const char *app)
{
    wasm_dir_conf *conf = conf_;
    const ap_directive_t *section = cmd->directive->parent;
    const char *c;
    /* WasmWSGI off: a section inside one that serves a WSGI app serves its module as it is. */
    if (!strcasecmp(app, "off")) {
        conf->wsgi = "";
        conf->wsgi_at = NULL;
        conf->wsgi_mount = NULL;
        return NULL;
    }
    for (c = app; *c; c++) {
        if (!apr_isalnum(*c) && *c != '_' && *c != '.' && *c != ':') {
            break;
        }
    }
    if (*c || *app == ':' || *app == '.') {
        return apr_psprintf(cmd->pool, "WasmWSGI: `%s` is not MODULE:CALLABLE", app);
    }
    conf->wsgi = app;
    conf->wsgi_at = apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename,
                                 cmd->directive->line_num);
    conf->wsgi_mount = NULL;
    if (section && !strcasecmp(section->directive, "<Location") && cmd->path) {
        conf->wsgi_mount = cmd->path;
    }
    conf->cgi = 1;
    return NULL;
}

/* Whether the section serves a WSGI app (WasmWSGI, and not WasmWSGI off, which leaves ""). */
static int serves_wsgi(const wasm_dir_conf *conf)
{
    return conf->wsgi && *conf->wsgi;
}

/* WasmPythonPath /app /app/lib: guest directories python.wasm imports from (PYTHONPATH). */
static const char *add_python_path(cmd_parms *cmd, void *conf_, const char *dir)
{
    *(const char **)apr_array_push(((wasm_dir_conf *)conf_)->python_path) = dir;
    return NULL;
}

/* WasmAllowedOutboundHosts https://api.example.com ...: hosts the guest's outgoing HTTP
 * requests may reach, as Spin's allowed_outbound_hosts rules name them. */
static const char *add_outbound_host(cmd_parms *cmd, void *conf_, const char *rule)
{
    char reason[1024];
    if (wb_check_outbound_host(rule, reason, sizeof reason) != 0) {
        return apr_psprintf(cmd->pool, "WasmAllowedOutboundHosts: %s", reason);
    }
    *(const char **)apr_array_push(((wasm_dir_conf *)conf_)->outbound) = rule;
    return NULL;
}

static const char *set_cache_dir(cmd_parms *cmd, void *dummy, const char *dir)
{
    wasm_server_conf *conf = ap_get_module_config(cmd->server->module_config, &wasm_module);
    const char *error = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (error) {
        return error;
    }
    conf->cache_dir = dir;
    return NULL;
}

/* WasmEngineOptions pooling-pagemap-scan=n ...: wasmtime's `-O` options for the children's
 * engine, as `wasmtime serve -O` takes them. Checked here, so that configtest names a bad one. */
static const char *add_engine_option(cmd_parms *cmd, void *dummy, const char *option)
{
    wasm_server_conf *conf = ap_get_module_config(cmd->server->module_config, &wasm_module);
    const char *error = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char reason[1024];
    if (error) {
        return error;
    }
    if (wb_check_engine_options(option, reason, sizeof reason) != 0) {
        return apr_psprintf(cmd->pool, "WasmEngineOptions: %s", reason);
    }
    conf->engine_options = conf->engine_options
        ? apr_pstrcat(cmd->pool, conf->engine_options, ",", option, NULL)
        : option;
    return NULL;
}

/* Every directive that says what a module is or what it may reach is for the server's own
 * configuration only (RSRC_CONF|ACCESS_CONF, as mod_alias and mod_cgi scope theirs), never for
 * .htaccess: a file that a site's author can write must not widen the sandbox. */
#define WASM_CONF (RSRC_CONF | ACCESS_CONF)

static const command_rec wasm_cmds[] = {
    AP_INIT_TAKE1("WasmRoot", set_root, NULL, WASM_CONF,
                  "the directory that relative WasmModule paths start from"),
    AP_INIT_TAKE1("WasmModule", set_module, NULL, WASM_CONF,
                  "the .wasm file to serve: a wasi:http component or a CGI program"),
    AP_INIT_ITERATE("WasmDir", add_dir, NULL, WASM_CONF,
                    "a host directory the module may use, under the same path"),
    AP_INIT_TAKE23("WasmMapDir", map_dir, NULL, WASM_CONF,
                  "a host directory the module may use, as GUEST_PATH HOST_PATH"),
    AP_INIT_TAKE2("WasmEnv", add_env, NULL, WASM_CONF,
                  "an environment variable for the module: NAME VALUE"),
    AP_INIT_ITERATE("WasmArg", add_arg, NULL, WASM_CONF,
                    "an argument for the module (argv[1], ...)"),
    AP_INIT_FLAG("WasmEnableCGI", set_cgi, NULL, WASM_CONF,
                 "run the module as a CGI program"),
    AP_INIT_FLAG("WasmMapCGIFileNames", set_map_cgi_filenames, NULL, WASM_CONF,
                 "give SCRIPT_FILENAME as the module sees it, through WasmMapDir"),
    AP_INIT_FLAG("WasmCGIScriptArg", set_cgi_script_arg, NULL, WASM_CONF,
                 "with WasmMapCGIFileNames, give the mapped script as the module's last "
                 "argument too (an interpreter that reads its script from argv)"),
    AP_INIT_ITERATE("WasmCGIExt", add_cgi_ext, NULL, WASM_CONF,
                    "with WasmMapCGIFileNames, the extensions of the scripts that run"),
    AP_INIT_TAKE1("WasmMaxMemory", set_max_memory, NULL, WASM_CONF,
                  "linear memory per request (default 512M)"),
    AP_INIT_TAKE1("WasmTimeout", set_timeout, NULL, WASM_CONF,
                  "wall-clock deadline per request (default 60 seconds)"),
    AP_INIT_TAKE1("WasmCGIWorkers", set_cgi_workers, NULL, WASM_CONF,
                  "long-lived instances per child that serve CGI requests over FastCGI "
                  "(default 0: a fresh instance per request)"),
    AP_INIT_TAKE1("WasmMaxInstanceReuse", set_instance_count, NULL, WASM_CONF,
                  "requests one instance of a WASI 0.3 component serves (default 128)"),
    AP_INIT_TAKE1("WasmMaxInstanceConcurrentReuse", set_instance_count, (void *)1, WASM_CONF,
                  "requests one instance of a WASI 0.3 component serves at once (default 16)"),
    AP_INIT_TAKE1("WasmIdleInstanceTimeout", set_idle_instance_timeout, NULL, WASM_CONF,
                  "how long an idle instance of a WASI 0.3 component is kept (default 1 second)"),
    AP_INIT_TAKE1("WasmWSGI", set_wsgi, NULL, WASM_CONF,
                  "a WSGI app (MODULE:CALLABLE) for python.wasm to serve, or off"),
    AP_INIT_ITERATE("WasmAllowedOutboundHosts", add_outbound_host, NULL, WASM_CONF,
                    "hosts outgoing HTTP requests may reach: https://api.example.com, "
                    "http://*.example.com:8080, *://example.com:* (wildcards never reach "
                    "loopback or private addresses)"),
    AP_INIT_ITERATE("WasmPythonPath", add_python_path, NULL, WASM_CONF,
                    "guest directories python.wasm imports modules from (PYTHONPATH)"),
    AP_INIT_TAKE1("WasmCacheDir", set_cache_dir, NULL, RSRC_CONF,
                  "where compiled modules are kept (default: wasmbridge-cache in the "
                  "runtime directory); off turns the cache off"),
    AP_INIT_ITERATE("WasmEngineOptions", add_engine_option, NULL, RSRC_CONF,
                    "wasmtime's -O options for the engine, such as pooling-pagemap-scan=n"),
    {NULL}
};

/* The app as the host sees it: one `key value` per line. Equal descriptions share one loaded
 * app in a child. */
static const char *describe(apr_pool_t *p, const wasm_dir_conf *conf)
{
    const char *text = apr_pstrcat(p, "module ", module_path(p, conf), "\n", NULL);
    int i;
    for (i = 0; i < conf->dirs->nelts; i++) {
        text = apr_pstrcat(p, text, "dir ", APR_ARRAY_IDX(conf->dirs, i, const char *), "\n",
                           NULL);
    }
    for (i = 0; i < conf->envs->nelts; i++) {
        text = apr_pstrcat(p, text, "env ", APR_ARRAY_IDX(conf->envs, i, const char *), "\n",
                           NULL);
    }
    for (i = 0; i < conf->args->nelts; i++) {
        text = apr_pstrcat(p, text, "arg ", APR_ARRAY_IDX(conf->args, i, const char *), "\n",
                           NULL);
    }
    for (i = 0; i < conf->exts->nelts; i++) {
        text = apr_pstrcat(p, text, "ext ", APR_ARRAY_IDX(conf->exts, i, const char *), "\n",
                           NULL);
    }
    if (conf->cgi_script_arg == 1) {
        text = apr_pstrcat(p, text, "script-arg on\n", NULL);
    }
    for (i = 0; i < conf->outbound->nelts; i++) {
        text = apr_pstrcat(p, text, "outbound ", APR_ARRAY_IDX(conf->outbound, i, const char *),
                           "\n", NULL);
    }
    for (i = 0; i < conf->python_path->nelts; i++) {
        text = apr_pstrcat(p, text, "python-path ",
                           APR_ARRAY_IDX(conf->python_path, i, const char *), "\n", NULL);
    }
    if (conf->instance_reuse != UNSET) {
        text = apr_psprintf(p, "%sinstance-reuse %d\n", text, conf->instance_reuse);
    }
    if (conf->instance_concurrency != UNSET) {
        text = apr_psprintf(p, "%sinstance-concurrent-reuse %d\n", text,
                            conf->instance_concurrency);
    }
    if (conf->idle_instance_timeout != UNSET) {
        text = apr_psprintf(p, "%sidle-instance-timeout-ms %" APR_TIME_T_FMT "\n", text,
                            apr_time_as_msec(conf->idle_instance_timeout));
    }
    if (serves_wsgi(conf)) {
        text = apr_pstrcat(p, text, "wsgi ", conf->wsgi, "\n", NULL);
        if (conf->wsgi_mount) {
            text = apr_pstrcat(p, text, "env WASMBRIDGE_WSGI_MOUNT=", conf->wsgi_mount, "\n",
                               NULL);
        }
    }
    return apr_psprintf(p, "%scgi %s\nmax-memory %" APR_OFF_T_FMT "\ntimeout-ms %" APR_TIME_T_FMT
                        "\ncgi-workers %s\n", text, conf->cgi == 1 ? "on" : "auto",
                        conf->max_memory != UNSET ? conf->max_memory : WASM_DEFAULT_MAX_MEMORY,
                        apr_time_as_msec(conf->timeout != UNSET ? conf->timeout
                                                                : WASM_DEFAULT_TIMEOUT),
                        conf->cgi_workers != UNSET ? apr_itoa(p, conf->cgi_workers)
                        : serves_wsgi(conf) ? "auto" : "0");
}

/* ---- start-up --------------------------------------------------------------------------- */

static int wasm_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    configured_apps = apr_array_make(pconf, 8, sizeof(const char *));
    return OK;
}

/* Whether `prefix` is `path` or a parent of it, segment-wise. */
static int encloses(const char *prefix, const char *path)
{
    size_t len = strlen(prefix);
    while (len > 1 && prefix[len - 1] == '/') {
        len--;
    }
    return !strncmp(prefix, path, len) && (path[len] == '/' || !path[len] || len == 1);
}

/* A section's configuration as a request there sees it: the server's, then every section of
 * the same kind that encloses it (in configuration order, as Apache's walks merge them), then
 * its own. */
static wasm_dir_conf *merged_conf(apr_pool_t *p, server_rec *s, apr_array_header_t *sections,
                                  int index)
{
    ap_conf_vector_t *own = APR_ARRAY_IDX(sections, index, ap_conf_vector_t *);
    core_dir_config *own_core = ap_get_core_module_config(own);
    wasm_dir_conf *conf = ap_get_module_config(s->lookup_defaults, &wasm_module);
    int i;
    for (i = 0; i < sections->nelts; i++) {
        ap_conf_vector_t *other = APR_ARRAY_IDX(sections, i, ap_conf_vector_t *);
        core_dir_config *other_core = ap_get_core_module_config(other);
        wasm_dir_conf *other_conf = ap_get_module_config(other, &wasm_module);
        if (!other_conf || !other_core->d) {
            continue;
        }
        if (i == index || (!other_core->r && !own_core->r && own_core->d &&
                           encloses(other_core->d, own_core->d))) {
            conf = merge_dir_conf(p, conf, other_conf);
        }
    }
    return conf;
}

/* Every WasmRoot of a server, for a relative WasmModule whose root comes from a section of
 * another kind (a <Directory> around the files a <Location> maps to). */
static void find_roots(apr_array_header_t *roots, apr_array_header_t *sections)
{
    int i;
    for (i = 0; sections && i < sections->nelts; i++) {
        wasm_dir_conf *conf =
            ap_get_module_config(APR_ARRAY_IDX(sections, i, ap_conf_vector_t *), &wasm_module);
        if (conf && conf->root) {
            *(const char **)apr_array_push(roots) = conf->root;
        }
    }
}

static const char *cache_dir(apr_pool_t *p, server_rec *s);
static const char *engine_options(server_rec *s);

/* Why the last check_start failed. */
static char check_error[8192];

/* Runs what only running the app can check (a WSGI app imports: wb_check_start), in a process
 * of its own, as the precompile step compiles: running a guest starts threads and installs
 * signal handlers that the parent must not have when it forks the children. The module is
 * compiled into the cache first, as precompile would, and the app runs as User, as its
 * requests will: what it writes at import belongs to User. */
static int check_start(apr_pool_t *p, server_rec *s, const char *description)
{
    const char *dir = cache_dir(p, s);
    int fds[2], status;
    size_t got = 0;
    ssize_t n;
    pid_t pid;
    check_error[0] = 0;
    if (pipe(fds) != 0) {
        apr_snprintf(check_error, sizeof check_error, "cannot check the app: pipe: %s",
                     strerror(errno));
        return !OK;
    }
    pid = fork();
    if (pid == 0) {
        char note[2048], error[sizeof check_error] = "";
        uid_t owner = geteuid();
        int failed;
        close(fds[0]);
        if (dir && wb_cache_prepare(dir, ap_unixd_config.user_id, note, error, sizeof error)) {
            dir = NULL;
        }
        failed = wb_precompile(&description, 1, dir, engine_options(s), error, sizeof error);
        if (!failed && owner == 0 &&
            (setgid(ap_unixd_config.group_id) != 0 ||
             initgroups(ap_unixd_config.user_name, ap_unixd_config.group_id) != 0 ||
             setuid(ap_unixd_config.user_id) != 0)) {
            apr_snprintf(error, sizeof error, "cannot check the app as User %s: %s",
                         ap_unixd_config.user_name, strerror(errno));
            failed = 1;
        }
        if (!failed) {
            failed = wb_check_start(description, dir, owner, engine_options(s), error,
                                    sizeof error);
        }
        if (failed && write(fds[1], error, strlen(error)) < 0) {
            _exit(2);
        }
        _exit(failed ? 1 : 0);
    }
    close(fds[1]);
    while (pid > 0 && got < sizeof check_error - 1 &&
           (n = read(fds[0], check_error + got, sizeof check_error - 1 - got)) > 0) {
        got += n;
    }
    check_error[got] = 0;
    close(fds[0]);
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        if (!got) {
            apr_snprintf(check_error, sizeof check_error, "the check of the app failed");
        }
        return !OK;
    }
    return OK;
}

/* Checks a section's app as merged, and records it for the precompile step. */
static int check_app(apr_pool_t *p, server_rec *s, wasm_dir_conf *conf,
                     apr_array_header_t *roots)
{
    char error[1024];
    const char *description;
    int i, found = 0;
    if (!conf->module) {
        return OK;
    }
    if (conf->cgi_script_arg == 1 && conf->map_cgi_filenames != 1) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "WasmModule %s (%s): WasmCGIScriptArg On needs WasmMapCGIFileNames On "
                     "(the argument is the script as the module sees it)",
                     conf->module, conf->module_at);
        return !OK;
    }
    if (!module_path(p, conf)) {
        /* Relative with no WasmRoot around it: fine if some WasmRoot of this server holds it,
         * as it will at request time. */
        for (i = 0; i < roots->nelts; i++) {
            wasm_dir_conf *rooted = apr_pmemdup(p, conf, sizeof *conf);
            rooted->root = APR_ARRAY_IDX(roots, i, const char *);
            if (wb_inspect(module_path(p, rooted), inspect_as(conf), error, sizeof error) == 0) {
                *(const char **)apr_array_push(configured_apps) = describe(p, rooted);
                found = 1;
            }
        }
        if (!found) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                         "WasmModule %s (%s): a relative path, but no WasmRoot of this server "
                         "holds it", conf->module, conf->module_at);
            return !OK;
        }
        return OK;
    }
    if (wb_inspect(module_path(p, conf), inspect_as(conf), error, sizeof error) != 0) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s, "WasmModule (%s): %s",
                     conf->module_at, error);
        return !OK;
    }
    description = describe(p, conf);
    if (serves_wsgi(conf) && conf->args->nelts) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "WasmWSGI %s (%s): python.wasm takes no WasmArg beside it", conf->wsgi,
                     conf->wsgi_at);
        return !OK;
    }
    /* A WSGI app that does not import fails here, configtest included, with its traceback. */
    if (serves_wsgi(conf) && check_start(p, s, description) != OK) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s, "WasmWSGI %s (%s): %s",
                     conf->wsgi, conf->wsgi_at, check_error);
        return !OK;
    }
    *(const char **)apr_array_push(configured_apps) = description;
    return OK;
}

/* The <If>, <ElseIf> and <Else> blocks in a section (`core`, whose app is `conf`), and in
 * those: each one's app is its own directives merged over the section's. */
static int check_conditional_apps(apr_pool_t *p, server_rec *s, wasm_dir_conf *conf,
                                  core_dir_config *core, apr_array_header_t *roots)
{
    int i, failed = 0;
    for (i = 0; core->sec_if && i < core->sec_if->nelts; i++) {
        ap_conf_vector_t *block = APR_ARRAY_IDX(core->sec_if, i, ap_conf_vector_t *);
        wasm_dir_conf *own = ap_get_module_config(block, &wasm_module);
        wasm_dir_conf *merged = own ? merge_dir_conf(p, conf, own) : conf;
        if (own) {
            failed |= check_app(p, s, merged, roots) != OK;
        }
        failed |= check_conditional_apps(p, s, merged, ap_get_core_module_config(block), roots);
    }
    return failed;
}

/* Checks every section's app as requests will see it, merged with the sections around it:
 * a WasmModule whose WasmRoot comes from another section is checked too (configtest as well
 * as start-up). */
static int wasm_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                             server_rec *main)
{
    server_rec *s;
    int failed = 0;
    for (s = main; s; s = s->next) {
        core_server_config *core = ap_get_core_module_config(s->module_config);
        apr_array_header_t *kinds[] = {core->sec_dir, core->sec_url};
        apr_array_header_t *roots = apr_array_make(ptemp, 4, sizeof(const char *));
        wasm_dir_conf *server = ap_get_module_config(s->lookup_defaults, &wasm_module);
        int k, i, f;
        if (server->root) {
            *(const char **)apr_array_push(roots) = server->root;
        }
        for (k = 0; k < 2; k++) {
            find_roots(roots, kinds[k]);
        }
        failed |= check_app(pconf, s, server, roots) != OK;
        failed |= check_conditional_apps(pconf, s, server,
                                         ap_get_core_module_config(s->lookup_defaults), roots);
        for (k = 0; k < 2; k++) {
            for (i = 0; kinds[k] && i < kinds[k]->nelts; i++) {
                ap_conf_vector_t *section = APR_ARRAY_IDX(kinds[k], i, ap_conf_vector_t *);
                core_dir_config *section_core = ap_get_core_module_config(section);
                wasm_dir_conf *conf = merged_conf(pconf, s, kinds[k], i);
                /* (A section without directives of ours may still hold blocks with some.) */
                if (ap_get_module_config(section, &wasm_module)) {
                    failed |= check_app(pconf, s, conf, roots) != OK;
                }
                failed |= check_conditional_apps(pconf, s, conf, section_core, roots);
                /* <Files> inside a <Directory>. */
                for (f = 0; section_core->sec_file && f < section_core->sec_file->nelts; f++) {
                    ap_conf_vector_t *block =
                        APR_ARRAY_IDX(section_core->sec_file, f, ap_conf_vector_t *);
                    wasm_dir_conf *files = ap_get_module_config(block, &wasm_module);
                    wasm_dir_conf *merged = files ? merge_dir_conf(pconf, conf, files) : conf;
                    if (files) {
                        failed |= check_app(pconf, s, merged, roots) != OK;
                    }
                    failed |= check_conditional_apps(pconf, s, merged,
                                                     ap_get_core_module_config(block), roots);
                }
            }
        }
    }
    return failed ? !OK : OK;
}

static const char *cache_dir(apr_pool_t *p, server_rec *s)
{
    wasm_server_conf *conf = ap_get_module_config(s->module_config, &wasm_module);
    if (conf->cache_dir && !strcasecmp(conf->cache_dir, "off")) {
        return NULL;
    }
    return conf->cache_dir ? conf->cache_dir : ap_runtime_dir_relative(p, "wasmbridge-cache");
}

static const char *engine_options(server_rec *s)
{
    wasm_server_conf *conf = ap_get_module_config(s->module_config, &wasm_module);
    return conf->engine_options;
}

/* Compiles every configured module into the cache, in a process of its own: compiling starts
 * threads, and the parent must have none when it forks the children. */
static int precompile(apr_pool_t *p, server_rec *s, const char *dir)
{
    apr_array_header_t *descriptions = configured_apps;
    char error[2048] = "";
    int status;
    pid_t pid;
    if (!descriptions->nelts) {
        return OK;
    }
    pid = fork();
    if (pid == 0) {
        int failed = wb_precompile((const char *const *)descriptions->elts,
                                   descriptions->nelts, dir, engine_options(s), error,
                                   sizeof error);
        if (failed) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "%s", error);
        }
        _exit(failed ? 1 : 0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     "cannot compile the configured WebAssembly modules (see above)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

static int wasm_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                            server_rec *s)
{
    const char *dir = cache_dir(ptemp, s);
    main_server = s;
    /* The first of Apache's two configuration passes only checks. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    /* While still root: what lets a child reset a used instance's memory quickly. */
    wb_parent_init();
    if (dir) {
        /* Only this process's user writes the cache; the children, running as User, read
         * it and never write: code that User could change is never loaded. */
        char note[2048] = "", error[2048] = "";
        cache_owner = geteuid();
        if (wb_cache_prepare(dir, ap_unixd_config.user_id, note, error, sizeof error) != 0) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "WasmCacheDir: %s", error);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (*note) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "WasmCacheDir: %s", note);
        }
    }
    return precompile(ptemp, s, dir);
}

static void log_for_server(int level, const char *message)
{
    ap_log_error(APLOG_MARK, level, 0, main_server, "%s", message);
}

/* The child's pool goes when the child exits: its long-lived instances (CGI workers) would
 * leave their temporary directories behind. */
static apr_status_t wasm_child_exit(void *data)
{
    (void)data;
    wb_child_exit();
    return APR_SUCCESS;
}

static void wasm_child_init(apr_pool_t *p, server_rec *s)
{
    int threads = 1, i;
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    /* Some MPMs answer 0 for "no threads"; HTTP/2 adds its own workers on top. */
    if (threads < 1) {
        threads = 1;
    }
    main_server = s;
    if (wb_child_init(threads * 2 + 8, cache_dir(p, s), cache_owner, engine_options(s),
                      log_for_server) != 0) {
        return;
    }
    apr_pool_cleanup_register(p, NULL, wasm_child_exit, apr_pool_cleanup_null);
    /* Load the configured apps now, from the cache the parent filled, rather than in the
     * first requests. One that fails is reported again by the requests for it. */
    for (i = 0; i < configured_apps->nelts; i++) {
        char error[2048];
        if (!wb_app_get(APR_ARRAY_IDX(configured_apps, i, const char *), error, sizeof error)) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "%s", error);
        }
    }
}

/* ---- requests --------------------------------------------------------------------------- */

typedef struct {
    apr_array_header_t *names;
    apr_array_header_t *values;
} pairs;

static int collect(void *pairs_, const char *name, const char *value)
{
    pairs *out = pairs_;
    *(const char **)apr_array_push(out->names) = name;
    *(const char **)apr_array_push(out->values) = value;
    return 1;
}

static pairs table_pairs(apr_pool_t *p, const apr_table_t *table)
{
    pairs out = {apr_array_make(p, 16, sizeof(const char *)),
                 apr_array_make(p, 16, sizeof(const char *))};
    apr_table_do(collect, &out, table, NULL);
    return out;
}

/* SCRIPT_FILENAME as the module sees it: the host path through the first WasmMapDir that
 * holds it (WasmMapCGIFileNames). Returns the part below that directory, which the URL chose,
 * or NULL if no WasmMapDir holds it. */
static const char *map_script_filename(request_rec *r, const wasm_dir_conf *conf)
{
    const char *filename = apr_table_get(r->subprocess_env, "SCRIPT_FILENAME");
    int i;
    if (!filename) {
        return NULL;
    }
    for (i = 0; i < conf->dirs->nelts; i++) {
        const char *dir = APR_ARRAY_IDX(conf->dirs, i, const char *);
        const char *sep = strstr(dir, "::");
        size_t len = sep - dir;
        if (!strncmp(filename, dir, len) && (filename[len] == '/' || !filename[len])) {
            const char *guest = sep + 2, *mode = strstr(guest, "::");
            if (mode) {
                guest = apr_pstrndup(r->pool, guest, mode - guest);
            }
            apr_table_set(r->subprocess_env, "SCRIPT_FILENAME",
                          apr_pstrcat(r->pool, guest, filename + len, NULL));
            return filename + len;
        }
    }
    return NULL;
}

/* Hands the host the next piece of the request body: one brigade, at most BODY_CHUNK bytes.
 * Apache's waits for the client count against the request's deadline (WasmTimeout): the
 * socket's timeout is cut to what is left of it while Apache reads. A body that cannot be
 * read to its end fails the request, with the status Apache gives the reason (413 for
 * LimitRequestBody, 408, 400), never as a shorter body. */
static void feed_body(request_rec *r, wb_request *req, apr_bucket_brigade *bb, char *buffer,
                      int *eos)
{
    apr_socket_t *socket = r->connection->master ? NULL : ap_get_conn_socket(r->connection);
    apr_interval_time_t saved = -1;
    int64_t left = wb_request_time_left(req);
    if (left == 0) {
        /* A body that kept trickling in until the deadline. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "the deadline passed while reading the "
                      "request body");
        wb_request_fail_body(req, HTTP_GATEWAY_TIME_OUT, 0);
        *eos = 1;
        return;
    }
    if (socket && left > 0 && apr_socket_timeout_get(socket, &saved) == APR_SUCCESS) {
        apr_interval_time_t deadline = apr_time_from_msec(left);
        if (saved < 0 || deadline < saved) {
            apr_socket_timeout_set(socket, deadline);
        }
    }
    while (!*eos) {
        apr_size_t len = BODY_CHUNK;
        apr_bucket *b;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, BODY_CHUNK);
        if (rv != APR_SUCCESS) {
            int status = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
            if (APR_STATUS_IS_TIMEUP(rv) && wb_request_time_left(req) == 0) {
                status = HTTP_GATEWAY_TIME_OUT;
            }
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, "reading the request body failed (%d)",
                          status);
            apr_brigade_cleanup(bb);
            wb_request_fail_body(req, status, (uint64_t)ap_get_limit_req_body(r));
            *eos = 1;
            break;
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
            if (APR_BUCKET_IS_EOS(b)) {
                *eos = 1;
            }
        }
        apr_brigade_flatten(bb, buffer, &len);
        apr_brigade_cleanup(bb);
        if (len) {
            wb_request_feed(req, buffer, len);
            if (*eos) {
                wb_request_feed(req, NULL, 0);
            }
            break;
        }
        if (*eos) {
            wb_request_feed(req, NULL, 0);
        }
    }
    if (socket && saved >= 0) {
        apr_socket_timeout_set(socket, saved);
    }
}

/* Whether the client has gone away: the connection is aborted, or (HTTP/1.x, where the
 * socket is the client's own) it has closed or reset its end. Data waiting to be read (a
 * pipelined request) means it is still there. */
static int client_gone(request_rec *r)
{
    conn_rec *c = r->connection;
    apr_socket_t *socket;
    apr_os_sock_t fd;
    char byte;
    ssize_t n;
    if (c->aborted) {
        return 1;
    }
    socket = c->master ? NULL : ap_get_conn_socket(c);
    if (!socket || apr_os_sock_get(&fd, socket) != APR_SUCCESS) {
        return 0;
    }
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void set_head(request_rec *r, const wb_event *ev)
{
    size_t i;
    r->status = ev->status;
    for (i = 0; i < ev->header_count; i++) {
        const char *name = ev->header_names[i], *value = ev->header_values[i];
        if (!strcasecmp(name, "content-type")) {
            ap_set_content_type(r, apr_pstrdup(r->pool, value));
        } else if (!strcasecmp(name, "connection") || !strcasecmp(name, "transfer-encoding") ||
                   !strcasecmp(name, "keep-alive") || !strcasecmp(name, "upgrade")) {
            continue; /* Apache frames the response itself */
        } else {
            apr_table_add(r->headers_out, apr_pstrdup(r->pool, name),
                          apr_pstrdup(r->pool, value));
        }
    }
}

static int wasm_handler(request_rec *r)
{
    wasm_dir_conf *conf;
    const char *path, *length;
    const wb_app *app;
    wb_request_head head = {0};
    wb_request *req;
    wb_event ev;
    pairs headers;
    apr_bucket_brigade *in, *out;
    char error[2048], *buffer;
    int eos = 0, unflushed = 0, aborted = 0, broke = 0;
    apr_size_t pending = 0;

    if (!r->handler || strcmp(r->handler, "wasm-handler")) {
        return DECLINED;
    }
    conf = ap_get_module_config(r->per_dir_config, &wasm_module);
    path = module_path(r->pool, conf);
    if (!path) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "SetHandler wasm-handler without a WasmModule (or a relative one "
                      "without WasmRoot) for %s", r->uri);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    app = wb_app_get(describe(r->pool, conf), error, sizeof error);
    if (!app) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "%s", error);
        apr_table_setn(r->notes, "wasm-failure", "load");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* For the access log: %{wasm-app}n, and %{wasm-failure}n when the request fails. */
    wb_app_name(app, error, sizeof error);
    apr_table_set(r->notes, "wasm-app", error);

    headers = table_pairs(r->pool, r->headers_in);
    head.method = r->method;
    head.uri = r->unparsed_uri;
    head.https = !strcasecmp(ap_run_http_scheme(r), "https");
    head.header_names = (const char *const *)headers.names->elts;
    head.header_values = (const char *const *)headers.values->elts;
    head.header_count = headers.names->nelts;
    length = apr_table_get(r->headers_in, "Content-Length");
    head.has_body = apr_table_get(r->headers_in, "Transfer-Encoding") != NULL ||
                    (length && apr_atoi64(length) > 0);
    head.local_ip = r->connection->local_ip;
    head.local_port = r->connection->local_addr->port;
    head.remote_ip = r->useragent_ip;
    head.remote_port = r->useragent_addr ? r->useragent_addr->port : 0;
    if (wb_app_is_cgi(app)) {
        pairs vars;
        /* The server's own PATH is not the guest's: only one set with SetEnv goes in. */
        int path_granted = apr_table_get(r->subprocess_env, "PATH") != NULL;
        /* Apache's own CGI variables, as mod_cgi passes them. */
        ap_add_common_vars(r);
        ap_add_cgi_vars(r);
        if (!path_granted) {
            apr_table_unset(r->subprocess_env, "PATH");
        }
        if (conf->map_cgi_filenames == 1) {
            /* The URL chose the script: only a script of the app's kind runs, never a file of
             * another kind or one under a dot-file or dot-directory (.env, .git). */
            const char *chosen = map_script_filename(r, conf);
            if (!chosen && conf->cgi_script_arg == 1) {
                /* The module could not open a script it is not granted. */
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                              "the script is under no WasmMapDir (WasmCGIScriptArg): %s",
                              r->filename);
                return HTTP_NOT_FOUND;
            }
            if (chosen && !wb_app_runs_script(app, chosen)) {
                ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                              "not a script %s runs (WasmCGIExt): %s", path, r->filename);
                return HTTP_NOT_FOUND;
            }
        }
        vars = table_pairs(r->pool, r->subprocess_env);
        head.cgi_names = (const char *const *)vars.names->elts;
        head.cgi_values = (const char *const *)vars.values->elts;
        head.cgi_count = vars.names->nelts;
    }

    in = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    out = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    buffer = apr_palloc(r->pool, BODY_CHUNK);
    req = wb_request_start(app, &head);
    for (;;) {
        /* With nothing written since the last flush, wait for the next event at once. */
        int kind = wb_request_next(req, &ev, !pending && !unflushed ? CLIENT_CHECK_MS : 0);
        if (kind == WB_EMPTY && (pending || unflushed)) {
            /* Nothing ready: what was written so far goes to the client before we wait. */
            APR_BRIGADE_INSERT_TAIL(out, apr_bucket_flush_create(out->bucket_alloc));
            if (ap_pass_brigade(r->output_filters, out) != APR_SUCCESS) {
                aborted = 1;
                break;
            }
            apr_brigade_cleanup(out);
            pending = unflushed = 0;
            kind = wb_request_next(req, &ev, CLIENT_CHECK_MS);
        }
        if (kind == WB_EMPTY) {
            /* A while with nothing to do: a guest that computes, or waits. If its client has
             * gone, it is stopped rather than left to run to its deadline. */
            if (client_gone(r)) {
                aborted = 1;
                break;
            }
            continue;
        }
        if (kind == WB_WANT_BODY) {
            feed_body(r, req, in, buffer, &eos);
        } else if (kind == WB_HEAD) {
            set_head(r, &ev);
        } else if (kind == WB_DATA) {
            /* Gathered, not passed at once: a response that ends before the brigade fills
             * goes out in one write, with a Content-Length instead of chunks. */
            apr_brigade_write(out, NULL, NULL, ev.data, ev.len);
            pending += ev.len;
            if (pending >= BODY_CHUNK) {
                if (ap_pass_brigade(r->output_filters, out) != APR_SUCCESS) {
                    aborted = 1;
                    break;
                }
                apr_brigade_cleanup(out);
                pending = 0;
                unflushed = 1;
            }
        } else if (kind == WB_LOG) {
            ap_log_rerror(APLOG_MARK, ev.level, 0, r, "%s", ev.data);
        } else if (kind == WB_FAILURE_CAUSE) {
            apr_table_set(r->notes, "wasm-failure", ev.data);
        } else if (kind == WB_FAILED) {
            if (ev.len) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "%s", ev.data);
            }
            /* The response broke off after its head: as mod_proxy does for a backend that
             * broke, an error bucket keeps the last chunk from being written (HTTP/1.1) or
             * resets the stream (HTTP/2), so the client does not take what it got for all. */
            r->no_cache = 1;
            if (r->main) {
                r->main->no_cache = 1;
            }
            APR_BRIGADE_INSERT_TAIL(out, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool,
                                                                out->bucket_alloc));
            APR_BRIGADE_INSERT_TAIL(out, apr_bucket_eos_create(out->bucket_alloc));
            ap_pass_brigade(r->output_filters, out);
            broke = 1;
            break;
        } else {
            break;
        }
    }
    wb_request_free(req);
    if (broke) {
        return OK;
    }
    if (aborted) {
        /* The client went away; the guest is stopped. */
        r->connection->keepalive = AP_CONN_CLOSE;
        return OK;
    }
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_eos_create(out->bucket_alloc));
    ap_pass_brigade(r->output_filters, out);
    /* The response goes out now, not after the MPM has looked for a pipelined request: a
     * client that answers it at once is then served by this thread, without a round trip
     * through the listener (the static file handler's responses go out the same way). */
    apr_brigade_cleanup(out);
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_flush_create(out->bucket_alloc));
    ap_pass_brigade(r->connection->output_filters, out);
    return OK;
}

/* SetHandler wasm-status: what this child's apps have done, in Prometheus' text format (each
 * child counts its own requests, as mod_status's scoreboard shows each worker). */
static int wasm_status_handler(request_rec *r)
{
    char *text;
    if (!r->handler || strcmp(r->handler, "wasm-status")) {
        return DECLINED;
    }
    if (r->method_number != M_GET) {
        r->allowed = AP_METHOD_BIT << M_GET;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    if (r->header_only) {
        return OK;
    }
    text = wb_status();
    ap_rputs(text, r);
    wb_status_free(text);
    return OK;
}

static void wasm_register_hooks(apr_pool_t *p)
{
    ap_hook_pre_config(wasm_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(wasm_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(wasm_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(wasm_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(wasm_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(wasm_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA wasm_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    create_server_conf,
    NULL,
    wasm_cmds,
    wasm_register_hooks,
    AP_MODULE_FLAG_NONE
};
