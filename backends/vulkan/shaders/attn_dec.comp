#version 450
/* gqa_attn, part 2 for decode (up to VK_GEMV_MAX_T rows), latency first:
 * one read of each K and V position serves every query head of its KV head
 * (the GQA group). Row t attends to positions 0 .. pos[t] of slot seq[t].
 * Geometry (Hkv * HB, T, PMAX): HB blocks of the group's G = Hq / Hkv query
 * heads (at most NQ each: heads g0 .. g0 + ng - 1), one row, one partition.
 *   Partitions (dec_parts, below; the merge computes the same): enough for
 *   about FILL work-groups per row, PLMIN to PLMAX positions each (down to DP
 *   while there are at most JOIN), a multiple of DP; work-groups past the
 *   row's partitions leave at once. So a 32K context fills a large GPU, and a
 *   row of 129 positions on 7B (4 KV heads) runs on 4 x 5 work-groups, not 4.
 *   Scores, in rounds of DP positions: 4 invocations per position each load
 *   16-byte chunks l, l + 4, ... of its K row (every 4 invocations read 64
 *   contiguous bytes), the next round's chunks in flight while this round's
 *   are used, and keep a partial dot product per query head; the 4 partials
 *   of a (head, position) are summed from shared memory into scores
 *   [head][position] (one barrier per round: two halves alternate).
 *   Softmax over the partition, not online: WG / NQ invocations per head
 *   find the max, turn the scores into e^(s - max) in place and sum them.
 *   P·V, in the same rounds: the round's V chunks (consecutive invocations
 *   contiguous; the first round loaded during the scores) go to shared
 *   memory as f32 and each invocation accumulates PVN (head, vec4 of dims)
 *   pairs over the round's positions.
 * One partition: y directly. Several: the unnormalised output, max and sum
 * to part [T][Hq][PMAX][hd + 2], joined in partition order, so nothing
 * depends on timing: up to JOIN partitions by the last work-group of the
 * (KV head block, row) to finish (a counter per pair, binding 2, which that
 * work-group returns to zero), beyond by the MERGE variant of this file
 * (geometry (Hq, T)), a dispatch of its own, recorded only for steps with
 * such a row (the host mirrors dec_parts: att_parts in vk_prog.c).
 * head_dim <= 128 and a multiple of 8; caches start on 16 bytes (vk_prog.c
 * falls back to attn.comp otherwise). Shared memory: 29.0 KiB.
 * CDT 1: f16 cache, 0: f32. p[7] Hq, p[8] Hkv, p[9] hd, p[10] C, p[11]
 * scale, p[12] seq base word, p[13] HB, p[14] FILL (work-groups per row
 * wanted at T = 1), p[15] PMAX; OFF(3), OFF(4) count 16-byte chunks.
 * It serves any step; one-row steps that attn_dec1 takes replay a command
 * buffer without it (cmd_variant in vk_prog.c). */
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable
#define WG 128u
#define NQ 8u                    /* query heads per work-group */
#define DP (WG / 4u)             /* positions per round */
#define PLMIN 64u
#define PLMAX 256u
#define JOIN 32u                 /* as ATT_JOIN in vk_prog.c */
#define JB 4u                    /* the join: partitions whose loads are issued together */
#define HDMAX 128u
#define KF4 (HDMAX / 16u)        /* vec4 of a K row per invocation (a quarter row) */
#define KCH KF4                  /* ... in 16-byte chunks: KF4 of f32, KF4 / 2 of f16 */
#define VCH (DP * HDMAX / (4u * WG)) /* ... of a V round per invocation */
#define PVN (NQ * HDMAX / (4u * WG)) /* (head, vec4 of dims) pairs per invocation */
#define SCL (PLMAX + 1u)         /* row stride of the scores */
#define SUB (WG / NQ)            /* softmax: invocations per head */
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint CDT = 1;
layout(std430, binding = 5) buffer Y { float y[]; };
/* the partials: k's binding, which the attention pass does not read (the counters take
 * v's). The join reads what other work-groups of its dispatch wrote: coherent there, so
 * not from a stale cache line; the merge reads them after a barrier, through the cache. */
#ifdef MERGE
layout(std430, binding = 1) readonly buffer Part { float part[]; };
#else
layout(std430, binding = 1) coherent buffer Part { float part[]; };
#endif

/* (partitions, positions per partition) of a row reaching L positions in a step of T rows;
 * att_parts in vk_prog.c computes the same partitions on the host: change both together */
uvec2 dec_parts(uint L, uint T)
{
    uint fill = (pc.p[14] + T - 1u) / T, hi = max((L + PLMIN - 1u) / PLMIN, min((L + DP - 1u) / DP, JOIN));
    uint P = min(clamp(fill, (L + PLMAX - 1u) / PLMAX, hi), pc.p[15]);
    uint PL = ((L + P - 1u) / P + DP - 1u) / DP * DP;
    return uvec2((L + PL - 1u) / PL, PL);
}

#ifdef MERGE
/* one work-group per (query head, row), for rows of more than JOIN partitions: the
 * partitions' outputs rescaled to the largest max */
void main()
{
    uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, Hq = pc.p[7], hd = pc.p[9], PM = pc.p[15];
    uint P = dec_parts(step.w[4u + t] + 1u, ROWS).x;
    if (P <= JOIN) return; /* attn_dec wrote y */
    uint pp = OFF(1) + (t * Hq + h) * PM * (hd + 2u);
    float M = -1.0 / 0.0, L = 0.0;
    for (uint p = 0u; p < P; p++) M = max(M, part[pp + p * (hd + 2u) + hd]);
    for (uint p = 0u; p < P; p++) {
        float mp = part[pp + p * (hd + 2u) + hd];
        if (mp > -1.0 / 0.0) L += part[pp + p * (hd + 2u) + hd + 1u] * exp(mp - M);
    }
    float inv = 1.0 / L;
    for (uint d = gl_LocalInvocationID.x; d < hd; d += WG) {
        float o = 0.0;
        for (uint p = 0u; p < P; p++) {
            float mp = part[pp + p * (hd + 2u) + hd];
            if (mp > -1.0 / 0.0) o = fma(part[pp + p * (hd + 2u) + d], exp(mp - M), o);
        }
        y[OFF(5) + (t * Hq + h) * hd + d] = o * inv;
    }
}
#else
layout(std430, binding = 2) coherent buffer Cnt { uint cnt[]; }; /* partitions done per (KV head block, row) */
shared uint s_last;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uvec4 kc[]; };
layout(std430, binding = 4) readonly buffer VC { uvec4 vc[]; };
shared vec4 qs4[NQ * HDMAX / 4u];
shared vec4 un4[DP * HDMAX / 4u > 2u * NQ * DP ? DP * HDMAX / 4u : 2u * NQ * DP]; /* K partials [2][NQ][DP] or V [DP][hd] */
shared float sc[NQ * SCL], smax[WG], ssum[WG];

const uint CE = CDT == 1u ? 8u : 4u; /* cache elements per 16-byte chunk */
const float NEG_INF = -1.0 / 0.0;

/* K chunks l + 4 i of position c, zero at or past c_end */
void fetch_k(inout uvec4 r[KCH], uint cb, uint c, uint c_end, uint nch, uint l)
{
    [[unroll]] for (uint i = 0u; i < KCH; i++)
        r[i] = c < c_end && l + 4u * i < nch ? kc[cb + c * nch + l + 4u * i] : uvec4(0u);
}

/* V chunks lid + WG i of the round from position c0, zero at or past c_end */
void fetch_v(inout uvec4 r[VCH], uint cb, uint c0, uint c_end, uint nch)
{
    [[unroll]] for (uint i = 0u; i < VCH; i++) {
        uint f = gl_LocalInvocationID.x + WG * i;
        r[i] = f < DP * nch && c0 + f / nch < c_end ? vc[cb + c0 * nch + f] : uvec4(0u);
    }
}

void main()
{
    uint lid = gl_LocalInvocationID.x, Hq = pc.p[7], Hkv = pc.p[8], hd = pc.p[9], C = pc.p[10], HB = pc.p[13];
    float scale = PF(11);
    uint G = Hq / Hkv, ngb = (G + HB - 1u) / HB, hk = gl_WorkGroupID.x / HB, g0 = gl_WorkGroupID.x % HB * ngb;
    uint t = gl_WorkGroupID.y, pi = gl_WorkGroupID.z, nq = min(ngb, G - g0);
    uint s = step.w[pc.p[12] + t], L = step.w[4u + t] + 1u;
    uvec2 pl = dec_parts(L, ROWS);
    uint P = pl.x;
    if (pi >= P) return; /* the whole work-group: past this row's partitions */
    uint c_beg = pi * pl.y, c_end = min(L, c_beg + pl.y), n = c_end - c_beg;
    uint nch = hd / CE, n4 = hd / 4u, h0 = hk * G + g0; /* query heads h0 .. h0 + nq - 1 */
    uint cbk = OFF(3) + (s * Hkv + hk) * C * nch, cbv = OFF(4) + (s * Hkv + hk) * C * nch;
    uint jj = lid / 4u, l = lid % 4u; /* scores: position c0 + jj, chunks l + 4 i */
    uvec4 kr[KCH], vr[VCH];
    fetch_k(kr, cbk, c_beg + jj, c_end, nch, l); /* the first round's K and V are in flight from here on */
    fetch_v(vr, cbv, c_beg, c_end, nch);
    for (uint e = lid; e < nq * n4; e += WG) { /* q into shared memory */
        uint v = e / n4, d4 = e - v * n4, qa = OFF(0) + (t * Hq + h0 + v) * hd + 4u * d4;
        qs4[v * (HDMAX / 4u) + d4] = vec4(q[qa], q[qa + 1u], q[qa + 2u], q[qa + 3u]);
    }
    barrier();
    uint rounds = (n + DP - 1u) / DP;
    for (uint rd = 0u; rd < rounds; rd++) { /* scores */
        uint c0 = c_beg + rd * DP;
        vec4 kf[KF4]; /* the chunks as f32 */
        [[unroll]] for (uint i = 0u; i < KCH; i++) {
            if (CDT == 0u) {
                kf[i] = uintBitsToFloat(kr[i]);
            } else if (i < KCH / 2u) {
                kf[2u * i] = vec4(unpackHalf2x16(kr[i].x), unpackHalf2x16(kr[i].y));
                kf[2u * i + 1u] = vec4(unpackHalf2x16(kr[i].z), unpackHalf2x16(kr[i].w));
            }
        }
        if (rd + 1u < rounds) fetch_k(kr, cbk, c0 + DP + jj, c_end, nch, l);
        uint rb = (rd & 1u) * NQ * DP; /* this round's half of the partials */
        for (uint v = 0u; v < nq; v++) {
            uint qb = v * (HDMAX / 4u);
            vec4 a = vec4(0.0);
            [[unroll]] for (uint i = 0u; i < KF4; i++) {
                uint c = CDT == 1u ? l + 4u * (i / 2u) : l + 4u * i; /* chunk of kf[i] */
                if (c < nch) a = fma(qs4[qb + (CDT == 1u ? 2u * c + i % 2u : c)], kf[i], a);
            }
            un4[rb + v * DP + jj][l] = (a.x + a.y) + (a.z + a.w);
        }
        barrier(); /* (the next round writes the other half) */
        for (uint e = lid; e < nq * DP; e += WG) {
            uint v = e / DP, j = e - v * DP;
            vec4 a = un4[rb + e];
            sc[v * SCL + c0 - c_beg + j] = c0 + j < c_end ? ((a.x + a.y) + (a.z + a.w)) * scale : NEG_INF;
        }
    }
    barrier(); /* the scores are complete */
    uint sv = lid / SUB, sb = lid % SUB; /* softmax: head sv, positions sb + SUB i */
    float mx = NEG_INF;
    if (sv < nq)
        for (uint j = sb; j < n; j += SUB) mx = max(mx, sc[sv * SCL + j]);
    smax[lid] = mx;
    barrier();
    for (uint i = 0u; i < SUB; i++) mx = max(mx, smax[sv * SUB + i]);
    float sum = 0.0;
    if (sv < nq)
        for (uint j = sb; j < n; j += SUB) {
            float p = exp(sc[sv * SCL + j] - mx); /* n > 0: the max is finite */
            sc[sv * SCL + j] = p;
            sum += p;
        }
    ssum[lid] = sum;
    vec4 o[PVN], o2[PVN];
    [[unroll]] for (uint i = 0u; i < PVN; i++) o[i] = o2[i] = vec4(0.0);
    for (uint rd = 0u; rd < rounds; rd++) { /* P·V */
        uint c0 = c_beg + rd * DP, mr = min(DP, c_end - c0);
        barrier(); /* the probabilities are complete; the last round is done with un4 */
        [[unroll]] for (uint i = 0u; i < VCH; i++) {
            uint f = lid + WG * i;
            if (f >= DP * nch) break;
            if (CDT == 1u) {
                un4[2u * f] = vec4(unpackHalf2x16(vr[i].x), unpackHalf2x16(vr[i].y));
                un4[2u * f + 1u] = vec4(unpackHalf2x16(vr[i].z), unpackHalf2x16(vr[i].w));
            } else {
                un4[f] = uintBitsToFloat(vr[i]);
            }
        }
        if (rd + 1u < rounds) fetch_v(vr, cbv, c0 + DP, c_end, nch);
        barrier();
        [[unroll]] for (uint i = 0u; i < PVN; i++) {
            uint e = lid + WG * i, v = e / n4, d4 = e - v * n4;
            if (v >= nq) break;
            uint pr = v * SCL + c0 - c_beg;
            uint j = 0u;
            for (; j + 2u <= mr; j += 2u) {
                o[i] = fma(vec4(sc[pr + j]), un4[j * n4 + d4], o[i]);
                o2[i] = fma(vec4(sc[pr + j + 1u]), un4[(j + 1u) * n4 + d4], o2[i]);
            }
            if (j < mr) o[i] = fma(vec4(sc[pr + j]), un4[j * n4 + d4], o[i]);
        }
    }
    [[unroll]] for (uint i = 0u; i < PVN; i++) {
        uint e = lid + WG * i, v = e / n4, d4 = e - v * n4;
        if (v >= nq) break;
        uint row = t * Hq + h0 + v;
        float M = NEG_INF, ls = 0.0;
        for (uint j = 0u; j < SUB; j++) M = max(M, smax[v * SUB + j]), ls += ssum[v * SUB + j];
        vec4 a = o[i] + o2[i];
        if (P == 1u) {
            a /= ls;
            uint ya = OFF(5) + row * hd + 4u * d4;
            y[ya] = a.x, y[ya + 1u] = a.y, y[ya + 2u] = a.z, y[ya + 3u] = a.w;
        } else {
            uint pa = OFF(1) + (row * pc.p[15] + pi) * (hd + 2u);
            part[pa + 4u * d4] = a.x, part[pa + 4u * d4 + 1u] = a.y;
            part[pa + 4u * d4 + 2u] = a.z, part[pa + 4u * d4 + 3u] = a.w;
            if (d4 == 0u) part[pa + hd] = M, part[pa + hd + 1u] = ls;
        }
    }
    if (P == 1u || P > JOIN) return;
    /* the last of the row's partitions to finish joins them: each work-group's partials are
     * visible before its count, and the last sees every count before it reads */
    memoryBarrierBuffer();
    barrier();
    if (lid == 0u) {
        uint ci = OFF(2) + t * gl_NumWorkGroups.x + gl_WorkGroupID.x, done = atomicAdd(cnt[ci], 1u);
        s_last = done == P - 1u ? 1u : 0u;
        if (done == P - 1u) cnt[ci] = 0u; /* for the next dispatch */
    }
    barrier();
    if (s_last == 0u) return;
    memoryBarrierBuffer();
    /* The invocation's (head, vec4 of dims) pairs as above, partitions in batches of JB
     * with every load of a batch issued before any is used, joined online in partition
     * order: Mj the largest max so far, the sums so far rescaled by e^(Mj_old - Mj). A pair
     * past the heads reads head 0's, unstored. */
    uint pj[PVN], dj[PVN];
    float Mj[PVN], den[PVN];
    vec4 acc[PVN];
    [[unroll]] for (uint i = 0u; i < PVN; i++) {
        uint e = lid + WG * i, v = e / n4;
        dj[i] = 4u * (e - v * n4), v = v < nq ? v : 0u;
        pj[i] = OFF(1) + (t * Hq + h0 + v) * pc.p[15] * (hd + 2u);
        Mj[i] = NEG_INF, den[i] = 0.0, acc[i] = vec4(0.0);
    }
    for (uint j0 = 0u; j0 < P; j0 += JB) {
        float mj[PVN][JB], lj[PVN][JB];
        vec4 oj[PVN][JB];
        [[unroll]] for (uint i = 0u; i < PVN; i++)
            [[unroll]] for (uint u = 0u; u < JB; u++) {
                uint pa = pj[i] + min(j0 + u, P - 1u) * (hd + 2u);
                oj[i][u] = vec4(part[pa + dj[i]], part[pa + dj[i] + 1u], part[pa + dj[i] + 2u], part[pa + dj[i] + 3u]);
                mj[i][u] = part[pa + hd], lj[i][u] = part[pa + hd + 1u];
            }
        [[unroll]] for (uint i = 0u; i < PVN; i++) {
            float Mn = Mj[i];
            [[unroll]] for (uint u = 0u; u < JB; u++)
                if (j0 + u < P) Mn = max(Mn, mj[i][u]);
            float r = Mn == NEG_INF ? 1.0 : exp(Mj[i] - Mn); /* (Mj -inf, Mn finite: 0) */
            acc[i] *= r, den[i] *= r, Mj[i] = Mn;
            [[unroll]] for (uint u = 0u; u < JB; u++) {
                float w = j0 + u < P && mj[i][u] > NEG_INF ? exp(mj[i][u] - Mn) : 0.0;
                acc[i] = fma(vec4(w), oj[i][u], acc[i]);
                den[i] = fma(w, lj[i][u], den[i]);
            }
        }
    }
    [[unroll]] for (uint i = 0u; i < PVN; i++) {
        uint e = lid + WG * i, v = e / n4, d4 = e - v * n4;
        if (v >= nq) break;
        vec4 a = acc[i] / den[i];
        uint ya = OFF(5) + (t * Hq + h0 + v) * hd + 4u * d4;
        y[ya] = a.x, y[ya + 1u] = a.y, y[ya + 2u] = a.z, y[ya + 3u] = a.w;
    }
}
#endif
