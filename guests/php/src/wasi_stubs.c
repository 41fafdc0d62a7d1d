/* What WASI cannot do, failing honestly (see wasi_compat.h). */
#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include "wasi_compat.h"

#define FAIL(value, code) do { errno = code; return value; } while (0)

int socket(int d, int t, int p) { FAIL(-1, ENOSYS); }
int bind(int fd, const struct sockaddr *a, socklen_t l) { FAIL(-1, ENOSYS); }
int connect(int fd, const struct sockaddr *a, socklen_t l) { FAIL(-1, ENOSYS); }
int listen(int fd, int b) { FAIL(-1, ENOSYS); }
int setsockopt(int fd, int l, int n, const void *v, socklen_t s) { FAIL(-1, ENOSYS); }
int getsockname(int fd, struct sockaddr *a, socklen_t *l) { FAIL(-1, ENOTSOCK); }
/* php-cgi asks whether stdin is a socket to decide on FastCGI: it is not. */
int getpeername(int fd, struct sockaddr *a, socklen_t *l) { FAIL(-1, ENOTSOCK); }
ssize_t sendto(int fd, const void *b, size_t n, int f, const struct sockaddr *a, socklen_t l)
{ FAIL(-1, ENOSYS); }
ssize_t recvfrom(int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *l)
{ FAIL(-1, ENOSYS); }

FILE *popen(const char *c, const char *m) { FAIL(NULL, ENOSYS); }
int pipe(int fds[2]) { FAIL(-1, ENOSYS); }
int dup2(int fd, int to) { FAIL(-1, ENOSYS); }
int execl(const char *p, const char *a, ...) { FAIL(-1, ENOSYS); }
int execle(const char *p, const char *a, ...) { FAIL(-1, ENOSYS); }
int execvp(const char *f, char *const argv[]) { FAIL(-1, ENOSYS); }
int socketpair(int d, int t, int p, int fds[2]) { FAIL(-1, ENOSYS); }
int pclose(FILE *s) { FAIL(-1, ENOSYS); }
int chown(const char *p, uid_t o, gid_t g) { FAIL(-1, ENOSYS); }
int fchown(int fd, uid_t o, gid_t g) { FAIL(-1, ENOSYS); }
int lchown(const char *p, uid_t o, gid_t g) { FAIL(-1, ENOSYS); }
mode_t umask(mode_t m) { return 022; }
int dup(int fd) { FAIL(-1, ENOSYS); }
int getdtablesize(void) { return 1024; }
/* No processes, sessions, users or terminals to change: PHP's posix functions fail with
 * PHP's own warning and these errnos. */
pid_t getppid(void) { return 1; }
int setuid(uid_t u) { FAIL(-1, EPERM); }
int setgid(gid_t g) { FAIL(-1, EPERM); }
int setpgid(pid_t p, pid_t g) { FAIL(-1, ENOSYS); }
char *ttyname(int fd) { FAIL(NULL, ENOTTY); }
char *ctermid(char *s) { if (s) { s[0] = 0; } return ""; }
char *getlogin(void) { FAIL(NULL, ENXIO); }
pid_t getpgid(pid_t p) { return 1; }
pid_t getsid(pid_t p) { return 1; }
int seteuid(uid_t u) { FAIL(-1, EPERM); }
int setegid(gid_t g) { FAIL(-1, EPERM); }
int initgroups(const char *user, gid_t group) { FAIL(-1, EPERM); }
int mkfifo(const char *path, mode_t mode) { FAIL(-1, ENOSYS); }
int mknod(const char *path, mode_t mode, dev_t dev) { FAIL(-1, ENOSYS); }
int getrlimit(int r, struct rlimit *l) { FAIL(-1, ENOSYS); }
int setrlimit(int r, const struct rlimit *l) { FAIL(-1, ENOSYS); }
int nice(int inc) { FAIL(-1, EPERM); }
int chroot(const char *path) { FAIL(-1, EPERM); }
int getloadavg(double loads[], int n) { return -1; }
key_t ftok(const char *path, int id) { FAIL((key_t)-1, ENOSYS); }
/* WASI has no host name: the guest is "localhost", as far as it can know. */
int gethostname(char *name, size_t len)
{
    if (len < sizeof "localhost") {
        FAIL(-1, ENAMETOOLONG);
    }
    memcpy(name, "localhost", sizeof "localhost");
    return 0;
}
uid_t getuid(void) { return 0; }
uid_t geteuid(void) { return 0; }
gid_t getgid(void) { return 0; }
gid_t getegid(void) { return 0; }
int getgroups(int size, gid_t list[]) { return 0; }
/* A fresh name for a temporary file; PHP then opens it with O_EXCL (uploads, tempnam). */
char *mktemp(char *t)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    size_t n = strlen(t), i;
    if (n < 6 || strcmp(t + n - 6, "XXXXXX")) {
        t[0] = 0;
        FAIL(t, EINVAL);
    }
    unsigned char random[6];
    if (getentropy(random, sizeof random) != 0) {
        t[0] = 0;
        return t;
    }
    for (i = n - 6; i < n; i++) {
        t[i] = chars[random[i - (n - 6)] % (sizeof chars - 1)];
    }
    return t;
}

pid_t fork(void) { FAIL(-1, ENOSYS); }
pid_t setsid(void) { FAIL(-1, ENOSYS); }
pid_t getpgrp(void) { return 1; }
int kill(pid_t p, int s) { FAIL(-1, ENOSYS); }
pid_t wait(int *s) { FAIL(-1, ECHILD); }

int getcontext(ucontext_t *c) { FAIL(-1, ENOSYS); }
void makecontext(ucontext_t *c, void (*f)(), int n, ...) {}
int swapcontext(ucontext_t *f, const ucontext_t *t) { __builtin_trap(); }

int sigaction(int s, const struct sigaction *a, struct sigaction *o)
{
    if (o) memset(o, 0, sizeof *o);
    return 0;
}
int sigemptyset(sigset_t *s) { memset(s, 0, sizeof *s); return 0; }
int sigaddset(sigset_t *s, int sig) { return 0; }
int sigprocmask(int h, const sigset_t *s, sigset_t *o) { return 0; }

int wasmbridge_getrusage(int who, struct wasmbridge_rusage *u)
{
    clock_t c = clock();
    memset(u, 0, sizeof *u);
    u->ru_utime.tv_sec = c / CLOCKS_PER_SEC;
    u->ru_utime.tv_usec = (c % CLOCKS_PER_SEC) * 1000000 / CLOCKS_PER_SEC;
    return 0;
}

/* No names to resolve, no user database. */
int getnameinfo(const struct sockaddr *a, socklen_t l, char *host, socklen_t hl, char *serv,
                socklen_t sl, int flags) { return EAI_FAIL; }
int gethostbyname_r(const char *name, struct hostent *h, char *buf, size_t len,
                    struct hostent **result, int *h_errnop)
{
    *result = NULL;
    *h_errnop = HOST_NOT_FOUND;
    return ENOSYS;
}
#undef iconv_open
/* NAME without a "//..." suffix, in BUF. */
static const char *charset_name(const char *name, char *buf, size_t len)
{
    const char *suffix = strstr(name, "//");
    if (!suffix || (size_t)(suffix - name) >= len) {
        return name;
    }
    memcpy(buf, name, suffix - name);
    buf[suffix - name] = 0;
    return buf;
}
iconv_t wasmbridge_iconv_open(const char *to, const char *from)
{
    char to_buf[64], from_buf[64];
    return iconv_open(charset_name(to, to_buf, sizeof to_buf), charset_name(from, from_buf, sizeof from_buf));
}

FILE *tmpfile(void)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    for (int tries = 0; tries < 100; tries++) {
        snprintf(path, sizeof path, "%s/tmpfile.%08x", dir && *dir ? dir : P_tmpdir, arc4random());
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {
            unlink(path);
            FILE *file = fdopen(fd, "w+b");
            if (!file) {
                close(fd);
            }
            return file;
        }
        if (errno != EEXIST) {
            return NULL;
        }
    }
    return NULL;
}

#include <ifaddrs.h>
#include <arpa/inet.h>
char *inet_ntoa(struct in_addr in)
{
    static char text[INET_ADDRSTRLEN];
    return (char *)inet_ntop(AF_INET, &in, text, sizeof text);
}
int getifaddrs(struct ifaddrs **addrs) { *addrs = NULL; FAIL(-1, ENOSYS); }
void freeifaddrs(struct ifaddrs *addrs) {}
struct protoent *getprotobyname(const char *name) { return NULL; }
struct protoent *getprotobynumber(int proto) { return NULL; }
struct servent *getservbyname(const char *name, const char *proto) { return NULL; }
struct servent *getservbyport(int port, const char *proto) { return NULL; }
struct passwd *getpwnam(const char *name) { FAIL(NULL, ENOSYS); }
struct passwd *getpwuid(uid_t uid) { FAIL(NULL, ENOSYS); }
struct group *getgrnam(const char *name) { FAIL(NULL, ENOSYS); }
struct group *getgrgid(gid_t gid) { FAIL(NULL, ENOSYS); }

/* The emulated mmap has no use for advice. */
int madvise(void *addr, size_t len, int advice) { return 0; }

/* syslog goes to stderr, which the host logs. */
void openlog(const char *ident, int option, int facility) {}
void closelog(void) {}
void syslog(int priority, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
}

/* SQLite (its SQLITE_EXTRA_INIT): WASI has no file locks, so the default VFS is the one that
 * takes none. Requests that write one database at once must be serialized by the server. */
#include "sqlite3.h"
int wasmbridge_sqlite_init(const char *unused)
{
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix-none");
    return vfs ? sqlite3_vfs_register(vfs, 1) : SQLITE_ERROR;
}
