/* cpu_pool.c — persistent worker threads and parallel_for.
 *
 * One job at a time (calls on a device come from one thread). A job is a range
 * [0, n) cut into chunks that threads claim from one atomic counter; the
 * calling thread claims chunks too, and the job is over when every item is
 * done — not when every worker has shown up. So a worker the OS has not
 * scheduled yet (another process on the core, a page fault) delays nothing:
 * the others take its chunks. The claim counter carries the job's sequence
 * number in its top bits, so a late worker can never claim a chunk of a job
 * whose fields it did not read.
 *
 * Workers spin for a short while after a job (the next op usually follows
 * within microseconds), then sleep on a condition variable. The _park variant
 * sends them to sleep at once: the caller is about to run OpenBLAS, whose own
 * threads need the cores. No allocation per call. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cpu_impl.h"

#define SPIN_NS 200000 /* how long an idle worker spins before sleeping */
#define SEQ_SHIFT 40   /* claim counter: job sequence << SEQ_SHIFT | next item */
#define IDX_MASK ((UINT64_C(1) << SEQ_SHIFT) - 1)

struct cpu_pool {
    int              n_threads;
    pthread_t       *threads;    /* n_threads - 1 workers */
    int              n_started;
    pthread_mutex_t  mu;
    pthread_cond_t   cv;
    atomic_uint_fast64_t gen;    /* bumped once per job: wakes workers */
    atomic_int       sleepers;   /* workers in (or entering) cond_wait */
    atomic_bool      quit;
    /* the current job; written by the caller before `claim` announces it */
    _Atomic(cpu_task_fn) fn;     /* atomics (relaxed): a late worker may read them while */
    _Atomic(void *)  ctx;        /* the next job is being written; the claim CAS decides */
    atomic_int_fast64_t n, chunk;
    atomic_bool      park;
    atomic_uint_fast64_t seq;
    atomic_uint_fast64_t claim;  /* seq << SEQ_SHIFT | next unclaimed item */
    atomic_int_fast64_t  done;   /* items finished */
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

/* Claim and run chunks of the announced job until none is left. Returns
 * whether the job asked the workers to park. */
static bool run_chunks(cpu_pool *p, int tid)
{
    bool park = false;
    for (;;) {
        uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
        uint64_t seq = c >> SEQ_SHIFT, i = c & IDX_MASK;
        /* fields of job `seq`: stable while it has unclaimed items (the caller
         * rewrites them only after every item is done) */
        cpu_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
        int64_t n = atomic_load_explicit(&p->n, memory_order_relaxed);
        int64_t chunk = atomic_load_explicit(&p->chunk, memory_order_relaxed);
        park = atomic_load_explicit(&p->park, memory_order_relaxed);
        if ((int64_t)i >= n || seq != atomic_load_explicit(&p->seq, memory_order_relaxed)) return park;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + (uint64_t)chunk, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue; /* someone else claimed it, or a new job: look again */
        int64_t e = (int64_t)i + chunk < n ? (int64_t)i + chunk : n;
        fn(ctx, (int64_t)i, e, tid);
        atomic_fetch_add_explicit(&p->done, e - (int64_t)i, memory_order_release);
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
        park = run_chunks(p, tid);
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
    if (chunk < 1) chunk = 1;
    if (!p || p->n_threads == 1 || n <= chunk) {
        fn(ctx, 0, n, 0);
        return;
    }
    uint64_t seq = (atomic_load_explicit(&p->seq, memory_order_relaxed) + 1) & ((UINT64_C(1) << (64 - SEQ_SHIFT)) - 1);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->n, n, memory_order_relaxed);
    atomic_store_explicit(&p->chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&p->park, park, memory_order_relaxed);
    atomic_store_explicit(&p->seq, seq, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->claim, seq << SEQ_SHIFT, memory_order_release);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: ordered before reading sleepers */
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_chunks(p, 0);
    /* wait for chunks still running elsewhere; yield if that takes long (the
     * thread we wait for may need this core) */
    uint64_t t0 = 0;
    for (int i = 1; atomic_load_explicit(&p->done, memory_order_acquire) < n; i++) {
        cpu_relax();
        if (!(i & 255)) {
            if (!t0) t0 = now_ns();
            else if (now_ns() - t0 > 50000) sched_yield();
        }
    }
}

void loom__cpu_parallel_for(cpu_pool *p, int64_t n, cpu_task_fn fn, void *ctx)
{
    int64_t nt = p ? p->n_threads : 1;
    dispatch(p, n, (n + nt - 1) / nt, false, fn, ctx);
}

void loom__cpu_parallel_for_park(cpu_pool *p, int64_t n, cpu_task_fn fn, void *ctx)
{
    int64_t nt = p ? p->n_threads : 1;
    dispatch(p, n, (n + nt - 1) / nt, true, fn, ctx);
}

void loom__cpu_parallel_for_dyn(cpu_pool *p, int64_t n, int64_t chunk, cpu_task_fn fn, void *ctx)
{
    dispatch(p, n, chunk, false, fn, ctx);
}
