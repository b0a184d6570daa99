#include "prefault.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PREFAULT_THREADS 2
#define PAGE 4096

typedef struct {
    size_t len;
} Part;

struct Prefault {
    pthread_t threads[PREFAULT_THREADS];
    Part parts[PREFAULT_THREADS];
    unsigned started;
};

/*
 * One thread's share: mapped as QEMU maps guest RAM (transparent huge pages
 * where the host allows them), written a byte a page, then given back.
 */
static void *part_run(void *arg)
{
    const Part *part = arg;
    char *p = mmap(NULL, part->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, part->len, MADV_HUGEPAGE);
    volatile char *page = p;
    for (size_t off = 0; off < part->len; off += PAGE)
        page[off] = 1;
    munmap(p, part->len);
    return NULL;
}

int prefault_start(uint64_t mib, Prefault **ret)
{
    if (mib == 0 || mib > PREFAULT_MAX_MIB)
        return -EINVAL;
    Prefault *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    size_t each = (size_t)(mib * 1024 * 1024 / PREFAULT_THREADS);
    for (unsigned i = 0; i < PREFAULT_THREADS; i++) {
        p->parts[i].len = each;
        int r = pthread_create(&p->threads[i], NULL, part_run, &p->parts[i]);
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
