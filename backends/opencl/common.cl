/* common.cl — helpers shared by every kernel of the loom OpenCL backend.
 *
 * Built once per device as OpenCL C 1.2. The host prepends build-time
 * constants (-D): GEMM_TS (output tile edge of the tiled matmuls, 64 or 32),
 * GEMV_W (work-group of the dense GEMV), RED_W (rmsnorm work-group),
 * ATT_W (attention work-group), AWQ_X / AWQ_KS (AWQ GEMV work-group: words
 * of 8 columns x K slices). Every tensor is addressed as a buffer plus an
 * element offset (tensors share buffers at aligned offsets). f16 data is
 * read and written with vload_half / vstore_half_rte (core OpenCL 1.2), so
 * no cl_khr_fp16 is needed; all arithmetic is f32. */
#define GEMM_TK (GEMM_TS / 2)   /* K depth of one tile step */
#define GEMV_MAXT 8             /* rows handled by the GEMV kernels */
#define ATT_DPT 4               /* head dims per attention work-item: head_dim <= ATT_W * ATT_DPT */

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)

/* Error codes a kernel reports through the device's error word (read back by
 * the host at sync / buffer_read): err[0] = code, err[1..3] = details. */
#define LOOM_KERR_EMBED_ID 1

inline void report(global int *err, int code, int a, int b, int c)
{
    if (atomic_cmpxchg(err, 0, code) == 0) {
        err[1] = a;
        err[2] = b;
        err[3] = c;
    }
}

/* bias of a matmul: bdt 0 none, 1 f32, 2 f16, 3 bf16; bo is an element offset */
inline float ld_bias(global const uchar *b, ulong bo, int bdt, int n)
{
    if (bdt == 1) return ((global const float *)b)[bo + n];
    if (bdt == 2) return vload_half(bo + n, (global const half *)b);
    if (bdt == 3) return as_float((uint)((global const ushort *)b)[bo + n] << 16);
    return 0.0f;
}

/* One GEMM_TK step of a (GEMM_TS x GEMM_TS) output tile: each work-item owns
 * a 4x4 block of outputs strided by GEMM_TS/4 (conflict-free local reads,
 * coalesced writes). As[k][row], Bs[k][col] in local memory. */
#define GEMM_LD (GEMM_TS + 1)
inline void gemm_tile_step(local const float *As, local const float *Bs, float acc[4][4], int lx, int ly)
{
    const int S = GEMM_TS / 4;
    for (int kk = 0; kk < GEMM_TK; kk++) {
        float a[4], b[4];
        for (int i = 0; i < 4; i++) a[i] = As[kk * GEMM_LD + ly + S * i];
        for (int j = 0; j < 4; j++) b[j] = Bs[kk * GEMM_LD + lx + S * j];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
}

/* A tile of x [T, K] rows t0.., columns k0.. into As (zero outside). */
inline void gemm_load_x(local float *As, global const float *x, int T, int K, int t0, int k0, int lid)
{
    const int NT = (GEMM_TS / 4) * (GEMM_TS / 4);
    for (int e = lid; e < GEMM_TS * GEMM_TK; e += NT) {
        int r = e / GEMM_TK, kk = e % GEMM_TK, t = t0 + r, k = k0 + kk;
        As[kk * GEMM_LD + r] = (t < T && k < K) ? x[(size_t)t * K + k] : 0.0f;
    }
}

/* ---- elementwise and row ops that only touch f32 activations --------------- */
kernel void swiglu(global float *y, ulong yo, global const float *g, ulong go, global const float *u, ulong uo, ulong n)
{
    size_t i = get_global_id(0);
    if (i >= n) return;
    float a = g[go + i];
    y[yo + i] = a / (1.0f + exp(-a)) * u[uo + i];
}

kernel void add(global float *y, ulong yo, global const float *a, ulong ao, global const float *b, ulong bo, ulong n)
{
    size_t i = get_global_id(0);
    if (i >= n) return;
    y[yo + i] = a[ao + i] + b[bo + i];
}

/* rope (neox): pair (i, i + hd/2) of head h of token t rotates by the angle
 * whose cos, sin (times the YaRN magnitude) the host computed in double for
 * this step: cs[(t * hd/2 + i) * 2 + {0, 1}]. One work-item per pair:
 * global (T * H * hd/2..). */
kernel void rope(global float *y, ulong yo, global const float *x, ulong xo, global const float *cs, ulong cso, int H,
                 int hd, ulong n)
{
    size_t g = get_global_id(0);
    if (g >= n) return;
    int h2 = hd / 2, i = g % h2;
    size_t r = g / h2, t = r / H, o = r * hd + i; /* r = t * H + h */
    float c = cs[cso + (t * h2 + i) * 2], s = cs[cso + (t * h2 + i) * 2 + 1];
    float a = x[xo + o], b = x[xo + o + h2];
    y[yo + o] = a * c - b * s;
    y[yo + o + h2] = b * c + a * s;
}
