/* The C interface of the Rust half of mod_wasm (apache-bridge/src/lib.rs). */
#ifndef MOD_WASM_CORE_H
#define MOD_WASM_CORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct wb_app wb_app;
typedef struct wb_request wb_request;

typedef void (*wb_server_log_fn)(int level, const char *message);

typedef struct {
    const char *method;
    const char *uri;
    int https;
    const char *const *header_names;
    const char *const *header_values;
    size_t header_count;
    int has_body;
    const char *local_ip;
    uint16_t local_port;
    const char *remote_ip;
    uint16_t remote_port;
    const char *const *cgi_names;
    const char *const *cgi_values;
    size_t cgi_count;
} wb_request_head;

enum { WB_EMPTY, WB_WANT_BODY, WB_HEAD, WB_DATA, WB_END, WB_LOG, WB_FAILED, WB_FAILURE_CAUSE };

typedef struct {
    int kind;
    int status;
    const char *const *header_names;
    const char *const *header_values;
    size_t header_count;
    const char *data;
    size_t len;
    int level;
} wb_event;

void wb_parent_init(void);
int wb_check_engine_options(const char *optimize, char *error, size_t error_len);
int wb_child_init(int threads, const char *cache_dir, uint32_t cache_owner,
                  const char *optimize, wb_server_log_fn server_log);
void wb_child_exit(void);
int wb_cache_prepare(const char *cache_dir, uint32_t user, char *note, char *error,
                     size_t len);
int wb_inspect(const char *path, int cgi, char *error, size_t error_len);
int wb_check_start(const char *description, const char *cache_dir, uint32_t cache_owner,
                   const char *optimize, char *error, size_t error_len);
int wb_precompile(const char *const *descriptions, size_t count, const char *cache_dir,
                  const char *optimize, char *error, size_t error_len);
const wb_app *wb_app_get(const char *description, char *error, size_t error_len);
int wb_app_is_cgi(const wb_app *app);
void wb_app_name(const wb_app *app, char *name, size_t name_len);
int wb_check_outbound_host(const char *rule, char *error, size_t error_len);
char *wb_status(void);
void wb_status_free(char *text);
wb_request *wb_request_start(const wb_app *app, const wb_request_head *head);
int wb_request_next(wb_request *request, wb_event *event, int wait_ms);
void wb_request_feed(wb_request *request, const char *data, size_t len);
void wb_request_fail_body(wb_request *request, int status, uint64_t limit);
int64_t wb_request_time_left(const wb_request *request);
int wb_app_runs_script(const wb_app *app, const char *path);
void wb_request_free(wb_request *request);

#endif
