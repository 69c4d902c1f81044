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

/* Elements i .. i + 3 (i % 4 == 0, p aligned as the arena aligns tensors) in one load. */
static __host__ __device__ __forceinline__ float4 cu_load4_dt(const void *p, int dt, int64_t i)
{
    if (dt == LOOM_F32) return reinterpret_cast<const float4 *>(p)[i / 4];
    uint2 u = reinterpret_cast<const uint2 *>(p)[i / 4];
    if (dt == LOOM_F16)
        return make_float4(cu_f16_f32((unsigned short)(u.x & 0xffffu)), cu_f16_f32((unsigned short)(u.x >> 16)),
                           cu_f16_f32((unsigned short)(u.y & 0xffffu)), cu_f16_f32((unsigned short)(u.y >> 16)));
    return make_float4(cu_bits_f32(u.x << 16), cu_bits_f32(u.x & 0xffff0000u), /* bf16: an f32's high half */
                       cu_bits_f32(u.y << 16), cu_bits_f32(u.y & 0xffff0000u));
}

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

/* cu_warp_sum on the CPU (tests/cuda_host.cu): lane 0's result of the same xor tree over v[32]. */
static inline __host__ float cu_host_warp_sum(const float *v)
{
    float a[32], b[32];
    memcpy(a, v, sizeof a);
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; l++) b[l] = a[l] + a[l ^ o];
        memcpy(a, b, sizeof a);
    }
    return a[0];
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

/* 8 halves packed in 16 bytes, widened (load8's, and attention's K/V held packed until stored). */
static CU_HD void cu_widen8(uint4 u, float f[8])
{
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
    CU_UNROLL
    for (int i = 0; i < 4; i++) {
        __half2_raw raw; /* a register move on the device; no type punning on the host */
        raw.x = (unsigned short)(v[i] & 0xffffu), raw.y = (unsigned short)(v[i] >> 16);
        float2 p = __half22float2(__half2(raw));
        f[2 * i] = p.x, f[2 * i + 1] = p.y;
    }
}

static CU_HD void load8(const __half *w, float f[8]) { cu_widen8(CU_LDG(reinterpret_cast<const uint4 *>(w)), f); }

/* bf16 is the top half of an f32: a shift or a mask, exact. */
static CU_HD void load8(const __nv_bfloat16 *w, float f[8])
{
    uint4 u = CU_LDG(reinterpret_cast<const uint4 *>(w));
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
    CU_UNROLL
    for (int i = 0; i < 4; i++) f[2 * i] = cu_bits_f32(v[i] << 16), f[2 * i + 1] = cu_bits_f32(v[i] & 0xffff0000u);
}

/* ---- f16 pairs and mma.sync m16n8k16 (f16/bf16 in, f32 accumulate) --------------------
 * Two halves in one 32-bit register, low half first. On the host (tests/cuda_host.cu) the pair
 * operations are computed in float and rounded once, as the f16x2 instructions do. */
static CU_HD uint32_t cu_pack2(float a, float b, bool bf)
{
#ifdef __CUDA_ARCH__
    if (bf) {
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
#else
    unsigned short lo, hi;
    if (bf) {
        __nv_bfloat16_raw ra = __float2bfloat16_rn(a), rb = __float2bfloat16_rn(b);
        lo = ra.x, hi = rb.x;
    } else {
        __half_raw ra = __float2half_rn(a), rb = __float2half_rn(b);
        lo = ra.x, hi = rb.x;
    }
    return (uint32_t)lo | (uint32_t)hi << 16;
#endif
}

#ifndef __CUDA_ARCH__
/* a * b + c on each half, one rounding (b == 1: a + c; c == 0: a * b) */
static inline uint32_t cu_host_h2(uint32_t a, uint32_t b, uint32_t c)
{
    uint32_t r = 0;
    for (int h = 0; h < 2; h++) {
        double v = (double)cu_f16_f32((unsigned short)(a >> 16 * h)) * cu_f16_f32((unsigned short)(b >> 16 * h)) +
                   cu_f16_f32((unsigned short)(c >> 16 * h));
        __half_raw hr = __double2half(v);
        r |= (uint32_t)hr.x << 16 * h;
    }
    return r;
}
#endif

static CU_HD uint32_t cu_hsub2(uint32_t a, uint32_t b)
{
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
#else
    return cu_host_h2(a, 0x3C003C00u, b ^ 0x80008000u);
#endif
}

static CU_HD uint32_t cu_hmul2(uint32_t a, uint32_t b)
{
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
#else
    return cu_host_h2(a, b, 0x80008000u); /* + (-0): keeps the sign of a zero product */
#endif
}

static CU_HD uint32_t cu_hfma2(uint32_t a, uint32_t b, uint32_t c)
{
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#else
    return cu_host_h2(a, b, c);
#endif
}

/* (w & m) | 0x64006400 in one LOP3: written out, the compiler emits two (its LOP3 takes one
 * 32-bit immediate, and this needs two constants) */
static CU_HD uint32_t cu_awq_nib(uint32_t w, uint32_t m)
{
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(w), "r"(m), "r"(0x64006400u));
    return d;
#else
    return (w & m) | 0x64006400u;
#endif
}

/* One packed AWQ word (cuda_impl.h) to the four A-fragment registers of its lane, (q - z) exactly
 * as f16 pairs. (w & 0x000F000F) | 0x6400 6400 is the pair 1024 + q (q in the mantissa); the
 * nibbles 4 bits up give 1024 + 16 q, which * 1/16 - (64 + z) brings to q - z in one FMA.
 * za: the half 1024 + z of column g, twice; zb: the half -(64 + z) of column g + 8, twice. */
static CU_HD void cu_awq_frag(uint32_t w, uint32_t za, uint32_t zb, uint32_t (&a)[4])
{
    const uint32_t SIXTEENTH = 0x2C002C00u;
    uint32_t u = w >> 8;
    a[0] = cu_hsub2(cu_awq_nib(w, 0x000F000Fu), za);
    a[1] = cu_hfma2(cu_awq_nib(w, 0x00F000F0u), SIXTEENTH, zb);
    a[2] = cu_hsub2(cu_awq_nib(u, 0x000F000Fu), za);
    a[3] = cu_hfma2(cu_awq_nib(u, 0x00F000F0u), SIXTEENTH, zb);
}

/* The zero-point constants of cu_awq_frag from two meta words (columns g and g + 8). */
static CU_HD uint32_t cu_awq_za(uint32_t meta) { return (0x6400u + ((meta >> 16) & 0xffu)) * 0x10001u; }
static CU_HD uint32_t cu_awq_zb(uint32_t meta) { return (0xD400u + 16u * ((meta >> 16) & 0xffu)) * 0x10001u; }

#ifdef __CUDA_ARCH__
template <bool BF>
static __device__ __forceinline__ void cu_mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    if (BF)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

static inline bool cu_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* cp.async (sm_80): 16 bytes global -> shared, or 16 zeros (ok false: src is then any valid address,
 * and unread); on the host (tests/cuda_host.cu) a plain copy. Committed as groups; cu_cp_wait<N>
 * returns when at most N of the thread's groups are still in flight. */
static CU_HD void cu_cp16(void *dst, const void *src, bool ok = true)
{
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
#else
    if (ok) memcpy(dst, src, 16);
    else memset(dst, 0, 16);
#endif
}

#ifdef __CUDA_ARCH__
static __device__ __forceinline__ void cu_cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void cu_cp_wait(void) { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
#endif

/* Programmatic dependent launch (sm_90; no-ops below). A kernel launched by cu_launch with
 * pdl set may start while the stream's previous kernel is still running, once every block of
 * that one has called cu_pdl_trigger (or exited); before cu_pdl_wait returns (the previous
 * kernel complete, its writes visible) it may touch nothing but constants such as weights, and the
 * step's positions and slots (uploaded before the step's first kernel).
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

/* Block-wide (every thread calls it): publish the block's global writes, count the block in at
 * *c, and say whether it is the last of n to arrive. The last one sees everything the others
 * wrote, and finds *c back at zero for the next launch (graph replays). */
static __device__ __forceinline__ bool cu_arrive_last(int *c, int n)
{
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(c, 1) == n - 1;
        if (last) *c = 0;
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

/* The launch attribute that makes blocks x .. x + cluster - 1 one thread-block cluster (sm_90). */
static inline cudaLaunchAttribute cu_cluster_attr(int cluster)
{
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeClusterDimension;
    at.val.clusterDim.x = (unsigned)cluster, at.val.clusterDim.y = 1, at.val.clusterDim.z = 1;
    return at;
}

/* cluster > 1: blocks x .. x + cluster - 1 form one thread-block cluster (sm_90). */
template <typename... P, typename... A>
static cudaError_t cu_launch_cl(void (*kernel)(P...), dim3 grid, dim3 block, int cluster, size_t smem, cudaStream_t s,
                                bool pdl, A &&...args)
{
    cudaLaunchAttribute at[2];
    int na = 0;
    if (pdl) {
        at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[na++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cluster > 1) at[na++] = cu_cluster_attr(cluster);
    cudaLaunchConfig_t c = {};
    c.gridDim = grid, c.blockDim = block, c.dynamicSmemBytes = smem, c.stream = s;
    c.attrs = at, c.numAttrs = (unsigned)na;
    return cudaLaunchKernelEx(&c, kernel, static_cast<A &&>(args)...);
}

template <typename... P, typename... A>
static cudaError_t cu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, bool pdl,
                             A &&...args)
{
    return cu_launch_cl(kernel, grid, block, 1, smem, s, pdl, static_cast<A &&>(args)...);
}

#endif
