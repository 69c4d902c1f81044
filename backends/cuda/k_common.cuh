/* k_common.cuh — device helpers shared by the kernels of the CUDA backend. */
#ifndef LOOM_K_COMMON_CUH
#define LOOM_K_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

/* Device helpers that tests/cuda_host.cu also runs on the CPU. */
#define CU_HD __host__ __device__ __forceinline__
#ifdef __CUDA_ARCH__
#define CU_LDG(p) __ldg(p) /* read-only path */
#define CU_LDCG(p) __ldcg(p) /* from L2: written by other blocks of this launch */
#define CU_UNROLL _Pragma("unroll")
#else
#define CU_LDG(p) (*(p))
#define CU_LDCG(p) (*(p))
#define CU_UNROLL
#endif

static __host__ __device__ __forceinline__ float cu_bits_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

static __host__ __device__ __forceinline__ float cu_f16_f32(unsigned short h) { return __half2float(__ushort_as_half(h)); }

static CU_HD float cu_to_f32(float v) { return v; }
static CU_HD float cu_to_f32(__half v) { return __half2float(v); }
static CU_HD float cu_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

/* Element i of a bias (or any small vector) stored as dtype dt. */
static __host__ __device__ __forceinline__ float cu_load_dt(const void *p, int dt, int64_t i)
{
    if (dt == LOOM_F16) return __half2float(((const __half *)p)[i]);
    if (dt == LOOM_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

/* rmsnorm's 1 / sqrt(mean(x²) + eps), in double: one formula for the kernel and the fused GEMV */
static __host__ __device__ __forceinline__ float cu_rms_inv(float ss, int64_t D, float eps)
{
    return (float)(1.0 / sqrt((double)ss / (double)D + (double)eps));
}

/* swiglu: silu(g) * u, the one formula of the elementwise kernel and the fused GEMV */
static __host__ __device__ __forceinline__ float cu_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

static __device__ __forceinline__ float cu_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float cu_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32); red: 32 floats of shared memory. */
static __device__ __forceinline__ float cu_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    v = cu_warp_sum(v);
    __syncthreads();
    return v;
}

/* 8 consecutive elements (16-byte aligned for 16-bit types, 32 for f32), widened. */
static CU_HD void load8(const float *w, float f[8])
{
    float4 a = CU_LDG(reinterpret_cast<const float4 *>(w)), b = CU_LDG(reinterpret_cast<const float4 *>(w) + 1);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

static CU_HD void load8(const __half *w, float f[8])
{
    uint4 u = CU_LDG(reinterpret_cast<const uint4 *>(w));
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
    CU_UNROLL
    for (int i = 0; i < 4; i++) {
        __half2_raw raw; /* a register move on the device; no type punning on the host */
        raw.x = (unsigned short)(v[i] & 0xffffu), raw.y = (unsigned short)(v[i] >> 16);
        float2 p = __half22float2(__half2(raw));
        f[2 * i] = p.x, f[2 * i + 1] = p.y;
    }
}

/* bf16 is the top half of an f32: a shift or a mask, exact. */
static CU_HD void load8(const __nv_bfloat16 *w, float f[8])
{
    uint4 u = CU_LDG(reinterpret_cast<const uint4 *>(w));
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
    CU_UNROLL
    for (int i = 0; i < 4; i++) f[2 * i] = cu_bits_f32(v[i] << 16), f[2 * i + 1] = cu_bits_f32(v[i] & 0xffff0000u);
}

static inline bool cu_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Programmatic dependent launch (sm_90; no-ops below). A kernel launched by cu_launch with
 * pdl set may start while the stream's previous kernel is still running, once every block of
 * that one has called cu_pdl_trigger (or exited); before cu_pdl_wait returns (the previous
 * kernel complete, its writes visible) it may touch nothing but constants such as weights.
 * That hides the launch and the ramp of each small decode kernel behind its predecessor. */
static __device__ __forceinline__ void cu_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

static __device__ __forceinline__ void cu_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void cu_prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

template <typename... P, typename... A>
static cudaError_t cu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, bool pdl,
                             A &&...args)
{
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t c = {};
    c.gridDim = grid, c.blockDim = block, c.dynamicSmemBytes = smem, c.stream = s;
    c.attrs = at, c.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&c, kernel, static_cast<A &&>(args)...);
}

#endif
