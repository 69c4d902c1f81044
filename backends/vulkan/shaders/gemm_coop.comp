#version 450
/* matmul (f16 weight) / matmul_awq (-DAWQ) for many tokens on NVIDIA tensor
 * cores: VK_NV_cooperative_matrix, f16 x f16 -> f32 in 16x16x16 subgroup
 * operations. A work-group of 4 subgroups computes 64 tokens x 64 outputs;
 * per K step of 32 it stages x (f32 rounded to f16) and the weight tile (f16,
 * or AWQ dequantised to f16: (q - z) * scale, rounded once) in shared
 * memory, [row][k] with a stride of 32 halves; subgroup (i, j) owns the 32x32
 * quarter (i, j) of the tile as 2x2 accumulators. The results go through
 * shared memory so the edges of T and N are written with plain bounds checks.
 * vk.c makes pipelines of it only on a device that reports this
 * configuration and passes the self-test (vk_coop.c).
 * Bindings as gemm.comp: 0 x, 1 w (words), 2 bias, 3 y, 4 AWQ meta.
 * p[7] K, p[8] N of this piece, p[9] row stride of y, p[10] first column of
 * the piece in y (and b), p[11] has bias. Grid: (ceil(N/64), ceil(T/64)). */
#include "common.glsl"
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#define BM 64u
#define BN 64u
#define BK 32u
layout(local_size_x_id = 2) in; /* 4 x the subgroup size */
layout(constant_id = 0) const uint WDT = 1;
layout(constant_id = 1) const uint BDT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
#ifdef AWQ
layout(std430, binding = 4) readonly buffer MT { uint meta[]; };
#endif
shared float16_t as[BM * BK], bs[BN * BK];
shared float cs[BM * BN];

#define FRAG fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

void main()
{
    uint tid = gl_LocalInvocationID.x, WGN = gl_WorkGroupSize.x;
    uint K = pc.p[7], N = pc.p[8], T = ROWS, n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
    uint si = gl_SubgroupID >> 1, sj = gl_SubgroupID & 1u;
    ACC c[2][2];
    for (uint i = 0u; i < 2u; i++)
        for (uint j = 0u; j < 2u; j++) c[i][j] = ACC(0.0);
    for (uint k0 = 0u; k0 < K; k0 += BK) {
        for (uint idx = tid; idx < BM * BK; idx += WGN) {
            uint m = idx / BK, k = idx % BK;
            as[idx] = float16_t(m0 + m < T && k0 + k < K ? x[OFF(0) + (m0 + m) * K + k0 + k] : 0.0);
        }
#ifdef AWQ
        for (uint idx = tid; idx < BN * 4u; idx += WGN) { /* column n, word j of its 32 k (K % 128 == 0) */
            uint cl = idx >> 2, j = idx & 3u, n = n0 + cl;
            if (n < N) {
                uint wd = w[OFF(1) + ((k0 >> 5) * N + n) * 4u + j], mt = meta[OFF(4) + (k0 >> 7) * N + n];
                float s = unpackHalf2x16(mt & 0xffffu).x, z = float(mt >> 16);
                for (uint i = 0u; i < 8u; i++) bs[cl * BK + j * 8u + i] = float16_t((float((wd >> (4u * i)) & 15u) - z) * s);
            } else {
                for (uint i = 0u; i < 8u; i++) bs[cl * BK + j * 8u + i] = float16_t(0.0);
            }
        }
#else
        for (uint idx = tid; idx < BN * BK; idx += WGN) {
            uint n = idx / BK, k = idx % BK;
            bs[idx] = float16_t(n0 + n < N && k0 + k < K ? LOADT(WDT, w, OFF(1) + (n0 + n) * K + k0 + k) : 0.0);
        }
#endif
        barrier();
        for (uint kk = 0u; kk < BK; kk += 16u) {
            FRAG a[2], b[2];
            for (uint i = 0u; i < 2u; i++) {
                coopMatLoadNV(a[i], as, (si * 32u + i * 16u) * BK + kk, BK, false);
                coopMatLoadNV(b[i], bs, (sj * 32u + i * 16u) * BK + kk, BK, true); /* (k, n) at n * BK + k */
            }
            for (uint i = 0u; i < 2u; i++)
                for (uint j = 0u; j < 2u; j++) c[i][j] = coopMatMulAddNV(a[i], b[j], c[i][j]);
        }
        barrier();
    }
    for (uint i = 0u; i < 2u; i++)
        for (uint j = 0u; j < 2u; j++)
            coopMatStoreNV(c[i][j], cs, (si * 32u + i * 16u) * BN + sj * 32u + j * 16u, BN, false);
    barrier();
    for (uint idx = tid; idx < BM * BN; idx += WGN) {
        uint m = m0 + idx / BN, n = n0 + idx % BN;
        if (m >= T || n >= N) continue;
        float v = cs[idx];
        if (pc.p[11] != 0u) v += LOADT(BDT, bias, OFF(2) + pc.p[10] + n);
        y[OFF(3) + m * pc.p[9] + pc.p[10] + n] = v;
    }
}
