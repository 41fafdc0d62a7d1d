/* SQLite's WASI glue, linked beside the amalgamation (see sqlite_wasi.h).
 *
 * WASI has no file locks, so SQLITE_EXTRA_INIT makes the VFS that takes none the default:
 * requests that write one database at once must be serialized by the server (one worker, or
 * one request at a time). */
#include <errno.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "sqlite3.h"

int fchmod(int fd, mode_t mode) {
    (void)fd;
    (void)mode;
    errno = ENOSYS;
    return -1;
}

int fchown(int fd, uid_t owner, gid_t group) {
    (void)fd;
    (void)owner;
    (void)group;
    errno = ENOSYS;
    return -1;
}

uid_t geteuid(void) { return 0; }

/* SQLite resolves a database's path by lstat()ing each directory on the way, and gives up on
 * any error but ENOENT. Under WASI, a directory above the granted ones ("/srv" of "/srv/app")
 * answers ENOTCAPABLE: to SQLite it is a directory that is not a link, as ENOENT says. */
static int lstat_within_grants(const char *path, struct stat *buf) {
    int result = lstat(path, buf);
    if (result != 0 && errno == ENOTCAPABLE) {
        errno = ENOENT;
    }
    return result;
}

int wasmbridge_sqlite_init(const char *unused) {
    (void)unused;
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix-none");
    if (vfs == NULL || vfs->xSetSystemCall(vfs, "lstat", (sqlite3_syscall_ptr)lstat_within_grants)) {
        return SQLITE_ERROR;
    }
    return sqlite3_vfs_register(vfs, 1);
}
