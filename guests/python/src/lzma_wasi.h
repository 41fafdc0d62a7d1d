/* Included into liblzma's sources (-include): its single-threaded build masks signals around
 * some calls, and WASI has no signals to mask. */
#ifndef WASMBRIDGE_LZMA_WASI_H
#define WASMBRIDGE_LZMA_WASI_H
typedef unsigned int sigset_t;
#define sigprocmask(how, set, oldset) ((void)(how), (void)(set), (void)(oldset), 0)
#endif
