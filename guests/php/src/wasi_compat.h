/* Included into every PHP source file (-include): what WASI's libc lacks and PHP's sources
 * expect, declared so that they compile. wasi_stubs.c implements the functions; each fails
 * with an honest errno (ENOSYS, or ENOTSOCK where PHP probes for a socket). */
#ifndef WASMBRIDGE_WASI_COMPAT_H
#define WASMBRIDGE_WASI_COMPAT_H
#ifdef __wasi__

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/resource.h>
#include <signal.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>

/* Temporary files: wasi-libc names no default directory. wasmbridge gives each instance its
 * own in TMPDIR, which PHP reads first; without one, /tmp as elsewhere. */
#ifndef P_tmpdir
#define P_tmpdir "/tmp"
#endif

/* Sockets: WASI preview 1 has no socket creation, addresses or options. */
#define sockaddr_un wasmbridge_sockaddr_un
struct wasmbridge_sockaddr_un { sa_family_t sun_family; char sun_path[108]; };
#ifndef AF_UNIX
#define AF_UNIX 1
#endif
#ifndef PF_UNIX
#define PF_UNIX AF_UNIX
#endif
#ifndef MSG_OOB
#define MSG_OOB 0x0001
#endif
#ifndef POLLPRI
#define POLLPRI 0x0002
#endif
#ifndef SO_REUSEADDR
#define SO_REUSEADDR 2
#endif
#ifndef SO_KEEPALIVE
#define SO_KEEPALIVE 9
#endif
#ifndef SO_ERROR
#define SO_ERROR 4
#endif
#ifndef SOL_IP
#define SOL_IP 0
#endif
int socket(int domain, int type, int protocol);
int bind(int fd, const struct sockaddr *addr, socklen_t len);
int connect(int fd, const struct sockaddr *addr, socklen_t len);
int listen(int fd, int backlog);
int setsockopt(int fd, int level, int name, const void *value, socklen_t len);
int getsockname(int fd, struct sockaddr *addr, socklen_t *len);
int getpeername(int fd, struct sockaddr *addr, socklen_t *len);
ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
               socklen_t addr_len);
ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                 socklen_t *addr_len);

/* Processes, users and permissions. */
FILE *popen(const char *command, const char *mode);
int pclose(FILE *stream);
int chown(const char *path, uid_t owner, gid_t group);
int fchown(int fd, uid_t owner, gid_t group);
int lchown(const char *path, uid_t owner, gid_t group);
mode_t umask(mode_t mask);
int dup(int fd);
int gethostname(char *name, size_t len);
int pipe(int fds[2]);
int dup2(int fd, int to);
int execl(const char *path, const char *arg, ...);
int execle(const char *path, const char *arg, ...);
int execvp(const char *file, char *const argv[]);
int socketpair(int domain, int type, int protocol, int fds[2]);
pid_t getppid(void);
int setuid(uid_t uid);
int setgid(gid_t gid);
int setpgid(pid_t pid, pid_t pgid);
char *ttyname(int fd);
char *ctermid(char *s);
char *getlogin(void);
pid_t getpgid(pid_t pid);
pid_t getsid(pid_t pid);
int seteuid(uid_t uid);
int setegid(gid_t gid);
int initgroups(const char *user, gid_t group);
int mkfifo(const char *path, mode_t mode);
int mknod(const char *path, mode_t mode, dev_t dev);
int nice(int inc);
int chroot(const char *path);
int getloadavg(double loads[], int n);
key_t ftok(const char *path, int id);

/* musl's iconv refuses names with glibc's //TRANSLIT or //IGNORE suffixes; without them it
 * converts the same and writes '*' for what the target charset cannot hold. */
#include <iconv.h>
#define iconv_open wasmbridge_iconv_open
iconv_t wasmbridge_iconv_open(const char *to, const char *from);

/* wasi-libc has no tmpfile: ours is an unlinked file in TMPDIR (gd writes BMPs through it). */
FILE *tmpfile(void);

/* wasi-libc leaves out inet_ntoa (not reentrant); OpenSSL's address printing uses it. */
char *inet_ntoa(struct in_addr in);

/* configure takes fnmatch for missing when it cross-compiles for anything but Linux; wasi-libc's
 * (musl's) works. */
#define HAVE_FNMATCH 1
int getdtablesize(void);
uid_t getuid(void);
uid_t geteuid(void);
gid_t getgid(void);
gid_t getegid(void);
int getgroups(int size, gid_t list[]);
char *mktemp(char *template_);

/* Signals: the emulation has signal() and raise(), not sigaction. */
#ifndef SA_RESTART
struct sigaction { void (*sa_handler)(int); sigset_t sa_mask; int sa_flags; };
#define SA_RESTART 0x10000000
int sigaction(int sig, const struct sigaction *act, struct sigaction *old);
int sigemptyset(sigset_t *set);
int sigaddset(sigset_t *set, int sig);
int sigprocmask(int how, const sigset_t *set, sigset_t *old);
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1
#define SIG_SETMASK 2
#endif

/* Processes: there are none to start, signal or wait for. */
pid_t fork(void);
pid_t setsid(void);
pid_t getpgrp(void);
int kill(pid_t pid, int sig);
pid_t wait(int *status);

/* Fibers: no stack switching in WASI. The type lets zend_fibers.c compile; fibers.patch makes
 * Fiber::start throw before any of these is called. */
#include <ucontext.h>
#ifndef __wasmbridge_ucontext
#define __wasmbridge_ucontext
struct __ucontext {
    struct __ucontext *uc_link;
    struct { void *ss_sp; size_t ss_size; int ss_flags; } uc_stack;
};
typedef struct __ucontext ucontext_t;
#endif

/* Locks: no fcntl locking; PHP's flock() grants every lock (flock.patch), and SQLite uses its
 * lock-free VFS (see wasmbridge_sqlite_init). */
#ifndef F_GETLK
#define F_GETLK 5
#endif
#ifndef F_RDLCK

#define F_RDLCK 0
#define F_WRLCK 1
#define F_UNLCK 2
#define F_SETLK 6
#define F_SETLKW 7
#endif

/* Resource limits: none to read or set (the host's are the real ones); getrlimit fails. */
#ifndef RLIM_INFINITY
typedef unsigned long long rlim_t;
struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; };
#define RLIM_INFINITY (~0ULL)
#define RLIMIT_CPU 0
#define RLIMIT_FSIZE 1
#define RLIMIT_DATA 2
#define RLIMIT_STACK 3
#define RLIMIT_CORE 4
#define RLIMIT_NOFILE 7
#define RLIMIT_AS 9
int getrlimit(int resource, struct rlimit *limit);
int setrlimit(int resource, const struct rlimit *limit);
#endif

/* getrusage: only the times, which the emulated process clocks give. */
#define rusage wasmbridge_rusage
struct wasmbridge_rusage {
    struct timeval ru_utime, ru_stime;
    long ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt, ru_majflt, ru_nswap, ru_inblock,
        ru_oublock, ru_msgsnd, ru_msgrcv, ru_nsignals, ru_nvcsw, ru_nivcsw;
};
#define getrusage wasmbridge_getrusage
int wasmbridge_getrusage(int who, struct wasmbridge_rusage *usage);

#endif
#endif
