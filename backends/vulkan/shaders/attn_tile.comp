#version 450
/* gqa_attn, part 2 for prefill (more than VK_GEMV_MAX_T rows): the step's
 * rows in blocks of BQ, one work-group of WG per (query head, block), the
 * last block (in a prompt, the longest rows) first. Row t attends to
 * positions 0 .. pos[t] of slot seq[t]; y = softmax(q·kᵀ · scale)·v, online
 * softmax in f32. Why tiles: attn.comp reads the whole K and V once per row;
 * here a block's BQ rows share each read.
 *   The block's q rows stay in shared memory; the slot's cache positions go
 *   by in tiles of BK, each loaded once (16-byte chunks, consecutive
 *   invocations contiguous) and staged in shared memory as f32:
 *   K tile -> scores [key][row] (an invocation takes rows rp, rp + BQ/2 x
 *   QC keys KG apart, vec4 accumulators), -inf beyond the row's position or
 *   outside its slot;
 *   the online softmax: invocation r < BQ keeps row r's max m and sum l,
 *   turns the tile's scores into e^(s - m') and leaves e^(m - m') for the
 *   others;
 *   V tile -> o = o · e^(m - m') + P·V (an invocation takes 4 rows x PV4
 *   vec4 of head dims, DL invocations along the dims).
 * Global loads go to registers a phase ahead (V during the scores, the next
 * K during P·V). A block whose rows belong to several slots (a batch of
 * sequences) runs once per slot among its rows, the others masked; each pass
 * covers the positions up to the largest of its rows.
 * Geometry: (Hq, ceil(T / BQ)). head_dim <= HD and a multiple of 8; the
 * caches start on 16 bytes (vk_prog.c falls back to attn.comp otherwise).
 * Shared memory at HD 128: 27.5 KiB. CDT 1: f16 cache, 0: f32.
 * p[7] Hq, p[8] Hkv, p[9] hd, p[10] C, p[11] scale, p[12] seq base word;
 * OFF(3), OFF(4) count 16-byte chunks. */
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable
#define WG 128u
#define BQ 32u
#define BK 16u
#define RH (BQ / 2u)                 /* scores: rows rp and rp + RH ... */
#define QC (BQ * BK / (2u * WG))     /* ... x QC keys ... */
#define KG (BK / QC)                 /* ... KG apart */
#define DL (WG / (BQ / 4u))          /* P·V: invocations along the head dims (rows by 4) */
#define PV4 (128u / (4u * DL))       /* P·V: vec4 of head dims per invocation (at head_dim 128) */
#define LDC (BK * 128u / (4u * WG))  /* chunks of a tile per invocation (f32 at head_dim 128) */
#define SL4 ((BQ + 4u) / 4u)         /* row stride of the scores, in vec4 */
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint CDT = 1;
layout(constant_id = 1) const uint HD = 128; /* sizes the shared arrays: 64 or 128 */
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uvec4 kc[]; };
layout(std430, binding = 4) readonly buffer VC { uvec4 vc[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };
shared vec4 qs4[BQ * (HD / 4u + 1u)]; /* [row][hd / 4 + 1]: rows one vec4 apart in banks */
shared vec4 kv4[BK * (HD / 4u + 1u)]; /* [key][hd / 4 + 1] */
shared vec4 sp4[BK * SL4];            /* scores, then probabilities [key][row] */
shared float alpha[BQ], lsum[BQ];
shared int rpos[BQ], rseq[BQ];

const uint CE = CDT == 1u ? 8u : 4u; /* cache elements per 16-byte chunk */
const float NEG_INF = -1.0 / 0.0;

/* the chunks of n positions from position c0 (a tile is contiguous in the cache), zero beyond */
void fetch(inout uvec4 r[LDC], uint which, uint cb, uint c0, uint n, uint nch)
{
    [[unroll]] for (uint i = 0u; i < LDC; i++) {
        uint e = gl_LocalInvocationID.x + WG * i;
        bool ok = e < n * nch;
        uint a = cb + c0 * nch + e;
        r[i] = ok ? (which == 0u ? kc[a] : vc[a]) : uvec4(0u);
    }
}

/* the fetched chunks into kv4 as f32 */
void stage(uvec4 r[LDC], uint nch, uint ld4)
{
    [[unroll]] for (uint i = 0u; i < LDC; i++) {
        uint e = gl_LocalInvocationID.x + WG * i, j = e / nch, cc = e - j * nch;
        if (j >= BK) continue;
        if (CDT == 1u) {
            kv4[j * ld4 + 2u * cc] = vec4(unpackHalf2x16(r[i].x), unpackHalf2x16(r[i].y));
            kv4[j * ld4 + 2u * cc + 1u] = vec4(unpackHalf2x16(r[i].z), unpackHalf2x16(r[i].w));
        } else {
            kv4[j * ld4 + cc] = uintBitsToFloat(r[i]);
        }
    }
}

float sp_at(uint j, uint r) { return sp4[j * SL4 + r / 4u][r % 4u]; }

void main()
{
    uint lid = gl_LocalInvocationID.x, h = gl_WorkGroupID.x;
    uint Hq = pc.p[7], Hkv = pc.p[8], hd = pc.p[9], C = pc.p[10], T = ROWS;
    float scale = PF(11);
    uint hk = h / (Hq / Hkv), t0 = (gl_NumWorkGroups.y - 1u - gl_WorkGroupID.y) * BQ;
    uint n4 = hd / 4u, ld4 = n4 + 1u, nch = hd / CE;
    if (lid < BQ) { /* the rows' positions and slots; -1: no row (past T) */
        uint t = t0 + lid;
        rpos[lid] = t < T ? int(step.w[4u + t]) : -1;
        rseq[lid] = t < T ? int(step.w[pc.p[12] + t]) : -1;
    }
    for (uint e = lid; e < BQ * n4; e += WG) {
        uint r = e / n4, d4 = e - r * n4, t = t0 + r, qa = OFF(0) + (t * Hq + h) * hd + 4u * d4;
        qs4[r * ld4 + d4] = t < T ? vec4(q[qa], q[qa + 1u], q[qa + 2u], q[qa + 3u]) : vec4(0.0);
    }
    barrier();

    uint rp = lid / KG, kg = lid % KG; /* scores: rows rp, rp + RH; keys kg + KG i */
    uint rq = lid / DL, dl = lid % DL; /* P·V: rows 4 rq .. 4 rq + 3; vec4 dl + DL i */
    float m = NEG_INF, l = 0.0;        /* row lid's softmax state (lid < BQ) */
    vec4 o[4][PV4];
    uvec4 rk[LDC];
    [[unroll]] for (uint r = 0u; r < 4u; r++)
        [[unroll]] for (uint i = 0u; i < PV4; i++) o[r][i] = vec4(0.0);
    for (int sprev = -1;;) { /* the block's slots in increasing order */
        int sc = 0x7fffffff;
        uint L = 0u;
        for (uint r = 0u; r < BQ; r++)
            if (rseq[r] > sprev) sc = min(sc, rseq[r]);
        if (sc == 0x7fffffff) break;
        for (uint r = 0u; r < BQ; r++)
            if (rseq[r] == sc) L = max(L, uint(rpos[r]) + 1u);
        int lim0 = rseq[rp] == sc ? rpos[rp] : -1, lim1 = rseq[rp + RH] == sc ? rpos[rp + RH] : -1;
        uint cbk = OFF(3) + (uint(sc) * Hkv + hk) * C * nch, cbv = OFF(4) + (uint(sc) * Hkv + hk) * C * nch;
        fetch(rk, 0u, cbk, 0u, min(L, BK), nch);
        for (uint c0 = 0u; c0 < L; c0 += BK) {
            uint n = min(BK, L - c0);
            barrier(); /* the last P·V is done with kv4 */
            stage(rk, nch, ld4);
            barrier();
            fetch(rk, 1u, cbv, c0, n, nch);
            vec4 a0[QC], a1[QC];
            [[unroll]] for (uint i = 0u; i < QC; i++) a0[i] = a1[i] = vec4(0.0);
            for (uint d4 = 0u; d4 < n4; d4++) {
                vec4 q0 = qs4[rp * ld4 + d4], q1 = qs4[(rp + RH) * ld4 + d4];
                [[unroll]] for (uint i = 0u; i < QC; i++) {
                    vec4 k4 = kv4[(kg + KG * i) * ld4 + d4];
                    a0[i] = fma(q0, k4, a0[i]);
                    a1[i] = fma(q1, k4, a1[i]);
                }
            }
            [[unroll]] for (uint i = 0u; i < QC; i++) {
                uint j = kg + KG * i;
                int c = int(c0 + j);
                float s0 = (a0[i].x + a0[i].y) + (a0[i].z + a0[i].w), s1 = (a1[i].x + a1[i].y) + (a1[i].z + a1[i].w);
                sp4[j * SL4 + rp / 4u][rp % 4u] = c <= lim0 ? s0 * scale : NEG_INF;
                sp4[j * SL4 + (rp + RH) / 4u][(rp + RH) % 4u] = c <= lim1 ? s1 * scale : NEG_INF;
            }
            barrier(); /* the scores are complete, kv4 free */
            stage(rk, nch, ld4);
            if (lid < BQ) { /* the online softmax of row lid */
                float mt = NEG_INF;
                for (uint j = 0u; j < n; j++) mt = max(mt, sp_at(j, lid));
                float mn = max(m, mt), a = 1.0, sum = 0.0;
                if (mn > NEG_INF) { /* else no position of this row yet: nothing changes */
                    a = m > NEG_INF ? exp(m - mn) : 0.0;
                    for (uint j = 0u; j < n; j++) {
                        float s = sp_at(j, lid), p = s > NEG_INF ? exp(s - mn) : 0.0;
                        sp4[j * SL4 + lid / 4u][lid % 4u] = p;
                        sum += p;
                    }
                } else {
                    for (uint j = 0u; j < n; j++) sp4[j * SL4 + lid / 4u][lid % 4u] = 0.0;
                }
                l = l * a + sum;
                m = mn;
                alpha[lid] = a;
            }
            barrier();
            if (c0 + BK < L) fetch(rk, 0u, cbk, c0 + BK, min(BK, L - c0 - BK), nch);
            vec4 al = vec4(alpha[4u * rq], alpha[4u * rq + 1u], alpha[4u * rq + 2u], alpha[4u * rq + 3u]);
            [[unroll]] for (uint i = 0u; i < PV4; i++) {
                o[0][i] *= al.x;
                o[1][i] *= al.y;
                o[2][i] *= al.z;
                o[3][i] *= al.w;
            }
            for (uint j = 0u; j < n; j++) {
                vec4 p = sp4[j * SL4 + rq];
                [[unroll]] for (uint i = 0u; i < PV4; i++) {
                    uint d4 = dl + DL * i;
                    if (d4 < n4) {
                        vec4 v4 = kv4[j * ld4 + d4];
                        o[0][i] = fma(vec4(p.x), v4, o[0][i]);
                        o[1][i] = fma(vec4(p.y), v4, o[1][i]);
                        o[2][i] = fma(vec4(p.z), v4, o[2][i]);
                        o[3][i] = fma(vec4(p.w), v4, o[3][i]);
                    }
                }
            }
        }
        sprev = sc;
    }
    if (lid < BQ) lsum[lid] = l;
    barrier();
    [[unroll]] for (uint r = 0u; r < 4u; r++) {
        uint t = t0 + 4u * rq + r;
        float inv = 1.0 / lsum[4u * rq + r]; /* a row the host should have refused: l = 0, NaN */
        [[unroll]] for (uint i = 0u; i < PV4; i++) {
            uint d4 = dl + DL * i, ya = OFF(5) + (t * Hq + h) * hd + 4u * d4;
            if (t < T && d4 < n4) {
                vec4 v = o[r][i] * inv;
                y[ya] = v.x, y[ya + 1u] = v.y, y[ya + 2u] = v.z, y[ya + 3u] = v.w;
            }
        }
    }
}
