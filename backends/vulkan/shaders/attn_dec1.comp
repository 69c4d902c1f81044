#version 450
/* gqa_attn, part 2 for a one-row step whose row sees at most SP positions
 * (f16 caches, head_dim HD a power of two from 8 to 128): one work-group of
 * WG per query head, geometry (Hq). Short contexts are where decode
 * attention is latency, not bytes: attn_dec's rounds, partitions and join
 * are a chain of dependent steps. Here every K and V chunk of the row's
 * context is loaded into registers at once (all loads issued before any is
 * used), then
 *   scores: 4 invocations per position (chunks l, l + 4, ... of its K row, 64
 *   contiguous bytes per 4 invocations), positions lid / 4 + WG / 4 * r;
 *   their partial dots summed from shared memory by invocation c for c;
 *   softmax: max and sum in two levels of 16;
 *   P·V: V chunk f = lid + WG * i is (position f / NCH, chunk f % NCH), so an
 *   invocation keeps one chunk's 8 dims over its positions (NCH divides WG),
 *   and the WG / NCH invocations of a chunk are summed from shared memory by dim.
 * The GQA group's heads read the same K/V rows (cache hits after the first);
 * no partials, counters or join. The host records this only in the command
 * buffer of one-row steps over at most SP positions and attn_dec.comp only in
 * the others (cmd_variant in vk_prog.c); it still leaves at once past SP
 * positions, which its registers cannot hold. Shared memory: 9.1 KiB. The caches start on 16 bytes.
 * p[7] Hq, p[8] Hkv, p[10] C, p[11] scale, p[12] seq base word; OFF(3),
 * OFF(4) count 16-byte chunks. The same scheme as OpenCL's attn_dec1. */
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable
#define WG 256u
#define SP 256u /* most positions: ATT_SP in vk_prog.c (the code takes SP == WG) */
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint HD = 128; /* head_dim: 8, 16, 32, 64 or 128 */
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uvec4 kc[]; };
layout(std430, binding = 4) readonly buffer VC { uvec4 vc[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };

const uint NCH = HD / 8u;           /* 16-byte chunks of a row */
const uint KP = 4u * SP / WG;       /* K: passes of WG / 4 positions */
const uint DKC = (HD + 31u) / 32u;  /* K: chunks per invocation per position (head_dim < 32: some none) */
const uint VN = SP * NCH / WG;      /* V: chunks per invocation */
const uint LV = SP / 16u;           /* softmax: partial maxima and sums */
const float NEG_INF = -1.0 / 0.0;

shared vec4 part[2u * WG]; /* K partial dots [position][4], then P·V partials [WG / NCH][HD] */
shared float sc[SP], red[2u * LV];

vec4 lo4(uvec4 c) { return vec4(unpackHalf2x16(c.x), unpackHalf2x16(c.y)); } /* halves 0..3 of a chunk */
vec4 hi4(uvec4 c) { return vec4(unpackHalf2x16(c.z), unpackHalf2x16(c.w)); } /* ... 4..7 */

void main()
{
    uint lid = gl_LocalInvocationID.x, h = gl_WorkGroupID.x, Hq = pc.p[7], Hkv = pc.p[8], C = pc.p[10];
    uint L = step.w[4u] + 1u, s = step.w[pc.p[12]], l = lid % 4u;
    if (ROWS != 1u || L > SP) return; /* the whole work-group: attn_dec's step */
    uint base = (s * Hkv + h / (Hq / Hkv)) * C * NCH, kb = OFF(3) + base, vb = OFF(4) + base;
    vec4 qv[2u * DKC]; /* q's dims of chunks l + 4 i */
    bool kl = HD >= 32u || l < NCH; /* the invocation has K chunks (folds at head_dim >= 32) */
    [[unroll]] for (uint i = 0u; i < DKC; i++) {
        uint qa = OFF(0) + h * HD + 8u * (kl ? l + 4u * i : 0u);
        qv[2u * i] = vec4(q[qa], q[qa + 1u], q[qa + 2u], q[qa + 3u]);
        qv[2u * i + 1u] = vec4(q[qa + 4u], q[qa + 5u], q[qa + 6u], q[qa + 7u]);
    }
    uvec4 kr[KP][DKC], vr[VN];
    [[unroll]] for (uint r = 0u; r < KP; r++) {
        uint c = lid / 4u + WG / 4u * r;
        [[unroll]] for (uint i = 0u; i < DKC; i++) kr[r][i] = c < L && kl ? kc[kb + c * NCH + l + 4u * i] : uvec4(0u);
    }
    [[unroll]] for (uint i = 0u; i < VN; i++) {
        uint f = lid + WG * i;
        vr[i] = f < L * NCH ? vc[vb + f] : uvec4(0u);
    }
    [[unroll]] for (uint r = 0u; r < KP; r++) {
        vec4 a = vec4(0.0);
        [[unroll]] for (uint i = 0u; i < DKC; i++) {
            a = fma(qv[2u * i], lo4(kr[r][i]), a);
            a = fma(qv[2u * i + 1u], hi4(kr[r][i]), a);
        }
        part[lid / 4u + WG / 4u * r][l] = (a.x + a.y) + (a.z + a.w);
    }
    barrier();
    vec4 d = part[lid]; /* position lid's 4 partials */
    float sv = lid < L ? ((d.x + d.y) + (d.z + d.w)) * PF(11) : NEG_INF;
    sc[lid] = sv;
    barrier();
    if (lid < LV) {
        float m = NEG_INF;
        for (uint j = 0u; j < 16u; j++) m = max(m, sc[16u * lid + j]);
        red[lid] = m;
    }
    barrier();
    float M = NEG_INF;
    for (uint j = 0u; j < LV; j++) M = max(M, red[j]);
    sc[lid] = lid < L ? exp(sv - M) : 0.0; /* (position 0 is always in: M is finite) */
    barrier();
    if (lid < LV) {
        float z = 0.0;
        for (uint j = 0u; j < 16u; j++) z += sc[16u * lid + j];
        red[LV + lid] = z;
    }
    vec4 o0 = vec4(0.0), o1 = vec4(0.0);
    [[unroll]] for (uint i = 0u; i < VN; i++) {
        float p = sc[(lid + WG * i) / NCH]; /* zero past L, as the chunk */
        o0 = fma(vec4(p), lo4(vr[i]), o0);
        o1 = fma(vec4(p), hi4(vr[i]), o1);
    }
    part[2u * lid] = o0, part[2u * lid + 1u] = o1; /* = [lid / NCH][8 (lid % NCH) ..], HD = 8 NCH */
    barrier();
    if (lid < HD) {
        float a = 0.0, z = 0.0;
        for (uint j = 0u; j < WG / NCH; j++) a += part[(j * HD + lid) / 4u][lid % 4u];
        for (uint j = 0u; j < LV; j++) z += red[LV + j];
        y[OFF(5) + h * HD + lid] = a / z;
    }
}
