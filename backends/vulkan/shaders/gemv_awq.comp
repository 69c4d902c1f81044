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
 * p[7] K, p[8] N, p[9] has bias, p[10] groups per slice (gps).
 *
 * With FUSED (gemv_awq_fused, decode steps of <= 8 tokens; planned in
 * vk_prog.c) the same loop computes up to three weights sharing x, with the
 * nodes around them folded in (FL, a specialisation, picks what):
 *   NORM    x is the input of an rmsnorm: every work-group sums x^2 itself
 *           (no cross-group sync), the loop reads x * norm_w (staged in
 *           shared memory when it fits, XS), and the sums are scaled by
 *           1 / rms at the end;
 *   M_QKV   weights 0..2 in consecutive work-group ranges (W0, W1, rest);
 *           with RoPE on a weight, lanes 0..15 own columns i and lanes
 *           16..31 columns i + hd/2 of one head, so the epilogue rotates the
 *           pair through shared memory; k and v may go straight into the KV
 *           cache at (seq[t], head, pos[t]) (then gqa_attn skips its store);
 *   M_SWIGLU each invocation computes gate, then up, of its column and
 *           writes silu(gate) * up;
 *   M_ADD   y = x w + r (the residual add after o_proj or down_proj).
 * Bindings: 0 x, 1..3 the AWQ weights (q then meta, as one range), 4..6
 * biases, 8 norm weight, 9..11 outputs of weight 0..2, 12 k cache, 13 v
 * cache, 14 r. Words from p[17]: see the P_* names below.
 *
 * With IDOT as well (gemv_awq_fused_idot: devices with
 * VK_KHR_shader_integer_dot_product, see vk.c) the loop runs on packed int8
 * dot products instead of the dequantising FMAs: three bit operations and
 * four dot products per 8 weights and token instead of ~25 instructions, the
 * issue rate that kept the FMA loop from the memory's pace. x (times norm_w)
 * is quantised per 32-block and token to 15 bits as two int8 planes: with
 * m = max |x| over the block, y = 127 x / m, h = round(y) and
 * l = round(128 (y - h)) in -64..64, x ~ (128 h + l) m / (127 * 128) (NMSE
 * ~1e-9, below f16's). A word's low nibbles (k, k+2, k+4, k+6) meet x's even
 * bytes and its high nibbles the odd ones, so a block's sum is an exact
 * integer, d = 128 dot(q, h) + dot(q, l) - z sum(128 h + l), and the group
 * adds scale / (127 * 128) * sum over its 4 blocks of m d. Shared memory:
 * 2.25 K bytes a token.
 *
 * Who quantises x (BDL, a specialisation, bits 2..):
 *   by default every work-group, in a prologue that reads x (and norm_w)
 *   twice: ~10% of a 7B decode step;
 *   XIN  the fused GEMV that made x did, in its epilogue (its XOUT): the
 *        work-group copies the planes and block words (binding 15) into
 *        shared memory, and a folded rmsnorm takes its sum of x^2 from the
 *        blocks' partial sums.
 *   XOUT (M_ADD, M_SWIGLU; with or without IDOT) after writing y, each
 *        work-group quantises its 32 columns (one block) of every row for
 *        the next GEMV, times that GEMV's norm weight (XNW: binding 13, its
 *        dtype XNDT), into binding 12. A link's buffer, for N columns of y:
 *        planes uvec4 [NT][N/8] as xq, then [NT][N/32] uvec4 of the 4 chunk
 *        sums of 128 h + l, then [NT][N/32] (m bits, sum of y^2 bits, 0, 0).
 *        Rows from T on are not written; readers take row T - 1. */
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable
layout(local_size_x = 32, local_size_y_id = 2) in;
layout(constant_id = 0) const uint NT = 1;
layout(constant_id = 1) const uint BDL = 0; /* bits 0..1 the bias dtype; FUSED: 2 XIN, 3 XOUT, 4 XNW, 5..6 XNDT */
const uint BDT = BDL & 3u;
#ifndef FUSED
layout(constant_id = 3) const uint XVEC = 1; /* 0: x does not start on 16 bytes: float loads */
layout(std430, binding = 1) readonly buffer Q { uvec4 q[]; };
layout(std430, binding = 2) readonly buffer M { uint meta[]; };
layout(std430, binding = 4) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };
#else
/* FL: bit 0 XVEC, 1..2 mode, 3 NORM, 4..5 norm weight dtype, 6 f16 cache, 7 XS: x * norm_w staged in shared
 * memory (when it fits), 8.. K / 4 (with XS) */
layout(constant_id = 3) const uint FL = 1;
const uint XVEC = FL & 1u, MODE = (FL >> 1) & 3u, NORM = (FL >> 3) & 1u, NDT = (FL >> 4) & 3u, CDT = (FL >> 6) & 1u;
const uint XS = (FL >> 7) & 1u, XS4 = XS != 0u ? (FL >> 8) * NT : 1u;
const uint XIN = (BDL >> 2) & 1u, XOUT = (BDL >> 3) & 1u, XNW = (BDL >> 4) & 1u, XNDT = (BDL >> 5) & 3u;
uint pack8x4(ivec4 v) { return (uint(v.x) & 255u) | (uint(v.y) & 255u) << 8 | (uint(v.z) & 255u) << 16 | uint(v.w) << 24; }
/* x[8c .. 8c + 7] (va, vb) with block maximum m as one chunk of the planes (see the top); qs: its sum of 128 h + l */
uvec4 quant8(vec4 va, vec4 vb, float m, out int qs)
{
    float f = m > 0.0 ? 127.0 / m : 0.0; /* inf, NaN: 0 here, NaN at the end (m is in the result) */
    va *= f, vb *= f;
    vec4 ha = roundEven(va), hb = roundEven(vb);
    ivec4 la = ivec4(roundEven((va - ha) * 128.0)), lb = ivec4(roundEven((vb - hb) * 128.0));
    ivec4 ia = ivec4(ha), ib = ivec4(hb), q = (ia + ib) * 128 + la + lb;
    qs = q.x + q.y + q.z + q.w;
    return uvec4(pack8x4(ivec4(ia.x, ia.z, ib.x, ib.z)), pack8x4(ivec4(ia.y, ia.w, ib.y, ib.w)),
                 pack8x4(ivec4(la.x, la.z, lb.x, lb.z)), pack8x4(ivec4(la.y, la.w, lb.y, lb.w)));
}
#ifdef IDOT
/* FL bits 8..: K / 8 (x's chunks of 8 per token); XS is never set */
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4452)
int sudot(uint s8x4, uint u8x4, spirv_literal uint packed_4x8); /* OpSUDotKHR, PackedVectorFormat4x8Bit (0) */
const uint K8 = FL >> 8, KB = K8 / 4u;
shared uvec4 xq[K8 * NT]; /* [token][chunk of 8]: h of the even k, h of the odd k, l of the even k, l of the odd k */
shared uint xgm[KB * NT]; /* [token][block of 32]: max |x| as bits (monotonic for non-negative floats) */
shared int xgs[KB * NT];  /* [token][block of 32]: sum of 128 h + l */
layout(std430, binding = 15) readonly buffer XI4 { uvec4 xi4[]; }; /* XIN */
#endif
#define M_QKV 1u
#define M_SWIGLU 2u
#define M_ADD 3u
#define P_K 17
#define P_N0 18     /* columns of weight 0, 1, 2 */
#define P_W0 21     /* M_QKV: work-groups of weight 0, 1 */
#define P_GPS 23
#define P_FLAGS 24  /* bits 0..2 bias of w, 3..5 write y of w, 6..7 rope on w 0..1, 8 k, v into the caches */
#define P_EPS 25
#define P_HD 26
#define P_TAB0 27   /* step-buffer word of the cos/sin table of weight 0, 1 */
#define P_C 29      /* cache positions */
#define P_SEQ 30    /* step-buffer word of seq[0] */
layout(std430, binding = 1) readonly buffer Q0 { uvec4 q0[]; };
layout(std430, binding = 1) readonly buffer M0 { uint m0[]; };
layout(std430, binding = 2) readonly buffer Q1 { uvec4 q1[]; };
layout(std430, binding = 2) readonly buffer M1 { uint m1[]; };
layout(std430, binding = 3) readonly buffer Q2 { uvec4 q2[]; };
layout(std430, binding = 3) readonly buffer M2 { uint m2[]; };
layout(std430, binding = 4) readonly buffer B0 { uint b0[]; };
layout(std430, binding = 5) readonly buffer B1 { uint b1[]; };
layout(std430, binding = 6) readonly buffer B2 { uint b2[]; };
layout(std430, binding = 8) readonly buffer NW4 { vec4 nw4[]; };
layout(std430, binding = 8) readonly buffer NWC { uvec4 nwc[]; };
layout(std430, binding = 9) writeonly buffer Y0 { float y0[]; };
layout(std430, binding = 10) writeonly buffer Y1 { float y1[]; };
layout(std430, binding = 11) writeonly buffer Y2 { float y2[]; };
layout(std430, binding = 12) writeonly buffer KC { uint kc[]; };
layout(std430, binding = 13) writeonly buffer VC { uint vc[]; };
layout(std430, binding = 14) readonly buffer R { float r[]; };
layout(std430, binding = 12) writeonly buffer XO4 { uvec4 xo4[]; }; /* XOUT: M_ADD, M_SWIGLU have no caches */
layout(std430, binding = 12) writeonly buffer XO1 { uint xo1[]; };
layout(std430, binding = 13) readonly buffer XNWB { uint xnw[]; };  /* XNW */
shared float fq[XOUT != 0u ? 2u * NT * 32u : 1u]; /* XOUT: [token][column] y, then y * the next norm weight */
const uint NPASS = MODE == M_SWIGLU ? 2u : 1u;
shared float nred[NT * 32u], fo[NPASS * NT * 32u], fo2[NT * 32u];
shared vec4 xs4[XS4]; /* XS: [token][K / 4] */

/* weight w's loads (w is uniform per work-group except in M_SWIGLU) */
uvec4 qload(uint w, uint i)
{
    if (w == 0u) return q0[i];
    if (w == 1u) return q1[i];
    return q2[i];
}
uint mload(uint w, uint i)
{
    if (w == 0u) return m0[i];
    if (w == 1u) return m1[i];
    return m2[i];
}
float bload(uint w, uint n)
{
    if (w == 0u) return LOADT(BDT, b0, OFF(4) + n);
    if (w == 1u) return LOADT(BDT, b1, OFF(5) + n);
    return LOADT(BDT, b2, OFF(6) + n);
}
/* norm weights 4 k4 .. 4 k4 + 7 (k4 even) in 16-byte loads: one chunk of halves or two of floats */
void nwload8(uint k4, out vec4 na, out vec4 nb)
{
    if (NDT == 0u) {
        na = nw4[(OFF(8) >> 2) + k4], nb = nw4[(OFF(8) >> 2) + k4 + 1u];
    } else {
        uvec4 c = nwc[(OFF(8) >> 3) + (k4 >> 1)];
        if (NDT == 1u) {
            na = vec4(unpackHalf2x16(c.x), unpackHalf2x16(c.y)), nb = vec4(unpackHalf2x16(c.z), unpackHalf2x16(c.w));
        } else {
            na = uintBitsToFloat(uvec4(c.x << 16, c.x & 0xffff0000u, c.y << 16, c.y & 0xffff0000u));
            nb = uintBitsToFloat(uvec4(c.z << 16, c.z & 0xffff0000u, c.w << 16, c.w & 0xffff0000u));
        }
    }
}
vec4 nwload4(uint k4)
{
    vec4 na, nb;
    nwload8(k4 & ~1u, na, nb);
    return (k4 & 1u) == 0u ? na : nb;
}
#endif
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 0) readonly buffer X1 { float x1[]; };
shared float red[gl_WorkGroupSize.y * NT * 32u]; /* [slice][token][column] */

/* x[t, 4 k4 .. 4 k4 + 3]: row r4 = x row of t in vec4 (XVEC) or its first float */
vec4 xload(uint r4, uint k4)
{
    if (XVEC != 0u) return x4[r4 + k4];
    uint i = r4 + 4u * k4;
    return vec4(x1[i], x1[i + 1u], x1[i + 2u], x1[i + 3u]);
}

#ifdef IDOT
/* x[t, 8c .. 8c + 7] times the norm weights (NORM; the 1 / rms comes at the end) */
void xchunk(uint r4, uint c, out vec4 va, out vec4 vb)
{
    va = xload(r4, 2u * c), vb = xload(r4, 2u * c + 1u);
    if (NORM != 0u) {
        vec4 na, nb;
        nwload8(2u * c, na, nb);
        va *= na, vb *= nb;
    }
}
#endif

const uvec4 NIB = uvec4(0xfu, 0xf0u, 0xf00u, 0xf000u);
const vec4 UNSCALE = vec4(1.0, 1.0 / 16.0, 1.0 / 256.0, 1.0 / 4096.0);

void main()
{
    uint lx = gl_LocalInvocationID.x, s = gl_LocalInvocationID.y, S = gl_WorkGroupSize.y;
#ifndef FUSED
    uint K = pc.p[7], N = pc.p[8], gps = pc.p[10], G = K / 128u, T = ROWS;
    uint n = flat_group() * 32u + lx, nc = min(n, N - 1u); /* columns past N load column N-1, write nothing */
    uint qo = OFF(1) + nc, mo = OFF(2) + nc;
#define QLOAD(i) q[i]
#define MLOAD(i) meta[i]
#define XN(t, k4, nv) xload(xr[t], k4)
#define NPASS 1u
#else
    uint K = pc.p[P_K], gps = pc.p[P_GPS], G = K / 128u, T = ROWS, fl = pc.p[P_FLAGS];
    uint wg = flat_group(), w = 0u, rope = 0u, n;
    if (MODE == M_QKV) {
        uint W0 = pc.p[P_W0], W1 = pc.p[P_W0 + 1];
        w = wg < W0 ? 0u : wg < W0 + W1 ? 1u : 2u;
        wg -= w == 0u ? 0u : w == 1u ? W0 : W0 + W1;
        rope = w < 2u ? (fl >> (6u + w)) & 1u : 0u;
    }
    uint N = pc.p[P_N0 + w], hd = pc.p[P_HD], h2 = hd / 2u;
    if (rope != 0u) { /* 16 pairs (i, i + hd/2) of one head */
        uint j = wg * 16u + (lx & 15u);
        n = j / h2 * hd + j % h2 + (lx >= 16u ? h2 : 0u);
    } else {
        n = wg * 32u + lx;
    }
    uint nc = min(n, N - 1u);
    uint qo = OFF(1u + w) + nc, mo = OFF(1u + w) * 4u + K / 32u * N * 4u + nc; /* meta follows q in the range */
#define QLOAD(i) qload(w, i)
#define MLOAD(i) mload(w, i)
#define XN(t, k4, nv) (XS != 0u ? xs4[(t) * (K >> 2) + (k4)] : xload(xr[t], k4) * (nv))
    float inv[NT];
#ifdef IDOT
    if (XIN != 0u) { /* x as its maker quantised it (see the top): copied; x^2 summed from the blocks' sums */
        uint li = s * 32u + lx, WGN = 32u * S, xb = OFF(15), mb = xb + NT * (K8 + KB);
        for (uint i = li; i < K8 * NT; i += WGN) xq[i] = xi4[xb + min(i / K8, T - 1u) * K8 + i % K8];
        for (uint i = li; i < KB * NT; i += WGN) {
            uint r = min(i / KB, T - 1u) * KB + i % KB;
            ivec4 c = ivec4(xi4[xb + NT * K8 + r]);
            xgs[i] = c.x + c.y + c.z + c.w, xgm[i] = xi4[mb + r].x;
        }
        if (NORM != 0u && s == 0u)
            [[unroll]] for (uint t = 0u; t < NT; t++) {
                uint r = mb + min(t, T - 1u) * KB;
                float part = 0.0;
                for (uint b = lx; b < KB; b += 32u) part += uintBitsToFloat(xi4[r + b].y);
                nred[t * 32u + lx] = part;
            }
        barrier();
    } else
#endif
    if (NORM != 0u) { /* sum of x^2 per token over the whole row, in a fixed order */
        uint li = s * 32u + lx, WGN = 32u * S;
        [[unroll]] for (uint t = 0u; t < NT; t++) {
            uint xo = OFF(0) + min(t, T - 1u) * K;
            float part = 0.0;
            for (uint k = li; k < K; k += WGN) part = fma(x1[xo + k], x1[xo + k], part);
            red[(s * NT + t) * 32u + lx] = part;
            if (XS != 0u) /* x * norm_w once per work-group instead of once per column */
                for (uint k4 = li; k4 < K / 4u; k4 += WGN) {
                    uint i = xo + 4u * k4;
                    xs4[t * (K >> 2) + k4] = vec4(x1[i], x1[i + 1u], x1[i + 2u], x1[i + 3u]) * nwload4(k4);
                }
        }
        barrier();
        if (s == 0u)
            [[unroll]] for (uint t = 0u; t < NT; t++) {
                float v = 0.0;
                for (uint i = 0u; i < S; i++) v += red[(i * NT + t) * 32u + lx];
                nred[t * 32u + lx] = v;
            }
        barrier();
    }
    if (NORM != 0u)
        [[unroll]] for (uint t = 0u; t < NT; t++) {
            float v = 0.0;
            for (uint l = 0u; l < 32u; l++) v += nred[t * 32u + l];
            inv[t] = 1.0 / sqrt(v / float(K) + PF(P_EPS));
        }
#endif
    uint xr[NT];
    [[unroll]] for (uint t = 0u; t < NT; t++) {
        xr[t] = OFF(0) + min(t, T - 1u) * K;
        if (XVEC != 0u) xr[t] >>= 2;
    }
#ifdef IDOT
    if (XIN == 0u) { /* x quantised here: block maxima, then the planes and their sums (see the top) */
        uint li = s * 32u + lx, WGN = 32u * S;
        for (uint i = li; i < KB * NT; i += WGN) xgm[i] = 0u, xgs[i] = 0;
        barrier();
        /* chunk i = t K8 + c is in block i / 4 = t KB + c / 4 of xgm, xgs (K8 = 4 KB) */
        for (uint i = li; i < K8 * NT; i += WGN) {
            vec4 va, vb;
            xchunk(xr[i / K8], i % K8, va, vb);
            vec4 m = max(abs(va), abs(vb));
            atomicMax(xgm[i / 4u], floatBitsToUint(max(max(m.x, m.y), max(m.z, m.w))));
        }
        barrier();
        for (uint i = li; i < K8 * NT; i += WGN) {
            vec4 va, vb;
            int qs;
            xchunk(xr[i / K8], i % K8, va, vb);
            xq[i] = quant8(va, vb, uintBitsToFloat(xgm[i / 4u]), qs);
            atomicAdd(xgs[i / 4u], qs);
        }
        barrier();
    }
#endif
    for (uint pass = 0u; pass < NPASS; pass++) {
#ifdef FUSED
        if (MODE == M_SWIGLU) /* gate, then up, of the same columns */
            w = pass, qo = OFF(1u + w) + nc, mo = OFF(1u + w) * 4u + K / 32u * N * 4u + nc;
#endif
        float acc[NT];
        [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] = 0.0;

        uint g0 = s * gps, g1 = min(g0 + gps, G);
        if (g0 < g1) {
            uvec4 a[4], b[4] = uvec4[4](uvec4(0u), uvec4(0u), uvec4(0u), uvec4(0u));
            [[unroll]] for (uint j = 0u; j < 4u; j++) a[j] = QLOAD(qo + (g0 * 4u + j) * N);
            uint am = MLOAD(mo + g0 * N);
            for (uint g = g0; g < g1; g++) {
                uint bm = 0u;
                if (g + 1u < g1) { /* the next group, before this one's arithmetic (uniform per slice) */
                    [[unroll]] for (uint j = 0u; j < 4u; j++) b[j] = QLOAD(qo + (g * 4u + 4u + j) * N);
                    bm = MLOAD(mo + (g + 1u) * N);
                }

#ifdef IDOT
                float pg[NT]; /* the group's sum of m d over its blocks (a[j] is block 4 g + j) */
                int z = int(am >> 16);
                [[unroll]] for (uint t = 0u; t < NT; t++) pg[t] = 0.0;
                [[unroll]] for (uint j = 0u; j < 4u; j++) {
                    int dh[NT], dl[NT];
                    [[unroll]] for (uint t = 0u; t < NT; t++) dh[t] = 0, dl[t] = 0;
                    [[unroll]] for (uint e = 0u; e < 4u; e++) {
                        uint qw = a[j][e], we = qw & 0x0f0f0f0fu, wo = (qw >> 4) & 0x0f0f0f0fu;
                        [[unroll]] for (uint t = 0u; t < NT; t++) {
                            uvec4 xc = xq[t * K8 + g * 16u + j * 4u + e];
                            dh[t] += sudot(xc.x, we, 0u) + sudot(xc.y, wo, 0u);
                            dl[t] += sudot(xc.z, we, 0u) + sudot(xc.w, wo, 0u);
                        }
                    }
                    [[unroll]] for (uint t = 0u; t < NT; t++) {
                        uint b = t * KB + g * 4u + j;
                        pg[t] = fma(uintBitsToFloat(xgm[b]), float(dh[t] * 128 + dl[t] - z * xgs[b]), pg[t]);
                    }
                }
                float sc = unpackHalf2x16(am & 0xffffu).x * (1.0 / (127.0 * 128.0));
                [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] = fma(sc, pg[t], acc[t]);
#else
                float zf = float(am >> 16);
                vec4 zv = vec4(8388608.0) + zf * vec4(1.0, 16.0, 256.0, 4096.0);
                vec4 p[NT];
                [[unroll]] for (uint t = 0u; t < NT; t++) p[t] = vec4(0.0);
                [[unroll]] for (uint j = 0u; j < 4u; j++) {
                    [[unroll]] for (uint e = 0u; e < 4u; e++) {
                        uint qw = a[j][e], k4 = g * 32u + j * 8u + e * 2u; /* k / 4 */
                        vec4 lo = uintBitsToFloat((uvec4(qw) & NIB) | 0x4B000000u) - zv;         /* k .. k+3 */
                        vec4 hi = uintBitsToFloat((uvec4(qw >> 16) & NIB) | 0x4B000000u) - zv; /* k+4 .. k+7 */
                        vec4 na = vec4(1.0), nb = vec4(1.0);
#ifdef FUSED
                        if (NORM != 0u && XS == 0u) nwload8(k4, na, nb);
#endif
                        [[unroll]] for (uint t = 0u; t < NT; t++) {
                            p[t] = fma(XN(t, k4, na), lo, p[t]);
                            p[t] = fma(XN(t, k4 + 1u, nb), hi, p[t]);
                        }
                    }
                }
                float sc = unpackHalf2x16(am & 0xffffu).x;
                [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] = fma(sc, dot(p[t], UNSCALE), acc[t]);
#endif
                a = b;
                am = bm;
            }
        }

        [[unroll]] for (uint t = 0u; t < NT; t++) red[(s * NT + t) * 32u + lx] = acc[t];
        barrier();
#ifndef FUSED
        for (uint t = s; t < NT; t += S) {
            float v = 0.0;
            for (uint i = 0u; i < S; i++) v += red[(i * NT + t) * 32u + lx];
            if (t < T && n < N) {
                if (pc.p[9] != 0u) v += LOADT(BDT, bias, OFF(4) + n);
                y[OFF(5) + t * N + n] = v;
            }
        }
#else
        for (uint t = s; t < NT; t += S) {
            float v = 0.0;
            for (uint i = 0u; i < S; i++) v += red[(i * NT + t) * 32u + lx];
            if (NORM != 0u) v *= inv[t];
            if (((fl >> w) & 1u) != 0u && n < N) v += bload(w, n);
            fo[(pass * NT + t) * 32u + lx] = v;
        }
        barrier();
#endif
    }
#ifdef FUSED
    for (uint t = s; t < NT; t += S) { /* u: up (M_SWIGLU) or the rope partner lane's value */
        float v = fo[t * 32u + lx], u = MODE == M_SWIGLU ? fo[(NT + t) * 32u + lx] : fo[t * 32u + (lx ^ 16u)];
        if (rope != 0u) {
            uint i = n % hd - (lx >= 16u ? h2 : 0u), tab = pc.p[P_TAB0 + w] + (t * h2 + i) * 2u;
            float c = uintBitsToFloat(step.w[tab]), sn = uintBitsToFloat(step.w[tab + 1u]);
            v = lx < 16u ? v * c - u * sn : v * c + u * sn;
        }
        fo2[t * 32u + lx] = v;
        if (t >= T || n >= N) continue;
        if (MODE == M_ADD || MODE == M_SWIGLU) {
            float o = MODE == M_ADD ? v + r[OFF(14) + t * N + n] : v / (1.0 + exp(-v)) * u;
            y0[OFF(9) + t * N + n] = o;
            if (XOUT != 0u) fq[t * 32u + lx] = o, fq[(NT + t) * 32u + lx] = XNW != 0u ? o * LOADT(XNDT, xnw, OFF(13) + n) : o;
        } else if (((fl >> (3u + w)) & 1u) != 0u) {
            if (w == 0u) y0[OFF(9) + t * N + n] = v;
            else if (w == 1u) y1[OFF(10) + t * N + n] = v;
            else y2[OFF(11) + t * N + n] = v;
        }
    }
    if (XOUT != 0u) { /* this block (columns 32 wg ..) of rows < T for the next GEMV: 4 lanes a row, a chunk each */
        barrier();
        uint N8 = N / 8u, NB = N / 32u, xb = OFF(12);
        for (uint i = s * 32u + lx; i < 4u * min(T, NT); i += 32u * S) {
            uint t = i / 4u, c = i % 4u, mb = 0u;
            float ss = 0.0;
            for (uint l = 0u; l < 32u; l++) {
                float v = fq[t * 32u + l];
                ss = fma(v, v, ss), mb = max(mb, floatBitsToUint(abs(fq[(NT + t) * 32u + l])));
            }
            uint e = (NT + t) * 32u + 8u * c;
            int qs;
            xo4[xb + t * N8 + wg * 4u + c] = quant8(vec4(fq[e], fq[e + 1u], fq[e + 2u], fq[e + 3u]),
                                                    vec4(fq[e + 4u], fq[e + 5u], fq[e + 6u], fq[e + 7u]),
                                                    uintBitsToFloat(mb), qs);
            xo1[(xb + NT * N8 + t * NB + wg) * 4u + c] = uint(qs);
            if (c == 0u) xo4[xb + NT * (N8 + NB) + t * NB + wg] = uvec4(mb, floatBitsToUint(ss), 0u, 0u);
        }
    }
    if (MODE == M_QKV) { /* k, v into the caches: an even lane packs its column and the next; tokens in order */
        barrier();
        if ((fl & 256u) != 0u && w >= 1u && s == 0u && (lx & 1u) == 0u && n + 1u < N) {
            uint hk = n / hd, d = n % hd, Hkv = N / hd;
            for (uint t = 0u; t < T && t < NT; t++) {
                uint pos = step.w[4u + t], sq = step.w[pc.p[P_SEQ] + t];
                uint dst = ((sq * Hkv + hk) * pc.p[P_C] + pos) * hd + d; /* element, even */
                float e0 = fo2[t * 32u + lx], e1 = fo2[t * 32u + lx + 1u];
                if (CDT == 1u) {
                    uint pk = packHalf2x16(vec2(e0, e1));
                    if (w == 1u) kc[(OFF(12) + dst) >> 1] = pk;
                    else vc[(OFF(13) + dst) >> 1] = pk;
                } else if (w == 1u) {
                    kc[OFF(12) + dst] = floatBitsToUint(e0), kc[OFF(12) + dst + 1u] = floatBitsToUint(e1);
                } else {
                    vc[OFF(13) + dst] = floatBitsToUint(e0), vc[OFF(13) + dst + 1u] = floatBitsToUint(e1);
                }
            }
        }
    }
#endif
}
