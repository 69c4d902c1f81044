#version 450
/* matmul for 1..8 tokens (GEMV) with 16-byte weight loads:
 * y[t, n] = sum_k x[t, k] w[n, k] + b[n], w [N, K] f32 / f16 / bf16.
 * vk_prog.c takes it when a row of w is a whole number of 16-byte chunks (4
 * f32 or 8 f16/bf16) and x and w start on 16 bytes; gemv.comp otherwise.
 *
 * A work-group owns RW consecutive rows. A team (a subgroup with
 * USE_SUBGROUP, else the whole work-group) takes R = 2 rows at a time; its
 * lanes stride over the rows in chunks, each lane loading U = 4 chunks of
 * both rows (128 bytes in flight) before any arithmetic. The NT tokens (a
 * specialisation: 1, 2, 4 or 8; rows beyond T repeat row T - 1 and are not
 * written) use each unpacked chunk while it is in registers; x chunks are
 * the same address across the team (a broadcast). Team sums: subgroupAdd,
 * or a shared-memory tree. Nothing in the work-group depends on the
 * subgroup size the host assumed when it picked RW: a team takes row pairs
 * rb = 2 team, 2 (team + teams), ... of the work-group's RW rows.
 *
 * Bindings: 0 x, 1 w, 2 bias, 3 y. p[7] K, p[8] N of this piece, p[9] row
 * stride of y, p[10] first column of the piece in y (and b), p[11] has bias. */
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 128u
layout(local_size_x = 128) in;
#else
#define WG 64u
layout(local_size_x = 64) in;
#endif
#define R 2u
#define U 4u
layout(constant_id = 0) const uint WDT = 0; /* 0 f32, 1 f16, 2 bf16 */
layout(constant_id = 1) const uint BDT = 0;
layout(constant_id = 2) const uint NT = 1;
layout(constant_id = 3) const uint RW = 8;  /* rows per work-group, a multiple of R */
layout(std430, binding = 0) readonly buffer X { vec4 x[]; };
layout(std430, binding = 1) readonly buffer W { uvec4 w[]; };
layout(std430, binding = 2) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
#ifndef USE_SUBGROUP
shared float red[R * NT * WG];
#endif

/* elements 0..3 and 4..7 of a chunk of 8 halves (f16 or bf16) */
vec4 lo_half(uvec4 c)
{
    if (WDT == 1u) return vec4(unpackHalf2x16(c.x), unpackHalf2x16(c.y));
    return uintBitsToFloat(uvec4(c.x << 16, c.x & 0xffff0000u, c.y << 16, c.y & 0xffff0000u));
}
vec4 hi_half(uvec4 c)
{
    if (WDT == 1u) return vec4(unpackHalf2x16(c.z), unpackHalf2x16(c.w));
    return uintBitsToFloat(uvec4(c.z << 16, c.z & 0xffff0000u, c.w << 16, c.w & 0xffff0000u));
}

void main()
{
    uint K = pc.p[7], N = pc.p[8], T = ROWS;
    uint EPC = WDT == 0u ? 4u : 8u;             /* elements per 16-byte chunk */
    uint KC = K / EPC, wo = OFF(1) / EPC;       /* chunks per row; first chunk of the piece */
    uint xr[NT];                                /* x row of token t, in vec4 */
    [[unroll]] for (uint t = 0u; t < NT; t++) xr[t] = (OFF(0) + min(t, T - 1u) * K) / 4u;
#ifdef USE_SUBGROUP
    uint team = gl_SubgroupID, teams = gl_NumSubgroups, lane = gl_SubgroupInvocationID, tsz = gl_SubgroupSize;
#else
    uint team = 0u, teams = 1u, lane = gl_LocalInvocationID.x, tsz = WG;
#endif
    uint r0 = flat_group() * RW;
    for (uint rb = team * R; rb < RW; rb += teams * R) {
        uint wr[R];
        [[unroll]] for (uint r = 0u; r < R; r++) wr[r] = wo + min(r0 + rb + r, N - 1u) * KC;
        vec4 acc[R][NT];
        [[unroll]] for (uint r = 0u; r < R; r++)
            [[unroll]] for (uint t = 0u; t < NT; t++) acc[r][t] = vec4(0.0);
        for (uint c = lane; c < KC; c += U * tsz) {
            uvec4 wv[R][U];
            [[unroll]] for (uint u = 0u; u < U; u++) {
                uint cc = c + u * tsz;
                [[unroll]] for (uint r = 0u; r < R; r++) wv[r][u] = cc < KC ? w[wr[r] + cc] : uvec4(0u);
            }
            [[unroll]] for (uint u = 0u; u < U; u++) {
                uint cc = c + u * tsz;
                if (cc >= KC) break;
                if (WDT == 0u) {
                    [[unroll]] for (uint t = 0u; t < NT; t++) {
                        vec4 xa = x[xr[t] + cc];
                        [[unroll]] for (uint r = 0u; r < R; r++)
                            acc[r][t] = fma(xa, uintBitsToFloat(wv[r][u]), acc[r][t]);
                    }
                } else {
                    vec4 lo[R], hi[R];
                    [[unroll]] for (uint r = 0u; r < R; r++) lo[r] = lo_half(wv[r][u]), hi[r] = hi_half(wv[r][u]);
                    [[unroll]] for (uint t = 0u; t < NT; t++) {
                        vec4 xa = x[xr[t] + 2u * cc], xb = x[xr[t] + 2u * cc + 1u];
                        [[unroll]] for (uint r = 0u; r < R; r++) {
                            acc[r][t] = fma(xa, lo[r], acc[r][t]);
                            acc[r][t] = fma(xb, hi[r], acc[r][t]);
                        }
                    }
                }
            }
        }
        [[unroll]] for (uint r = 0u; r < R; r++) {
            uint n = r0 + rb + r;
            [[unroll]] for (uint t = 0u; t < NT; t++) {
                float v = (acc[r][t].x + acc[r][t].y) + (acc[r][t].z + acc[r][t].w);
#ifdef USE_SUBGROUP
                v = subgroupAdd(v);
                if (subgroupElect() && t < T && n < N) {
#else
                uint l = gl_LocalInvocationID.x, j = r * NT + t;
                red[j * WG + l] = v;
                barrier();
                for (uint h = WG / 2u; h > 0u; h >>= 1) {
                    if (l < h) red[j * WG + l] += red[j * WG + l + h];
                    barrier();
                }
                if (l == 0u && t < T && n < N) {
                    v = red[j * WG];
#endif
                    if (pc.p[11] != 0u) v += LOADT(BDT, bias, OFF(2) + pc.p[10] + n);
                    y[OFF(3) + t * pc.p[9] + pc.p[10] + n] = v;
                }
            }
        }
    }
}
