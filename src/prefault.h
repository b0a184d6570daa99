/*
 * Host memory faulted in ahead of a standby restore. On a host that is
 * itself a VM with free page reporting, memory that stayed free for a few
 * seconds has gone back to the outer hypervisor, and the first write to
 * each of its pages costs 2.5-3 s per GiB from one thread
 * (docs/PERFORMANCE.md). A restore faults in the RAM its saved state
 * covers, in QEMU's main thread, after about a second of libvirt's
 * start-up. prefault_start() writes as much memory from two threads of
 * legbad's during that start-up and frees it as each thread is done, so
 * the pages the restore gets next were backed a moment before. On a host
 * without that cost it spends a core for about a tenth of a second per GiB.
 */
#pragma once

#include <stdint.h>

#define PREFAULT_MAX_MIB (64 * 1024)

typedef struct Prefault Prefault;

/* Starts writing mib MiB (at most PREFAULT_MAX_MIB). -EINVAL, -ENOMEM, or a thread's -errno. */
int prefault_start(uint64_t mib, Prefault **ret);

/* Waits until the memory is written and freed; accepts NULL. */
void prefault_finish(Prefault *p);
static inline void prefault_finishp(Prefault **p)
{
    prefault_finish(*p);
}
