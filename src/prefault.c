#include "prefault.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PREFAULT_THREADS 2
#define PAGE 4096

struct Prefault {
    pthread_t threads[PREFAULT_THREADS];
    size_t each; /* bytes a thread writes */
    unsigned started;
};

/*
 * One thread's share: mapped as QEMU maps guest RAM (transparent huge pages
 * where the host allows them), written a byte a page, then given back.
 */
static void *part_run(void *arg)
{
    size_t len = *(const size_t *)arg;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, len, MADV_HUGEPAGE);
    volatile char *page = p;
    for (size_t off = 0; off < len; off += PAGE)
        page[off] = 1;
    munmap(p, len);
    return NULL;
}

int prefault_start(uint64_t mib, Prefault **ret)
{
    if (mib == 0 || mib > PREFAULT_MAX_MIB)
        return -EINVAL;
    Prefault *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->each = (size_t)(mib * 1024 * 1024 / PREFAULT_THREADS);
    for (unsigned i = 0; i < PREFAULT_THREADS; i++) {
        int r = pthread_create(&p->threads[i], NULL, part_run, &p->each);
        if (r != 0) {
            prefault_finish(p);
            return -r;
        }
        p->started++;
    }
    *ret = p;
    return 0;
}

void prefault_finish(Prefault *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    free(p);
}
