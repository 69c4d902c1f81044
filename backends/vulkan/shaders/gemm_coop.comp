#version 450
/* matmul (f16 weight) / matmul_awq (-DAWQ) for many tokens on NVIDIA tensor
 * cores: VK_NV_cooperative_matrix, f16 x f16 -> f32 in 16x16x16 subgroup
 * operations, after the OpenCL backend's mma.cl.
 *
 * y[T,N] = x[T,K] W + b in output tiles of BM tokens (spec constant 3: 64 or
 * 128) x 128 columns, K in steps of 32. 256 invocations, 8 subgroups of 32
 * as 2 (rows) x 4 (columns): each owns BM/2 rows x 32 columns of the tile as
 * BM/32 x 2 accumulators of 16x16. x is rounded to f16; the weight is f16 as
 * stored, or AWQ as (q - z) * s rounded once to f16.
 *
 * Pipeline: two shared stages, each BM rows of x then 128 weight columns, a
 * row being 32 halves plus 8 of padding (80 bytes: the 8 rows a 16-byte-per-
 * row fragment load reads fall in distinct banks; every load and store of a
 * fragment starts on 16 bytes with a stride of a whole 16 bytes, as the
 * extension asks). Each K step issues the next step's global loads into
 * registers (x: BM/64 x two vec4; f16: two uvec4; AWQ: one uvec2 of q and
 * the meta word), runs the MMAs on the current stage, then converts the
 * registers into the other stage: one barrier per step, the loads in flight
 * during the math.
 *
 * AWQ on f16 pairs: nibbles s and s + 4 of a q word ((u >> 4s) & 0x000F000F)
 * or'ed into 0x6400 (1024.0) are 1024 + q exactly; minus 1024 + z gives q - z
 * exactly, times the scale rounds once: the f32 (q - z) * s rounded to f16.
 * Such a pair holds k = 8j + s and 8j + s + 4, so the AWQ variant stores x's
 * halves in that same order within each 8 k (the products are summed over k:
 * any order that x and W share is the same sum); the f16 variant keeps k in
 * order for both.
 *
 * Epilogue: each subgroup stores 16 x 32 of its accumulators into its own
 * slice of the (then idle) stages and writes them as rows of 32 floats, with
 * the bias and plain bounds checks on T and N.
 *
 * The work-group's linear id walks the row tiles first, so the work-groups
 * that share a weight tile run together (the weight is read from DRAM once).
 * vk.c makes pipelines of it only on a device that reports this
 * configuration with subgroups of 32, and keeps it only if it passes the
 * self-test (vk_coop.c).
 *
 * Bindings as gemm.comp: 0 x (f32, read as vec4), 1 w (f16 [N][K] read as
 * uvec4; AWQ q as uvec2, offset in words), 2 bias, 3 y, 4 AWQ meta. p[7] K,
 * p[8] N of this piece, p[9] row stride of y, p[10] first column of the
 * piece in y (and b), p[11] has bias. Needs K % 32 == 0 and x and w on 16
 * bytes (vk_prog.c checks). Grid: (ceil(N/128), ceil(T/BM)). */
#include "common.glsl"
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_control_flow_attributes : require
#define BN 128u
#define BK 32u
#define RS 5u   /* a shared row: 40 halves = 5 uvec4 */
#define CS 9u   /* an epilogue row: 36 floats = 9 uvec4 */
#define WG 256u
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint WDT = 1;
layout(constant_id = 1) const uint BDT = 0;
layout(constant_id = 3) const uint BM = 64; /* 64 or 128 */
layout(std430, binding = 0) readonly buffer X { vec4 x4[]; };
#ifdef AWQ
layout(std430, binding = 1) readonly buffer W { uvec2 q2[]; };
layout(std430, binding = 4) readonly buffer MT { uint meta[]; };
#else
layout(std430, binding = 1) readonly buffer W { uvec4 w4[]; };
#endif
layout(std430, binding = 2) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };

const uint STAGE = (BM + BN) * RS; /* uvec4 */
shared uvec4 sm[2u * STAGE];

#define FRAG fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

uint pack2(float lo, float hi) { return packFloat2x16(f16vec2(float16_t(lo), float16_t(hi))); }

/* ---- global -> registers -> a stage ----
 * x: chunk c = tid + 256 i is row c / 4, k 8 (c % 4) .. +7 as two vec4 */
void fetch_x(inout vec4 r[4], uint T, uint K, uint m0, uint k0, uint tid)
{
    [[unroll]] for (uint i = 0u; i < BM / 64u; i++) {
        uint c = tid + WG * i, m = m0 + (c >> 2), at = (OFF(0) + m * K + k0) / 4u + 2u * (c & 3u);
        r[2u * i] = r[2u * i + 1u] = vec4(0.0);
        if (m < T) r[2u * i] = x4[at], r[2u * i + 1u] = x4[at + 1u]; /* a branch: no load past T */
    }
}

void put_x(uint st, vec4 r[4], uint tid)
{
    [[unroll]] for (uint i = 0u; i < BM / 64u; i++) {
        uint c = tid + WG * i;
        vec4 a = r[2u * i], b = r[2u * i + 1u];
#ifdef AWQ /* word s: k s and s + 4, as the dequantised weight */
        uvec4 v = uvec4(pack2(a.x, b.x), pack2(a.y, b.y), pack2(a.z, b.z), pack2(a.w, b.w));
#else
        uvec4 v = uvec4(pack2(a.x, a.y), pack2(a.z, a.w), pack2(b.x, b.y), pack2(b.z, b.w));
#endif
        sm[st + (c >> 2) * RS + (c & 3u)] = v;
    }
}

#ifdef AWQ
/* column n0 + tid / 2, q words 2h and 2h + 1 (h = tid % 2: k 16h .. 16h + 15) and the column's meta;
 * past N: zeros (scale 0) */
uvec3 fetch_w(uint K, uint N, uint n0, uint k0, uint tid)
{
    uint n = n0 + (tid >> 1);
    if (n >= N) return uvec3(0u);
    uvec2 q = q2[(OFF(1) >> 1) + ((k0 >> 5) * N + n) * 2u + (tid & 1u)];
    return uvec3(q, meta[OFF(4) + (k0 >> 7) * N + n]);
}

/* q word u (k 8j + i in nibble i) -> 4 words: word s holds k 8j + s and 8j + s + 4 */
uvec4 dequant(uint u, f16vec2 z2, f16vec2 s2)
{
    uvec4 o;
    [[unroll]] for (uint s = 0u; s < 4u; s++)
        o[s] = packFloat2x16((unpackFloat2x16(((u >> (4u * s)) & 0x000f000fu) | 0x64006400u) - z2) * s2);
    return o;
}

void put_w(uint st, uvec3 r, uint tid)
{
    f16vec2 z2 = unpackFloat2x16((0x6400u + (r.z >> 16)) * 0x10001u); /* 1024 + z, twice */
    f16vec2 s2 = unpackFloat2x16((r.z & 0xffffu) * 0x10001u);
    uint at = st + BM * RS + (tid >> 1) * RS + 2u * (tid & 1u);
    sm[at] = dequant(r.x, z2, s2);
    sm[at + 1u] = dequant(r.y, z2, s2);
}
#else
/* f16 w [N][K]: chunk c = tid + 256 i is column c / 4, k 8 (c % 4) .. +7 */
void fetch_w(inout uvec4 r[2], uint K, uint N, uint n0, uint k0, uint tid)
{
    [[unroll]] for (uint i = 0u; i < 2u; i++) {
        uint c = tid + WG * i, n = n0 + (c >> 2);
        r[i] = uvec4(0u);
        if (n < N) r[i] = w4[(OFF(1) + n * K + k0) / 8u + (c & 3u)];
    }
}

void put_w(uint st, uvec4 r[2], uint tid)
{
    [[unroll]] for (uint i = 0u; i < 2u; i++) {
        uint c = tid + WG * i;
        sm[st + BM * RS + (c >> 2) * RS + (c & 3u)] = r[i];
    }
}
#endif

void main()
{
    uint tid = gl_LocalInvocationID.x, K = pc.p[7], N = pc.p[8], T = ROWS;
    /* row tiles first: the linear id of the (columns, rows) grid */
    uint rt = (T + BM - 1u) / BM, lin = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    uint m0 = (lin % rt) * BM, n0 = (lin / rt) * BN;
    uint sg = gl_SubgroupID, si = sg >> 2, sj = sg & 3u;
    ACC c[4][2]; /* [BM / 32][2] used */
    [[unroll]] for (uint i = 0u; i < BM / 32u; i++) c[i][0] = ACC(0.0), c[i][1] = ACC(0.0);

    vec4 rx[4];
#ifdef AWQ
    uvec3 rw;
#else
    uvec4 rw[2];
#endif
    fetch_x(rx, T, K, m0, 0u, tid);
#ifdef AWQ
    rw = fetch_w(K, N, n0, 0u, tid);
#else
    fetch_w(rw, K, N, n0, 0u, tid);
#endif
    put_x(0u, rx, tid);
    put_w(0u, rw, tid);
    barrier();
    uint s = 0u;
    for (uint k0 = 0u; k0 < K; k0 += BK) {
        bool more = k0 + BK < K;
        if (more) { /* the next step's loads, in flight during the MMAs */
            fetch_x(rx, T, K, m0, k0 + BK, tid);
#ifdef AWQ
            rw = fetch_w(K, N, n0, k0 + BK, tid);
#else
            fetch_w(rw, K, N, n0, k0 + BK, tid);
#endif
        }
        uint a0 = s + si * (BM / 2u) * RS, b0 = s + (BM + sj * 32u) * RS;
        [[unroll]] for (uint kk = 0u; kk < 2u; kk++) { /* k 0..15, 16..31: 2 uvec4 a half */
            FRAG a[4], b[2];
            [[unroll]] for (uint j = 0u; j < 2u; j++) coopMatLoadNV(b[j], sm, b0 + j * 16u * RS + 2u * kk, RS, true);
            [[unroll]] for (uint i = 0u; i < BM / 32u; i++) coopMatLoadNV(a[i], sm, a0 + i * 16u * RS + 2u * kk, RS, false);
            [[unroll]] for (uint i = 0u; i < BM / 32u; i++)
                [[unroll]] for (uint j = 0u; j < 2u; j++) c[i][j] = coopMatMulAddNV(a[i], b[j], c[i][j]);
        }
        if (more) { /* the other stage was last read before the previous barrier */
            put_x(s ^ STAGE, rx, tid);
            put_w(s ^ STAGE, rw, tid);
        }
        barrier();
        s ^= STAGE;
    }

    /* epilogue: 16 x 32 at a time through this subgroup's 16 x 36 floats of shared memory */
    uint lane = gl_SubgroupInvocationID, ep = sg * 16u * CS, n = n0 + sj * 32u + lane;
    float bv = pc.p[11] != 0u && n < N ? LOADT(BDT, bias, OFF(2) + pc.p[10] + n) : 0.0;
    [[unroll]] for (uint i = 0u; i < BM / 32u; i++) {
        coopMatStoreNV(c[i][0], sm, ep, CS, false);
        coopMatStoreNV(c[i][1], sm, ep + 4u, CS, false);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        uint m = m0 + si * (BM / 2u) + i * 16u;
        if (n < N)
            for (uint r = 0u; r < 16u && m + r < T; r++)
                y[OFF(3) + (m + r) * pc.p[9] + pc.p[10] + n] = uintBitsToFloat(sm[ep + r * CS + (lane >> 2)][lane & 3u]) + bv;
        subgroupMemoryBarrierShared();
        subgroupBarrier(); /* read before the next store */
    }
}
