/* cpu_pool.c — persistent worker threads and parallel_for.
 *
 * One job at a time (calls on a device come from one thread). The caller
 * publishes the job and bumps a generation counter; workers that are spinning
 * see it at once, sleeping ones are woken through a condition variable. The
 * calling thread takes share 0 itself, then waits for the others. No
 * allocation per call. Workers spin for a short while after each job (the next
 * op usually follows within microseconds) and then sleep, so they never compete
 * with OpenBLAS's own threads during an sgemm. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cpu_impl.h"

#define SPIN_NS 200000 /* how long an idle worker spins before sleeping */

struct cpu_pool {
    int              n_threads;
    pthread_t       *threads;    /* n_threads - 1 workers */
    int              n_started;
    pthread_mutex_t  mu;
    pthread_cond_t   cv;
    atomic_uint_fast64_t gen;    /* bumped once per job */
    atomic_int       sleepers;   /* workers in (or entering) cond_wait */
    atomic_int       done;       /* workers finished with the current job */
    atomic_bool      quit;
    /* the current job */
    cpu_task_fn      fn;
    void            *ctx;
    int64_t          n, chunk;   /* chunk 0: static split */
    bool             park;       /* workers sleep right after: OpenBLAS runs next */
    atomic_int_fast64_t next;    /* dynamic: next unclaimed item */
};

typedef struct {
    cpu_pool *p;
    int       tid;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void run_share(cpu_pool *p, int tid)
{
    if (!p->chunk) {
        int64_t nt = p->n_threads;
        int64_t b = p->n * tid / nt, e = p->n * (tid + 1) / nt;
        if (b < e) p->fn(p->ctx, b, e, tid);
        return;
    }
    for (;;) {
        int64_t b = atomic_fetch_add_explicit(&p->next, p->chunk, memory_order_relaxed);
        if (b >= p->n) break;
        int64_t e = b + p->chunk < p->n ? b + p->chunk : p->n;
        p->fn(p->ctx, b, e, tid);
    }
}

static void *worker(void *argp)
{
    worker_arg *a = argp;
    cpu_pool *p = a->p;
    int tid = a->tid;
    free(a);
    uint64_t seen = 0;
    bool park = false;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g == seen && !park) {
            uint64_t t0 = now_ns();
            for (int i = 1; (g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen; i++) {
                cpu_relax();
                if (!(i & 63) && now_ns() - t0 > SPIN_NS) break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->quit, memory_order_acquire)) break;
        seen = g;
        park = p->park;
        run_share(p, tid);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

int loom__cpu_pool_create(int n_threads, cpu_pool **out)
{
    *out = NULL;
    if (n_threads < 1) return EINVAL;
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return ENOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1 && !(p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads))) {
        loom__cpu_pool_destroy(p);
        return ENOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        int rc = a ? 0 : ENOMEM;
        if (a) {
            *a = (worker_arg){p, i};
            rc = pthread_create(&p->threads[i - 1], NULL, worker, a);
            if (rc) free(a);
        }
        if (rc) {
            loom__cpu_pool_destroy(p);
            return rc;
        }
        p->n_started++;
    }
    *out = p;
    return 0;
}

void loom__cpu_pool_destroy(cpu_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int loom__cpu_pool_threads(const cpu_pool *p)
{
    return p ? p->n_threads : 1;
}

static void dispatch(cpu_pool *p, int64_t n, int64_t chunk, bool park, cpu_task_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (!p || p->n_threads == 1 || (chunk ? n <= chunk : n == 1)) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn, p->ctx = ctx, p->n = n, p->chunk = chunk, p->park = park;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes the job, ordered before reading sleepers */
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_share(p, 0);
    while (atomic_load_explicit(&p->done, memory_order_acquire) < p->n_threads - 1) cpu_relax();
}

void loom__cpu_parallel_for(cpu_pool *p, int64_t n, cpu_task_fn fn, void *ctx)
{
    dispatch(p, n, 0, false, fn, ctx);
}

void loom__cpu_parallel_for_park(cpu_pool *p, int64_t n, cpu_task_fn fn, void *ctx)
{
    dispatch(p, n, 0, true, fn, ctx);
}

void loom__cpu_parallel_for_dyn(cpu_pool *p, int64_t n, int64_t chunk, cpu_task_fn fn, void *ctx)
{
    dispatch(p, n, chunk < 1 ? 1 : chunk, false, fn, ctx);
}
