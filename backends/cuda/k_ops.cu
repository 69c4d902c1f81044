/* k_ops.cu — the small ops: embed, rmsnorm, rope, swiglu, add.
 * Activations are f32; tables and weights are read in their own dtype and
 * widened in registers. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_impl.h"
#include "k_common.cuh"

/* ---- embed: y[t] = table[ids[t]] ------------------------------------------------------ */
template <typename T>
__global__ void embed_kernel(const T *__restrict__ table, int64_t V, int64_t D, const int32_t *__restrict__ ids,
                             float *__restrict__ y, int *err)
{
    int t = blockIdx.x;
    int32_t id = ids[t];
    float *yr = y + (int64_t)t * D;
    if (id < 0 || id >= V) {
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d] = __int_as_float(0x7fc00000);
        if (threadIdx.x == 0 && atomicCAS(err, 0, 1) == 0) err[1] = t, err[2] = id;
        return;
    }
    const T *row = table + (int64_t)id * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d] = cu_to_f32(row[d]);
}

extern "C" cudaError_t loom__cu_embed(cudaStream_t s, const void *table, int dt, int64_t V, int64_t D,
                                      const int32_t *ids, float *y, int T, int *err)
{
    int th = D >= 1024 ? 256 : 128;
    switch (dt) {
    case LOOM_F32: embed_kernel<<<T, th, 0, s>>>((const float *)table, V, D, ids, y, err); break;
    case LOOM_F16: embed_kernel<<<T, th, 0, s>>>((const __half *)table, V, D, ids, y, err); break;
    case LOOM_BF16: embed_kernel<<<T, th, 0, s>>>((const __nv_bfloat16 *)table, V, D, ids, y, err); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- rmsnorm: y = x / sqrt(mean(x²) + eps) * w, one block per row ------------------------ */
template <typename T>
__global__ void __launch_bounds__(256) rmsnorm_kernel(const float *__restrict__ x, const T *__restrict__ w, float eps,
                                                      float *__restrict__ y, int64_t D)
{
    __shared__ float red[32];
    const float *xr = x + (int64_t)blockIdx.x * D;
    float *yr = y + (int64_t)blockIdx.x * D;
    float ss = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) ss = fmaf(xr[d], xr[d], ss);
    ss = cu_block_sum(ss, red);
    float inv = cu_rms_inv(ss, D, eps);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d] = xr[d] * inv * cu_to_f32(w[d]);
}

extern "C" cudaError_t loom__cu_rmsnorm(cudaStream_t s, const float *x, const void *w, int wdt, float eps, float *y,
                                        int T, int64_t D)
{
    switch (wdt) {
    case LOOM_F32: rmsnorm_kernel<<<T, 256, 0, s>>>(x, (const float *)w, eps, y, D); break;
    case LOOM_F16: rmsnorm_kernel<<<T, 256, 0, s>>>(x, (const __half *)w, eps, y, D); break;
    case LOOM_BF16: rmsnorm_kernel<<<T, 256, 0, s>>>(x, (const __nv_bfloat16 *)w, eps, y, D); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- rope (neox): pairs (i, i + hd/2) of every head turn by pos · inv_freq[i] ------------
 * One block per token; the angle and its cos/sin are computed once per pair in
 * double (as the reference does: an f32 angle at pos ~32000 is off by ~1e-3),
 * then applied to every head. */
__global__ void __launch_bounds__(256) rope_kernel(const float *__restrict__ x, float *__restrict__ y, int n_head,
                                                   int hd, const double *__restrict__ inv_freq, double mscale,
                                                   const int32_t *__restrict__ pos)
{
    extern __shared__ float cs[]; /* [hd/2][2] */
    int t = blockIdx.x, h2 = hd / 2;
    double p = (double)pos[t];
    for (int i = threadIdx.x; i < h2; i += blockDim.x) {
        double sn, cn;
        sincos(p * inv_freq[i], &sn, &cn);
        cs[2 * i] = (float)(cn * mscale);
        cs[2 * i + 1] = (float)(sn * mscale);
    }
    __syncthreads();
    int64_t base = (int64_t)t * n_head * hd;
    for (int j = threadIdx.x; j < n_head * h2; j += blockDim.x) {
        int h = j / h2, i = j - h * h2;
        int64_t o = base + (int64_t)h * hd + i;
        float c = cs[2 * i], sn = cs[2 * i + 1], a = x[o], b = x[o + h2];
        y[o] = a * c - b * sn;
        y[o + h2] = b * c + a * sn;
    }
}

extern "C" cudaError_t loom__cu_rope(cudaStream_t s, const float *x, float *y, int T, int n_head, int head_dim,
                                     const double *inv_freq, double mscale, const int32_t *pos)
{
    rope_kernel<<<T, 256, (size_t)head_dim * sizeof(float), s>>>(x, y, n_head, head_dim, inv_freq, mscale, pos);
    return cudaGetLastError();
}

/* ---- elementwise: 4 floats per thread where aligned --------------------------------------- */
struct swiglu_f {
    __device__ float operator()(float g, float u) const { return cu_silu_mul(g, u); }
};
struct add_f {
    __device__ float operator()(float a, float b) const { return a + b; }
};

template <typename F>
__global__ void ew_kernel(const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ y, int64_t n,
                          bool vec)
{
    F f;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        if (4 * i + 3 < n) {
            float4 va = reinterpret_cast<const float4 *>(a)[i], vb = reinterpret_cast<const float4 *>(b)[i];
            reinterpret_cast<float4 *>(y)[i] = make_float4(f(va.x, vb.x), f(va.y, vb.y), f(va.z, vb.z), f(va.w, vb.w));
        } else {
            for (int64_t j = 4 * i; j < n; j++) y[j] = f(a[j], b[j]);
        }
    } else if (i < n) {
        y[i] = f(a[i], b[i]);
    }
}

template <typename F>
static cudaError_t ew(cudaStream_t s, const float *a, const float *b, float *y, int64_t n)
{
    bool vec = cu_aligned16(a) && cu_aligned16(b) && cu_aligned16(y);
    int64_t items = vec ? (n + 3) / 4 : n;
    ew_kernel<F><<<(unsigned)((items + 255) / 256), 256, 0, s>>>(a, b, y, n, vec);
    return cudaGetLastError();
}

extern "C" cudaError_t loom__cu_swiglu(cudaStream_t s, const float *g, const float *u, float *y, int64_t n)
{
    return ew<swiglu_f>(s, g, u, y, n);
}

extern "C" cudaError_t loom__cu_add(cudaStream_t s, const float *a, const float *b, float *y, int64_t n)
{
    return ew<add_f>(s, a, b, y, n);
}
