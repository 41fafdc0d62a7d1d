/* Included into SQLite's amalgamation (-include): what its unix VFS names and WASI's libc
 * lacks. SQLite runs on the VFS that takes no locks (sqlite_wasi.c), so the lock calls and
 * constants below are compiled but never used; the ownership calls fail honestly. */
#ifndef WASMBRIDGE_SQLITE_WASI_H
#define WASMBRIDGE_SQLITE_WASI_H
#include <fcntl.h>
#include <sys/types.h>

int fchmod(int fd, mode_t mode);
int fchown(int fd, uid_t owner, gid_t group);
uid_t geteuid(void);

#ifndef F_RDLCK
#define F_RDLCK 0
#define F_WRLCK 1
#define F_UNLCK 2
#define F_GETLK 5
#define F_SETLK 6
#define F_SETLKW 7
#endif
#endif
