/* <ifaddrs.h> for WASI, which has none: the guest has no network interfaces to list, so
 * getifaddrs() fails (wasi_stubs.c) and net_get_interfaces() warns and returns false. */
#ifndef WASMBRIDGE_IFADDRS_H
#define WASMBRIDGE_IFADDRS_H

#include <sys/socket.h>

struct ifaddrs {
    struct ifaddrs *ifa_next;
    char *ifa_name;
    unsigned int ifa_flags;
    struct sockaddr *ifa_addr;
    struct sockaddr *ifa_netmask;
    union {
        struct sockaddr *ifu_broadaddr;
        struct sockaddr *ifu_dstaddr;
    } ifa_ifu;
    void *ifa_data;
};
#define ifa_broadaddr ifa_ifu.ifu_broadaddr
#define ifa_dstaddr ifa_ifu.ifu_dstaddr

int getifaddrs(struct ifaddrs **addrs);
void freeifaddrs(struct ifaddrs *addrs);

#endif
