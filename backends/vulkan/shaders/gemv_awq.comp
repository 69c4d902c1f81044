#version 450
/* matmul_awq for 1..8 tokens (GEMV), on the backend's AWQ layout (vk_impl.h):
 * q uvec4 [K/32][N] (column n's 32 nibbles of k = 32kb..32kb+31 per 16
 * bytes) and meta uint [K/128][N] (f16 scale | zero point << 16).
 *
 * One invocation per output column n and K slice. A work-group is 32
 * consecutive columns (x) by S slices (y = gl_WorkGroupSize.y, picked per
 * shape in vk_prog.c so that a large GPU is full); slice s owns the groups
 * [s * gps, (s + 1) * gps). Decode is bound by memory, so each invocation
 * loads a whole group (4 x 16 bytes + its meta word: a subgroup reads 4 x 512
 * contiguous bytes) one group ahead of the arithmetic: two groups in flight
 * per invocation. x rows are the same address across the subgroup (a
 * broadcast), read as vec4.
 *
 * Dequantisation costs one AND-OR, one FADD and one FMA per token per weight:
 * for nibble i < 4 of word w, (w & 15 << 4i) | 0x4B000000 is the float
 * 2^23 + q 16^i exactly, and subtracting 2^23 + z 16^i leaves (q - z) 16^i
 * exactly (integers below 2^24); nibbles 4..7 the same on w >> 16. The factor
 * 16^i and the scale are applied once per group: four partial sums per token,
 * summed as p.x + p.y/16 + p.z/256 + p.w/4096 times the scale.
 * The NT tokens (a specialisation: 1, 2, 4 or 8; rows beyond T repeat row
 * T - 1 and are not written) use each dequantised weight while it is in
 * registers. Slices are summed in shared memory in slice order: the result
 * does not depend on timing.
 *
 * Bindings: 0 x (f32, vec4 view when XVEC), 1 q, 2 meta, 4 bias, 5 y.
 * p[7] K, p[8] N, p[9] has bias, p[10] groups per slice (gps). */
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable
layout(local_size_x = 32, local_size_y_id = 2) in;
layout(constant_id = 0) const uint NT = 1;
layout(constant_id = 1) const uint BDT = 0;
layout(constant_id = 3) const uint XVEC = 1; /* 0: x does not start on 16 bytes: float loads */
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 0) readonly buffer X1 { float x1[]; };
layout(std430, binding = 1) readonly buffer Q { uvec4 q[]; };
layout(std430, binding = 2) readonly buffer M { uint meta[]; };
layout(std430, binding = 4) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };
shared float red[gl_WorkGroupSize.y * NT * 32u]; /* [slice][token][column] */

/* x[t, 4 k4 .. 4 k4 + 3]: row r4 = x row of t in vec4 (XVEC) or its first float */
vec4 xload(uint r4, uint k4)
{
    if (XVEC != 0u) return x4[r4 + k4];
    uint i = r4 + 4u * k4;
    return vec4(x1[i], x1[i + 1u], x1[i + 2u], x1[i + 3u]);
}

const uvec4 NIB = uvec4(0xfu, 0xf0u, 0xf00u, 0xf000u);
const vec4 UNSCALE = vec4(1.0, 1.0 / 16.0, 1.0 / 256.0, 1.0 / 4096.0);

void main()
{
    uint lx = gl_LocalInvocationID.x, s = gl_LocalInvocationID.y, S = gl_WorkGroupSize.y;
    uint K = pc.p[7], N = pc.p[8], gps = pc.p[10], G = K / 128u, T = ROWS;
    uint n = flat_group() * 32u + lx, nc = min(n, N - 1u); /* columns past N load column N-1, write nothing */
    uint qo = OFF(1) + nc, mo = OFF(2) + nc;
    uint xr[NT];
    [[unroll]] for (uint t = 0u; t < NT; t++) {
        xr[t] = OFF(0) + min(t, T - 1u) * K;
        if (XVEC != 0u) xr[t] >>= 2;
    }
    float acc[NT];
    [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] = 0.0;

    uint g0 = s * gps, g1 = min(g0 + gps, G);
    if (g0 < g1) {
        uvec4 a[4], b[4] = uvec4[4](uvec4(0u), uvec4(0u), uvec4(0u), uvec4(0u));
        [[unroll]] for (uint j = 0u; j < 4u; j++) a[j] = q[qo + (g0 * 4u + j) * N];
        uint am = meta[mo + g0 * N];
        for (uint g = g0; g < g1; g++) {
            uint bm = 0u;
            if (g + 1u < g1) { /* the next group, before this one's arithmetic (uniform per slice) */
                [[unroll]] for (uint j = 0u; j < 4u; j++) b[j] = q[qo + (g * 4u + 4u + j) * N];
                bm = meta[mo + (g + 1u) * N];
            }

            float zf = float(am >> 16);
            vec4 zv = vec4(8388608.0) + zf * vec4(1.0, 16.0, 256.0, 4096.0);
            vec4 p[NT];
            [[unroll]] for (uint t = 0u; t < NT; t++) p[t] = vec4(0.0);
            [[unroll]] for (uint j = 0u; j < 4u; j++) {
                [[unroll]] for (uint e = 0u; e < 4u; e++) {
                    uint w = a[j][e], k4 = g * 32u + j * 8u + e * 2u; /* k / 4 */
                    vec4 lo = uintBitsToFloat((uvec4(w) & NIB) | 0x4B000000u) - zv;         /* k .. k+3 */
                    vec4 hi = uintBitsToFloat((uvec4(w >> 16) & NIB) | 0x4B000000u) - zv; /* k+4 .. k+7 */
                    [[unroll]] for (uint t = 0u; t < NT; t++) {
                        p[t] = fma(xload(xr[t], k4), lo, p[t]);
                        p[t] = fma(xload(xr[t], k4 + 1u), hi, p[t]);
                    }
                }
            }
            float sc = unpackHalf2x16(am & 0xffffu).x;
            [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] = fma(sc, dot(p[t], UNSCALE), acc[t]);
            a = b;
            am = bm;
        }
    }

    [[unroll]] for (uint t = 0u; t < NT; t++) red[(s * NT + t) * 32u + lx] = acc[t];
    barrier();
    for (uint t = s; t < NT; t += S) {
        float v = 0.0;
        for (uint i = 0u; i < S; i++) v += red[(i * NT + t) * 32u + lx];
        if (t < T && n < N) {
            if (pc.p[9] != 0u) v += LOADT(BDT, bias, OFF(4) + n);
            y[OFF(5) + t * N + n] = v;
        }
    }
}
