// cuda_host.cu — the CUDA backend's decode GEMV and prefill GEMM, run on the CPU.
//
// The AWQ repack and the fused AWQ GEMV are written as __host__ __device__
// phases of (block, thread) (backends/cuda/k_matmul.cu); this test builds
// them for the host and runs them over the same grid the launcher would use,
// block by block, so their index arithmetic, dequantisation, slice
// reduction and epilogues are checked in CI, where no GPU is. It checks each
// output against a float64 sum over the checkpoint blob decoded by the core's
// own AWQ reader (core/awq.c) with x rounded to f16 as the tensor cores take
// it, for every epilogue, several token counts, odd column counts (padded
// tiles), several block sizes, x staged in shared memory and read from global
// memory; the GEMV's mma is emulated as the GEMM's is. The tensor-core GEMM (k_gemm.cu)
// runs the same way: its loaders, fragment addressing and epilogue are the
// kernel's own, ldmatrix and mma are emulated below from the PTX ISA's
// fragment layouts, shared memory starts as NaN. What only a GPU can show
// (timing, the memory model, the real launch) is `loom check ops --backend
// cuda` and bench/cuda/kbench.cu on the device.
#define LOOM_CU_HOST_TEST 1
#include "../backends/cuda/k_matmul.cu"
#include "../backends/cuda/k_gemm.cu"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" {
#include "awq.h"
#include "loom.h"
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd()
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rndf() { return (float)(rnd() & 0xffffff) / 16777216.0f * 2.0f - 1.0f; }

struct weight {
    int64_t K, N;
    std::vector<uint8_t> blob;
    std::vector<uint8_t> packed; // repacked: q then meta
    cu_awq w;
    std::vector<uint16_t> bias; // f16
};

static weight make_weight(int64_t K, int64_t N)
{
    weight h;
    h.K = K, h.N = N;
    std::vector<uint8_t> q((size_t)(K * N)), z((size_t)(K / 128 * N));
    std::vector<uint16_t> s((size_t)(K / 128 * N));
    for (auto &v : q) v = rnd() & 15;
    for (auto &v : z) v = rnd() & 15;
    for (auto &v : s) v = loom_f32_to_f16(0.001f + 0.02f * std::fabs(rndf()));
    h.blob.resize(loom_awq_nbytes(K, N));
    if (loom_awq_pack(K, N, q.data(), z.data(), s.data(), h.blob.data())) abort();
    h.packed.assign(cu_awq_packed_bytes(K, N), 0xA5); // poison: every byte must be rewritten
    h.w = cu_awq_at(K, N, h.packed.data());
    loom__cu_awq_repack_host(h.blob.data(), &h.w);
    h.bias.resize((size_t)N);
    for (auto &v : h.bias) v = loom_f32_to_f16(rndf());
    return h;
}

// v rounded to f16's 11 significant bits, whatever its exponent (the GEMV stages x * w scaled
// by a power of two where f16 would overflow)
static float f16_mantissa(float v)
{
    int e = 0;
    float m = std::frexp(v, &e);
    return std::ldexp(loom_f16_to_f32(loom_f32_to_f16(m)), e);
}

// x16: x rounded to f16 first, as the decode GEMV's tensor cores take it
static double dot(const weight &h, const std::vector<float> &x, int t, int64_t n, bool x16 = false)
{
    loom_awq_view v = loom_awq_view_of(h.blob.data(), h.K, h.N);
    double s = 0;
    for (int64_t k = 0; k < h.K; k++) {
        float xv = x[(size_t)(t * h.K + k)];
        s += (double)(x16 ? loom_f16_to_f32(loom_f32_to_f16(xv)) : xv) * (double)loom_awq_get(&v, k, n);
    }
    return s + loom_f16_to_f32(h.bias[(size_t)n]);
}

// ---- AWQ GEMV (decode) ---------------------------------------------------------------------------
// mma.sync m16n8k16 on the CPU, defined with the GEMM's emulation below.
static void host_mma(float c[32][4], const uint32_t a[32][4], const uint32_t b[32][2], bool bf);

// The CPU twin of awq_ring_fill and awq_warp_sum: the same walk, loads, fragments and scaling, all
// 32 lanes at once around an emulated mma, each copy landing at once. xs: x staged per block (xm
// AWQ_XB) or this warp's slot (AWQ_XW).
static void host_awq_warp(const awq_params &P, const awq_seg &sg, const awq_warp &wp, int xm, const uint16_t *xs,
                          float (*acc)[4])
{
    const int K = P.K, G = K / LOOM_AWQ_GROUP, R = P.ring;
    std::vector<uint4> ring((size_t)R * AWQ_STAGE);
    memset(ring.data(), 0xff, ring.size() * sizeof(uint4)); // a word no lane copied shows
    awq_walk fill[32], w[32];
    for (int l = 0; l < 32; l++) {
        fill[l] = awq_walk_at(sg, wp, K, l, R, 0), w[l] = awq_walk_at(sg, wp, K, l, R, R - 1);
        for (int j = 0; j < R - 1; j++) awq_walk_put(fill[l], ring.data(), G, l);
    }
    for (int gi = wp.sl, m = 0; gi < G; gi += wp.S, m++) {
        for (int l = 0; l < 32; l++) awq_walk_put(w[l], ring.data(), G, l);
        awq_lane_group r[32];
        for (int l = 0; l < 32; l++) awq_walk_take(w[l], ring.data(), l, r[l]);
        float d[32][4] = {};
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++) {
                uint32_t a[32][4], b[32][2];
                for (int l = 0; l < 32; l++) {
                    const uint32_t ws[4] = {r[l].w[h].x, r[l].w[h].y, r[l].w[h].z, r[l].w[h].w};
                    uint32_t af[4], bf[2];
                    cu_awq_frag(ws[s], cu_awq_za(r[l].m[0]), cu_awq_zb(r[l].m[1]), af);
                    int k = h * 64 + s * 16;
                    if (xm == AWQ_XB) awq_bfrag_xs(awq_xs_row(xs, P.T, K, l), gi * LOOM_AWQ_GROUP + k, bf);
                    else if (xm == AWQ_XW) awq_bfrag_xw(awq_xw_row(P, xs, l), m * LOOM_AWQ_GROUP + k, bf);
                    else awq_bfrag(P.x, P.xh, P.T, K, gi * LOOM_AWQ_GROUP + k, l, bf);
                    for (int i = 0; i < 4; i++) a[l][i] = af[i];
                    b[l][0] = bf[0], b[l][1] = bf[1];
                }
                host_mma(d, a, b, false);
            }
        for (int l = 0; l < 32; l++) awq_scale(r[l], d[l], acc[l]);
    }
}

// The launch's grid blocks in turn, each as the kernel runs it: x staged once (for its first block of
// work), then its blocks of work b, b + grid, ..., their partial sums in alternate halves of red (NaN
// first: a slot read before it is written shows), each thread's outputs; then the last block's rmsnorm.
template <int EPI> static void host_awq_blocks(const awq_params &P, int grid, int threads, int xm)
{
    static float red[AWQ_RED], wsum[CU_GEMV_MAX_T * AWQ_MAX_WARPS], fit[AWQ_MAX_WARPS][CU_GEMV_MAX_T];
    const bool staged = xm == AWQ_XB, xwn = xm == AWQ_XW && P.xw;
    std::vector<uint16_t> xs(xm == AWQ_XB ? awq_xs_bytes(P.T, P.K) / 2 : xm == AWQ_XW ? awq_xw_bytes(P) / 2 : 0);
    for (int g = 0; g < grid; g++) {
        std::fill(red, red + AWQ_RED, NAN);
        std::fill(xs.begin(), xs.end(), 0x7e00); // NaN: a half never staged shows
        for (int w = 0; xm == AWQ_XW && w < threads / 32; w++) { // each warp stages its own chunks
            awq_warp wp = awq_warp_of<EPI>(P, g, w);
            uint16_t *slot = xs.data() + awq_xw_slot(P, w);
            for (int t = 0; t < P.T; t++) {
                float ss[32] = {}, f = 1.0f, unused = 0.0f;
                bool ovf = false;
                for (int l = 0; wp.o >= 0 && l < 32; l++)
                    ovf |= P.xw ? awq_xw_put<AWQ_BATCH / 2, true>(P, wp, t, l, slot, 1.0f, ss[l])
                                : awq_xw_put<AWQ_BATCH, false>(P, wp, t, l, slot, 1.0f, ss[l]);
                if (!xwn) continue;
                if (ovf) { // the warp's largest |x * w| sets the scale, and it stages again
                    float mx = 0.0f;
                    for (int l = 0; l < 32; l++) mx = std::max(mx, awq_xw_max(P, wp, t, l));
                    f = awq_xw_fit(mx);
                    for (int l = 0; l < 32; l++) awq_xw_put<AWQ_BATCH / 2, true>(P, wp, t, l, slot, f, unused);
                }
                // the lanes' sums added as the device's shuffle tree adds them
                wsum[t * AWQ_MAX_WARPS + w] = w < wp.S ? cu_host_warp_sum(ss) : 0.0f, fit[w][t] = f;
            }
        }
        if (staged && P.xw) { // x normalised by every block as it is staged
            for (int t = 0; t < threads; t++) awq_norm_a<false>(P.x, P.T, P.K, t, threads, red);
            for (int t = 0; t < threads; t++) awq_norm_b(P, t, threads, red);
            for (int t = 0; t < threads; t++) awq_norm_b2(P, P.K, P.xeps, t, threads, red);
        }
        for (int t = 0; staged && t < threads; t++) awq_stage_x(P, t, threads, xs.data(), awq_norm_inv(P, threads, red));
        // PLAIN: the first block of work's epilogue inputs, as the kernel works them out before its wait
        std::vector<awq_epi_in> pre(AWQ_EPI_IN, awq_epi_in{NAN, NAN, NAN, NAN, INT64_MAX});
        for (int t = 0; EPI == CU_EPI_PLAIN && t < threads; t++)
            for (int i = t; i < P.T * awq_segment(P, g).cb; i += threads) pre[i] = awq_plain_inputs(P, awq_segment(P, g), g, i);
        for (int b = g, u = 0; b < P.blocks; b += grid, u++) {
            float *rd = red + (u & 1) * AWQ_RED_HALF;
            for (int w = 0; w < threads / 32; w++) {
                awq_warp wp = awq_warp_of<EPI>(P, b, w);
                if (wp.o < 0) continue;
                float acc[32][4] = {};
                host_awq_warp(P, awq_segment(P, b), wp, xm, xm == AWQ_XW ? xs.data() + awq_xw_slot(P, w) : xs.data(), acc);
                for (int l = 0; xwn && l < 32; l++) awq_xw_unscale(P, fit[w], l, acc[l]);
                for (int l = 0; l < 32; l++) awq_red_put(rd, w, l, acc[l]);
            }
            for (int t = 0; t < threads; t++)
                awq_gemv_out<EPI>(P, b, t, threads, rd, xwn ? wsum : nullptr, EPI == CU_EPI_PLAIN && !u ? pre.data() : nullptr);
        }
    }
    if (P.yn) {
        for (int t = 0; t < threads; t++) awq_norm_a<true>(P.seg[0].y, P.T, P.seg[0].N, t, threads, red);
        for (int t = 0; t < threads; t++) awq_norm_b(P, t, threads, red);
        for (int t = 0; t < threads; t++) awq_norm_b2(P, P.seg[0].N, P.eps, t, threads, red);
        for (int t = 0; t < threads; t++) awq_norm_c(P, t, threads, red);
    }
}

// The grid as the launcher sizes it, with 4 blocks resident per SM unless a->grid says otherwise.
static cudaError_t host_awq_gemv(const cu_awq_gemv_args *a, int sm = 132)
{
    awq_params P;
    int blocks, threads;
    cudaError_t e = awq_geometry(a, sm, &P, &blocks, &threads);
    if (e) return e;
    int xm = awq_xmode(a, P), grid = awq_grid(P, xm, a->grid > 0 ? a->grid : a->grid < 0 ? 0 : 4 * sm);
    if (a->epi == CU_EPI_PLAIN) host_awq_blocks<CU_EPI_PLAIN>(P, grid, threads, xm);
    else if (a->epi == CU_EPI_SWIGLU) host_awq_blocks<CU_EPI_SWIGLU>(P, grid, threads, xm);
    else host_awq_blocks<CU_EPI_ADD>(P, grid, threads, xm);
    return cudaSuccess;
}

static int failures = 0;
static int g_grid = 0; // check(): cu_awq_gemv_args.grid (the blocks launched: 0 as the launcher sizes it)
static int g_ring = 0; // ... and .ring (each warp's weight stages: 0 as the launcher picks)
static bool g_xh = false, g_yh = false; // ... x as f16 rows (x_f16), SWIGLU's y as f16 rows (y_f16)

static void check(const char *what, int epi, int64_t K, std::vector<int64_t> Ns, int T, int warps, bool norm = false,
                  int rope_hd = 0, int x_place = CU_X_AUTO, bool xnorm = false, float outlier = 0)
{
    std::vector<weight> ws;
    for (int64_t N : Ns) ws.push_back(make_weight(K, N));
    std::vector<float> x((size_t)(T * K)), r, xg;
    for (auto &v : x) v = rndf();
    for (size_t i = 7; outlier != 0 && i < x.size(); i += 301) x[i] = i % 2 ? outlier : -outlier; // past f16's range
    cu_awq_gemv_args a{};
    a.x = x.data(), a.T = T, a.n = (int)Ns.size(), a.epi = epi, a.warps = warps, a.x_place = x_place, a.grid = g_grid;
    a.ring = g_ring;
    std::vector<uint16_t> xh; // x as the SWIGLU launch before hands it over (its f16 rounding is the reference's)
    if (g_xh) {
        for (float v : x) xh.push_back(loom_f32_to_f16(v));
        a.x = reinterpret_cast<const float *>(xh.data()), a.x_f16 = 1;
    }
    a.y_f16 = g_yh;
    std::vector<std::vector<float>> ys(Ns.size());
    for (size_t i = 0; i < Ns.size(); i++) {
        ys[i].assign((size_t)(T * Ns[i]), NAN);
        if (g_yh) std::fill(ys[i].begin(), ys[i].end(), 0.0f), memset(ys[i].data(), 0xff, ys[i].size() * 2); // f16 NaNs
        a.w[i] = &ws[i].w, a.bias[i] = ws[i].bias.data(), a.bdt[i] = LOOM_F16, a.y[i] = ys[i].data();
    }
    std::vector<float> xm = x; // what the GEMV multiplies: x, or rmsnorm(x) * xg
    bool x16 = true;            // ... rounded to f16 (by the reference's dot)
    if (xnorm) {
        xg.resize((size_t)K);
        for (auto &v : xg) v = rndf();
        a.xnorm_w = xg.data(), a.xnorm_wdt = LOOM_F32, a.xnorm_eps = 1e-6f;
        awq_params P;
        int blocks, threads;
        // staged per warp, x * xg is rounded to f16 and 1/rms applied to the sums; per block,
        // rmsnorm(x) * xg is rounded
        const bool per_warp = !awq_geometry(&a, 132, &P, &blocks, &threads) && awq_xmode(&a, P) == AWQ_XW;
        x16 = !per_warp;
        for (int t = 0; t < T; t++) {
            double ss = 0;
            for (int64_t k = 0; k < K; k++) ss += (double)x[(size_t)(t * K + k)] * x[(size_t)(t * K + k)];
            double inv = 1 / std::sqrt(ss / (double)K + 1e-6);
            for (int64_t k = 0; k < K; k++) {
                float xk = x[(size_t)(t * K + k)];
                xm[(size_t)(t * K + k)] = per_warp ? (float)(f16_mantissa(xk * xg[(size_t)k]) * inv)
                                                   : (float)(xk * inv * xg[(size_t)k]);
            }
        }
    }
    if (epi == CU_EPI_ADD) {
        r.resize((size_t)(T * Ns[0]));
        for (auto &v : r) v = rndf();
        a.r = r.data();
    }
    std::vector<float> yn, g;
    int counter = 0;
    if (norm) {
        yn.assign((size_t)(T * Ns[0]), NAN), g.resize((size_t)Ns[0]);
        for (auto &v : g) v = rndf();
        a.norm_w = g.data(), a.norm_wdt = LOOM_F32, a.norm_eps = 1e-6f, a.norm_y = yn.data(), a.counter = &counter;
    }
    // RoPE on the first two outputs (q and k), at positions 5, 1000, 31999, ...
    std::vector<double> freq((size_t)(rope_hd / 2));
    std::vector<int32_t> pos((size_t)T);
    for (size_t i = 0; i < freq.size(); i++) freq[i] = std::pow(1e6, -2.0 * (double)i / rope_hd);
    for (int t = 0; t < T; t++) pos[(size_t)t] = t == 0 ? 5 : t == 1 ? 31999 : 1000 * t;
    const double mscale = 1.25;
    for (int i = 0; rope_hd && i < 2 && i < (int)Ns.size(); i++)
        a.rope_freq[i] = freq.data(), a.rope_mscale[i] = mscale, a.rope_hd[i] = rope_hd, a.pos = pos.data();
    if (host_awq_gemv(&a)) {
        printf("FAIL %s: launcher refused valid arguments\n", what);
        failures++;
        return;
    }
    double num = 0, den = 0;
    size_t outs = epi == CU_EPI_SWIGLU ? 1 : Ns.size(), bad = 0;
    for (size_t i = 0; i < outs; i++)
        for (int t = 0; t < T; t++)
            for (int64_t n = 0; n < Ns[i]; n++) {
                double ref = dot(ws[i], xm, t, n, x16);
                if (a.rope_freq[i]) {
                    int64_t h2 = rope_hd / 2, j = n % rope_hd, pn = j < h2 ? n + h2 : n - h2;
                    double ang = pos[(size_t)t] * freq[(size_t)(j % h2)], other = dot(ws[i], xm, t, pn, x16);
                    ref = j < h2 ? (ref * std::cos(ang) - other * std::sin(ang)) * mscale
                                 : (ref * std::cos(ang) + other * std::sin(ang)) * mscale;
                }
                if (epi == CU_EPI_SWIGLU) ref = ref / (1 + std::exp(-ref)) * dot(ws[1], xm, t, n, x16);
                if (epi == CU_EPI_ADD) ref += r[(size_t)(t * Ns[0] + n)];
                float y = g_yh ? loom_f16_to_f32(reinterpret_cast<const uint16_t *>(ys[i].data())[t * Ns[i] + n])
                               : ys[i][(size_t)(t * Ns[i] + n)];
                if (!std::isfinite(y)) bad++;
                num += (y - ref) * (y - ref), den += ref * ref;
            }
    if (norm) { // rmsnorm of the residual sum, against the float64 sum
        for (int t = 0; t < T; t++) {
            std::vector<double> row((size_t)Ns[0]);
            double ss = 0;
            for (int64_t n = 0; n < Ns[0]; n++) {
                row[(size_t)n] = dot(ws[0], xm, t, n, x16) + r[(size_t)(t * Ns[0] + n)];
                ss += row[(size_t)n] * row[(size_t)n];
            }
            double inv = 1 / std::sqrt(ss / (double)Ns[0] + 1e-6);
            for (int64_t n = 0; n < Ns[0]; n++) {
                double ref = row[(size_t)n] * inv * g[(size_t)n];
                float v = yn[(size_t)(t * Ns[0] + n)];
                if (!std::isfinite(v)) bad++;
                num += (v - ref) * (v - ref), den += ref * ref;
            }
        }
    }
    double e = num / den;
    // with xnorm, x's f16 rounding may flip on a float's last bit between the kernel and xm
    // f16 outputs: each rounded (relative 2^-11 at most)
    bool ok = bad == 0 && e < (g_yh ? 1e-6 : xnorm ? 1e-8 : 1e-11);
    printf("%s %-34s K=%-5lld N=%-5lld x%zu T=%d warps=%-2d nmse %.1e%s\n", ok ? "ok  " : "FAIL", what, (long long)K,
           (long long)Ns[0], Ns.size(), T, warps, e, bad ? " (outputs not written)" : "");
    failures += !ok;
}

// ---- dense GEMV ----------------------------------------------------------------------------------
static void check_dense(int wdt, int64_t K, int64_t N, int T, int sm, bool misalign)
{
    std::vector<uint16_t> w16((size_t)(K * N));
    std::vector<float> w32((size_t)(K * N)), x((size_t)(T * K) + 1), bias((size_t)N);
    for (size_t i = 0; i < w32.size(); i++) {
        float v = rndf() * 0.1f;
        if (wdt == LOOM_F16) w16[i] = loom_f32_to_f16(v), w32[i] = loom_f16_to_f32(w16[i]);
        else if (wdt == LOOM_BF16) w16[i] = loom_f32_to_bf16(v), w32[i] = loom_bf16_to_f32(w16[i]);
        else w32[i] = v;
    }
    for (auto &v : x) v = rndf();
    for (auto &v : bias) v = rndf();
    const float *xp = x.data() + (misalign ? 1 : 0); // not 16-byte aligned: the scalar path
    std::vector<float> y((size_t)(T * N), NAN);
    const void *w = wdt == LOOM_F32 ? (const void *)w32.data() : (const void *)w16.data();
    loom__cu_gemv_host(xp, w, wdt, bias.data(), LOOM_F32, y.data(), T, K, N, sm);
    double num = 0, den = 0;
    size_t bad = 0;
    for (int t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double ref = bias[(size_t)n];
            for (int64_t k = 0; k < K; k++) ref += (double)xp[(size_t)(t * K + k)] * w32[(size_t)(n * K + k)];
            float v = y[(size_t)(t * N + n)];
            if (!std::isfinite(v)) bad++;
            num += (v - ref) * (v - ref), den += ref * ref;
        }
    double e = num / den;
    bool ok = bad == 0 && e < 1e-11;
    printf("%s dense %-4s%-24s K=%-5lld N=%-5lld T=%-2d sm=%-7d nmse %.1e%s\n", ok ? "ok  " : "FAIL", loom_dtype_name((loom_dtype)wdt),
           misalign ? " (unaligned x)" : "", (long long)K, (long long)N, T, sm, e, bad ? " (outputs not written)" : "");
    failures += !ok;
}

// k and v stored into f16 / f32 caches by the q/k/v GEMV, as gqa_attn's store would
static void check_cache(bool f16)
{
    const int K = 256, hd = 64, Hkv = 2, N = Hkv * hd, S = 2, C = 8, T = 3;
    weight wk = make_weight(K, N), wv = make_weight(K, N);
    std::vector<float> x((size_t)(T * K)), yk((size_t)(T * N)), yv((size_t)(T * N));
    for (auto &v : x) v = rndf();
    size_t cells = (size_t)S * Hkv * C * hd;
    std::vector<float> kc32(cells, -7.0f), vc32(cells, -7.0f);
    std::vector<uint16_t> kc16(cells, 0x7e00), vc16(cells, 0x7e00); // NaN: cells nobody may touch
    int32_t pos[T] = {4, 2, 4}, seq[T] = {0, 1, 0}; // tokens 0 and 2 share a cell: token 2 wins
    cu_awq_gemv_args a{};
    a.x = x.data(), a.T = T, a.n = 2, a.epi = CU_EPI_PLAIN, a.pos = pos, a.seq = seq;
    a.w[0] = &wk.w, a.w[1] = &wv.w, a.bias[0] = wk.bias.data(), a.bias[1] = wv.bias.data();
    a.bdt[0] = a.bdt[1] = LOOM_F16, a.y[0] = yk.data(), a.y[1] = yv.data();
    a.cache[0] = f16 ? (void *)kc16.data() : (void *)kc32.data(), a.cache[1] = f16 ? (void *)vc16.data() : (void *)vc32.data();
    a.cache_f16 = f16, a.cache_hd = hd, a.cache_C = C;
    bool ok = host_awq_gemv(&a) == cudaSuccess;
    size_t touched = 0;
    for (size_t i = 0; i < cells; i++) { // expected owner of each cell
        size_t d = i % hd, p = i / hd % C, h = i / hd / C % Hkv, sl = i / hd / C / Hkv;
        int owner = -1;
        for (int t = 0; t < T; t++)
            if (seq[t] == (int)sl && pos[t] == (int)p) owner = t;
        for (int kv = 0; kv < 2; kv++) {
            const std::vector<float> &y = kv ? yv : yk;
            float got = f16 ? loom_f16_to_f32((kv ? vc16 : kc16)[i]) : (kv ? vc32 : kc32)[i];
            if (owner < 0) {
                ok = ok && (f16 ? std::isnan(got) : got == -7.0f);
                continue;
            }
            float want = y[(size_t)owner * N + h * hd + d];
            if (f16) want = loom_f16_to_f32(loom_f32_to_f16(want));
            ok = ok && got == want;
            touched++;
        }
    }
    ok = ok && touched == 2 * 2 * Hkv * hd; // two cells (token 2's and token 1's) per cache
    printf("%s k, v into the %s KV cache (a later token wins a shared cell)\n", ok ? "ok  " : "FAIL", f16 ? "f16" : "f32");
    failures += !ok;
}


// ---- tensor-core GEMM (prefill) ------------------------------------------------------------------
// ldmatrix .x4: lane l receives, of each 8x8 matrix j, row l / 4, elements 2 (l % 4) and +1; the
// address of row r of matrix j is the one lane 8j + r gives.
static void host_ldsm4(const uint16_t *base, int (*row)(int, int, int), int r0, int kk, uint32_t out[32][4])
{
    for (int l = 0; l < 32; l++)
        for (int j = 0; j < 4; j++) {
            const uint16_t *p = base + row(8 * j + l / 4, r0, kk) + 2 * (l % 4);
            out[l][j] = p[0] | (uint32_t)p[1] << 16;
        }
}

static double host_half(uint32_t reg, int e, bool bf)
{
    uint16_t h = (uint16_t)(reg >> 16 * e);
    return bf ? loom_bf16_to_f32(h) : loom_f16_to_f32(h);
}

// mma.sync m16n8k16 (row.col, f32 accumulators): lane l = 4g + tg holds A[g][2tg..] in a0,
// A[g+8][2tg..] a1, A[g][2tg+8..] a2, A[g+8][2tg+8..] a3; B[2tg..][g] in b0, B[2tg+8..][g] b1;
// C[g][2tg..] in c0, c1 and C[g+8][2tg..] in c2, c3.
static void host_mma(float c[32][4], const uint32_t a[32][4], const uint32_t b[32][2], bool bf)
{
    double A[16][16], B[16][8];
    for (int l = 0; l < 32; l++)
        for (int e = 0; e < 2; e++) {
            int g = l / 4, k = 2 * (l % 4) + e;
            A[g][k] = host_half(a[l][0], e, bf), A[g + 8][k] = host_half(a[l][1], e, bf);
            A[g][k + 8] = host_half(a[l][2], e, bf), A[g + 8][k + 8] = host_half(a[l][3], e, bf);
            B[k][g] = host_half(b[l][0], e, bf), B[k + 8][g] = host_half(b[l][1], e, bf);
        }
    for (int l = 0; l < 32; l++)
        for (int e = 0; e < 4; e++) {
            int row = l / 4 + (e >= 2 ? 8 : 0), col = 2 * (l % 4) + (e & 1);
            double v = c[l][e];
            for (int k = 0; k < 16; k++) v += A[row][k] * B[k][col];
            c[l][e] = (float)v;
        }
}

// The CPU twin of gm_mma_stage: the same fragment addresses and register assignment. acc[lane].
template <int BT, int SRC> static void host_mma_stage(const uint16_t *st, int warp, typename gm_shape<BT, SRC>::acc_t *acc)
{
    typedef gm_shape<BT, SRC> S;
    const bool bf = SRC == GM_BF16;
    const int wr = gm_warp_w<BT, SRC>(warp), wt = gm_warp_t<BT, SRC>(warp);
    for (int s = 0; s < GM_BK / 16; s++) {
        const int kk = s * 16;
        static uint32_t a[2][32][4], r[32][4], rl[32][4], b[32][2], bl[32][2];
        for (int j = 0; j < S::WM; j++) {
            if (SRC == GM_AWQ)
                for (int l = 0; l < 32; l++) gm_awq_frag(gm_awq_take(st, wr / 16 + j, l), s, a[j][l]);
            else host_ldsm4(st, gm_a_row, wr + j * 16, kk, a[j]);
        }
        for (int p = 0; p < S::WN / 2; p++) {
            host_ldsm4(st + S::W_HALVES, gm_b_row, wt + p * 16, kk, r);
            if (bf) host_ldsm4(st + S::W_HALVES + S::X_PLANE, gm_b_row, wt + p * 16, kk, rl);
            for (int h = 0; h < 2; h++) {
                for (int l = 0; l < 32; l++)
                    b[l][0] = r[l][2 * h], b[l][1] = r[l][2 * h + 1], bl[l][0] = rl[l][2 * h], bl[l][1] = rl[l][2 * h + 1];
                for (int j = 0; j < S::WM; j++) {
                    float c[32][4];
                    for (int l = 0; l < 32; l++)
                        for (int e = 0; e < 4; e++) c[l][e] = acc[l][j][2 * p + h][e];
                    host_mma(c, a[j], b, bf);
                    if (bf) host_mma(c, a[j], bl, true);
                    for (int l = 0; l < 32; l++)
                        for (int e = 0; e < 4; e++) acc[l][j][2 * p + h][e] = c[l][e];
                }
            }
        }
    }
}

// The CPU twin of gm_wg_stage for warp w: its A fragments as gm_wg_stage makes them; B, the
// stage's x as wgmma reads it through gm_desc (token c's k at its swizzled 16-byte chunk, the
// PTX ISA's 128-byte swizzle), laid out as mma.sync's B per n8 tile, since the warp's 16 rows of
// the m64nBTk16 product are an m16n8k16 product per tile.
template <int BT, int SRC> static void host_wg_stage(const uint16_t *st, int warp, typename gm_shape<BT, SRC, true>::acc_t *acc)
{
    typedef gm_shape<BT, SRC, true> S;
    const bool bf = SRC == GM_BF16;
    const int wr = gm_warp_w<BT, SRC, true>(warp);
    for (int s = 0; s < GM_BK / 16; s++) {
        static uint32_t a[32][4], b[32][2];
        if (SRC == GM_AWQ)
            for (int l = 0; l < 32; l++) gm_awq_frag(gm_awq_take(st, wr / 16, l), s, a[l]);
        else host_ldsm4(st, gm_a_row, wr, s * 16, a);
        for (int p = 0; p < S::XP; p++) {
            const uint16_t *xs = st + S::W_HALVES + p * S::X_PLANE;
            for (int nt = 0; nt < S::WN; nt++) {
                for (int l = 0; l < 32; l++) {
                    const int c = nt * 8 + l / 4, k = s * 16 + 2 * (l % 4);
                    const uint16_t *lo = xs + gm_xswz(c, k >> 3) + (k & 7), *hi = xs + gm_xswz(c, (k + 8) >> 3) + (k & 7);
                    b[l][0] = lo[0] | (uint32_t)lo[1] << 16, b[l][1] = hi[0] | (uint32_t)hi[1] << 16;
                }
                float c[32][4];
                for (int l = 0; l < 32; l++)
                    for (int e = 0; e < 4; e++) c[l][e] = acc[l][0][nt][e];
                host_mma(c, a, b, bf);
                for (int l = 0; l < 32; l++)
                    for (int e = 0; e < 4; e++) acc[l][0][nt][e] = c[l][e];
            }
        }
    }
}

// x rounded as gm_xh_kernel rounds it, then the grid of gemm_kernel over the n weights of G, block by
// block: every thread's copies of a stage, then every warp's MMAs, then every lane's epilogue.
template <int BT, int SRC, bool WG> static void host_gemm(const float *x, gm_launch G, int n, int T, int K)
{
    typedef gm_shape<BT, SRC, WG> S;
    const int64_t TK = (int64_t)T * K;
    std::vector<uint16_t> xh((size_t)(S::XP * TK));
    for (int64_t i = 0; i < TK / (SRC == GM_AWQ ? 16 : 8); i++) gm_xh_unit<SRC>(x, xh.data(), TK, i);
    const int64_t rows = gm_layout(G, n, xh.data(), T, K);
    std::vector<uint16_t> smem((size_t)S::STAGE);
    typedef typename S::acc_t lane_acc;
    std::vector<float> accv((size_t)8 * 32 * sizeof(lane_acc) / sizeof(float));
    lane_acc *acc = reinterpret_cast<lane_acc *>(accv.data());
    for (int bx = 0; bx < (T + BT - 1) / BT; bx++)
        for (int by = 0; by < rows / GM_BN; by++) {
            int n0;
            const gm_params &P = gm_pick(G, by, &n0);
            std::fill(accv.begin(), accv.end(), 0.0f);
            for (int k0 = 0; k0 < K; k0 += GM_BK) {
                std::fill(smem.begin(), smem.end(), 0xffff); // NaN as f16 and bf16: unwritten data shows
                for (int tid = 0; tid < GM_THREADS; tid++)
                    gm_load_stage<BT, SRC, WG>(P, gm_loader_at<BT, SRC, WG>(P, n0, bx * BT, tid), k0, tid, smem.data());
                for (int w = 0; w < 8; w++)
                    if constexpr (WG) host_wg_stage<BT, SRC>(smem.data(), w, &acc[(size_t)w * 32]);
                    else host_mma_stage<BT, SRC>(smem.data(), w, &acc[(size_t)w * 32]);
            }
            for (int w = 0; w < 8; w++)
                for (int l = 0; l < 32; l++) gm_epilogue<BT, SRC, WG>(P, n0, bx * BT, w, l, acc[(size_t)w * 32 + l]);
        }
}

template <int BT, bool WG> static void host_gemm_of(int wdt, const float *x, const gm_launch &G, int n, int T, int K)
{
    if (wdt == LOOM_Q4_AWQ) host_gemm<BT, GM_AWQ, WG>(x, G, n, T, K);
    else if (wdt == LOOM_F16) host_gemm<BT, GM_F16, WG>(x, G, n, T, K);
    else host_gemm<BT, GM_BF16, WG>(x, G, n, T, K);
}

// wdt: LOOM_F16 / LOOM_BF16 dense, or LOOM_Q4_AWQ; one launch for the weights of Ns (up to
// CU_GEMM_MAX_W, as q, k, v); sm picks the launcher's token tile; wg: the wgmma (sm_90a) kernel
static void check_gemm(int wdt, int64_t K, std::vector<int64_t> Ns, int T, int sm, bool wg = false)
{
    const bool awq = wdt == LOOM_Q4_AWQ;
    const int n = (int)Ns.size();
    std::vector<float> x((size_t)(T * K));
    for (auto &v : x) v = rndf();
    struct one {
        weight aw;
        std::vector<uint16_t> w16, bias16;
        std::vector<float> y;
    };
    std::vector<one> ws((size_t)n);
    gm_launch G = {};
    for (int i = 0; i < n; i++) {
        const int64_t N = Ns[(size_t)i];
        one &o = ws[(size_t)i];
        if (awq) o.aw = make_weight(K, N);
        o.w16.resize(awq ? 0 : (size_t)(K * N)), o.bias16.resize((size_t)N), o.y.assign((size_t)(T * N), NAN);
        for (auto &v : o.w16) v = wdt == LOOM_F16 ? loom_f32_to_f16(rndf() * 0.1f) : loom_f32_to_bf16(rndf() * 0.1f);
        for (auto &v : o.bias16) v = loom_f32_to_f16(rndf());
        G.P[i] = {nullptr, awq ? o.aw.w.q : (const void *)o.w16.data(), awq ? o.aw.w.meta : nullptr,
                  awq ? (const void *)o.aw.bias.data() : o.bias16.data(), LOOM_F16, T, (int)K, (int)N, o.y.data()};
    }
    const int bt = gm_tokens(T, (int)gm_layout(G, n, nullptr, T, (int)K), sm);
    if (wg) bt == 128 ? host_gemm_of<128, true>(wdt, x.data(), G, n, T, (int)K) : host_gemm_of<64, true>(wdt, x.data(), G, n, T, (int)K);
    else bt == 128 ? host_gemm_of<128, false>(wdt, x.data(), G, n, T, (int)K) : host_gemm_of<64, false>(wdt, x.data(), G, n, T, (int)K);
    for (int i = 0; i < n; i++) {
        const int64_t N = Ns[(size_t)i];
        const one &o = ws[(size_t)i];
        double num = 0, den = 0;
        size_t bad = 0;
        for (int t = 0; t < T; t++)
            for (int64_t c = 0; c < N; c++) {
                double ref;
                if (awq) ref = dot(o.aw, x, t, c);
                else {
                    ref = loom_f16_to_f32(o.bias16[(size_t)c]);
                    for (int64_t k = 0; k < K; k++) {
                        uint16_t h = o.w16[(size_t)(c * K + k)];
                        ref += (double)x[(size_t)(t * K + k)] * (wdt == LOOM_F16 ? loom_f16_to_f32(h) : loom_bf16_to_f32(h));
                    }
                }
                float v = o.y[(size_t)(t * N + c)];
                if (!std::isfinite(v)) bad++;
                num += (v - ref) * (v - ref), den += ref * ref;
            }
        double e = num / den;
        // x rounded to f16 (and AWQ weights to f16 once): ~1e-7; bf16 splits x into hi + lo: ~1e-11
        bool ok = bad == 0 && e < (wdt == LOOM_BF16 ? 1e-10 : 1e-6);
        printf("%s gemm %-6s K=%-5lld N=%-5lld (weight %d of %d) T=%-4d tokens/block %-3d %-8s nmse %.1e%s\n", ok ? "ok  " : "FAIL",
               loom_dtype_name((loom_dtype)wdt), (long long)K, (long long)N, i + 1, n, T, bt, wg ? "wgmma" : "mma.sync", e,
               bad ? " (outputs not written)" : "");
        failures += !ok;
    }
}

int main()
{
    check_cache(true);
    check_cache(false);
    // dense: column counts per warp 4, 2, 1 (sm), f32/f16/bf16, K not a multiple of 8,
    // unaligned x, more than CU_GEMV_MAX_T rows (chunks)
    for (int sm : {1, 4, 1 << 20})
        for (int wdt : {LOOM_F32, LOOM_F16, LOOM_BF16}) check_dense(wdt, 264, 75, 3, sm, false);
    check_dense(LOOM_F16, 100, 40, 2, 1, false);
    check_dense(LOOM_BF16, 256, 40, 1, 1, true);
    check_dense(LOOM_F16, 512, 33, 11, 1, false);
    check_dense(LOOM_F32, 64, 17, 8, 1 << 20, false);

    // warps per block: the launcher's choice, and forced (slices of 1 .. 16 per tile; more
    // slices than groups leave warps idle)
    for (int warps : {0, 4, 16}) {
        check("plain", CU_EPI_PLAIN, 256, {264}, 1, warps);
        check("q, k, v in one launch", CU_EPI_PLAIN, 384, {136, 40, 40}, 3, warps);
        check("gate, up, swiglu", CU_EPI_SWIGLU, 512, {200, 200}, 2, warps);
        check("down + residual", CU_EPI_ADD, 1152, {72}, 5, warps);
        check("o + residual + rmsnorm", CU_EPI_ADD, 256, {200}, 3, warps, true);
        check("q, k (RoPE), v in one launch", CU_EPI_PLAIN, 256, {256, 128, 128}, 2, warps, false, 64);
        check("q (RoPE, head 128)", CU_EPI_PLAIN, 128, {384}, 3, warps, false, 128);
    }
    check("few blocks (16 warps by default)", CU_EPI_ADD, 8192, {48}, 1, 0);
    check("rmsnorm of 8 rows by 4 warps", CU_EPI_ADD, 256, {200}, 8, 4, true);
    // x read from global memory: forced, and where T + 1 staged rows would not fit
    check("q, k (RoPE), v, x from global", CU_EPI_PLAIN, 256, {256, 128, 128}, 3, 0, false, 64, CU_X_GLOBAL);
    check("gate, up, swiglu, x from global", CU_EPI_SWIGLU, 512, {200, 200}, 2, 0, false, 0, CU_X_GLOBAL);
    // x staged once per block where per warp (the default) would fit too, and per warp forced
    check("gate, up, swiglu, x per block", CU_EPI_SWIGLU, 512, {200, 200}, 2, 0, false, 0, CU_X_BLOCK);
    check("down + residual, x per warp, 16 warps", CU_EPI_ADD, 2304, {48}, 1, 16, false, 0, CU_X_WARP);
    check("q, k (RoPE), v, x per warp, 8 rows", CU_EPI_PLAIN, 512, {256, 128, 128}, 8, 8, false, 64, CU_X_WARP);
    check("x too large to stage", CU_EPI_PLAIN, 6144, {32}, 8, 0);
    for (int T : {1, 2, 4, 6, 8}) check("plain, tokens", CU_EPI_PLAIN, 640, {96}, T, 8);
    check("one group (K = 128)", CU_EPI_PLAIN, 128, {64}, 8, 0);
    // x normalised on load (the rmsnorm before q/k/v or gate/up), up to the largest K it takes
    check("rmsnorm on load, q, k (RoPE), v", CU_EPI_PLAIN, 256, {256, 128, 128}, 3, 0, false, 64, CU_X_AUTO, true);
    check("rmsnorm on load, gate, up, swiglu", CU_EPI_SWIGLU, 512, {200, 200}, 1, 4, false, 0, CU_X_AUTO, true);
    check("rmsnorm on load, gate, up, swiglu, x per block", CU_EPI_SWIGLU, 512, {200, 200}, 2, 8, false, 0, CU_X_BLOCK, true);
    check("rmsnorm on load, q, k (RoPE), v, 16 warps", CU_EPI_PLAIN, 1024, {256, 128, 128}, 3, 16, false, 64, CU_X_WARP, true);
    check("rmsnorm on load, outliers past f16", CU_EPI_SWIGLU, 1024, {64, 64}, 2, 8, false, 0, CU_X_WARP, true, 3e5f);
    check("rmsnorm on load, outliers, x per block", CU_EPI_SWIGLU, 1024, {64, 64}, 2, 8, false, 0, CU_X_BLOCK, true, 3e5f);
    check("rmsnorm on load, 8 rows", CU_EPI_PLAIN, CU_AWQ_XNORM_MAX_K / 128 * 128, {32}, 8, 0, false, 0, CU_X_AUTO, true);
    // blocks that take several blocks of work each (x staged once; partial sums in alternate halves)
    g_grid = 3;
    check("looped: gate, up, swiglu, rmsnorm on load", CU_EPI_SWIGLU, 512, {200, 200}, 1, 8, false, 0, CU_X_AUTO, true);
    check("looped: gate, up, swiglu, outliers", CU_EPI_SWIGLU, 1024, {64, 64}, 2, 8, false, 0, CU_X_WARP, true, 3e5f);
    check("looped: o + residual + rmsnorm", CU_EPI_ADD, 256, {200}, 1, 4, true);
    check("looped: q, k, v, rmsnorm on load, x per block", CU_EPI_PLAIN, 384, {136, 40, 40}, 3, 8, false, 0, CU_X_BLOCK, true);
    check("looped: q, k (RoPE), v, x per block", CU_EPI_PLAIN, 256, {256, 128, 128}, 2, 8, false, 64, CU_X_BLOCK);
    check("looped: plain, x from global", CU_EPI_PLAIN, 256, {264}, 2, 16, false, 0, CU_X_GLOBAL);
    check("not looped: q, k (RoPE), v, x per warp", CU_EPI_PLAIN, 1024, {256, 128, 128}, 1, 8, false, 64, CU_X_WARP);
    g_grid = 0;
    // each warp's weight ring 2, 3 and 4 deep, over 1 to 9 groups a warp
    for (int ring : {2, 3, 4}) {
        g_ring = ring;
        check("ring: gate, up, swiglu", CU_EPI_SWIGLU, 1152, {64, 64}, 1, 4, false, 0, CU_X_AUTO, true);
        check("ring: down + residual", CU_EPI_ADD, 2304, {48}, 2, 8);
        check("ring: q, k (RoPE), v", CU_EPI_PLAIN, 512, {256, 128, 128}, 1, 16, false, 64);
    }
    g_ring = 0;
    // gate/up's rows as f16, and down reading them: from global memory, staged per block and per warp
    g_yh = true;
    check("gate, up, swiglu, f16 rows out", CU_EPI_SWIGLU, 512, {200, 200}, 2, 0);
    check("gate, up, swiglu, f16 rows out, 8 rows", CU_EPI_SWIGLU, 256, {72, 72}, 8, 8);
    g_yh = false, g_xh = true;
    for (int xp : {CU_X_GLOBAL, CU_X_BLOCK, CU_X_WARP})
        for (int T : {1, 3}) check("down + residual, f16 rows in", CU_EPI_ADD, 2304, {48}, T, 16, false, 0, xp);
    check("down + residual, f16 rows in, 20 chunks a warp", CU_EPI_ADD, 5120, {40}, 1, 2, false, 0, CU_X_WARP);
    g_grid = 3;
    check("looped: plain, f16 rows in", CU_EPI_PLAIN, 1024, {264}, 2, 8);
    g_grid = 0, g_xh = false;
    // prefill GEMM, on mma.sync and on wgmma: both token tiles, partial token / column / k tiles,
    // odd N, 3 AWQ groups
    for (bool wg : {false, true}) {
        for (int sm : {1, 1 << 20}) {
            check_gemm(LOOM_Q4_AWQ, 256, {200}, 40, sm, wg);
            check_gemm(LOOM_F16, 264, {75}, 17, sm, wg);
            check_gemm(LOOM_BF16, 128, {130}, 70, sm, wg);
        }
        check_gemm(LOOM_Q4_AWQ, 384, {136}, 130, 1, wg);
        check_gemm(LOOM_F16, 40, {256}, 9, 1 << 20, wg);
        // several weights that read the same x in one launch (q, k, v; gate, up), partial block rows
        check_gemm(LOOM_Q4_AWQ, 256, {200, 40, 136}, 40, 1, wg);
        check_gemm(LOOM_F16, 264, {75, 130}, 17, 1 << 20, wg);
        check_gemm(LOOM_BF16, 128, {40, 40, 256}, 70, 1, wg);
    }
    // invalid arguments are refused, not run
    weight w = make_weight(128, 8);
    cu_awq_gemv_args bad{};
    bad.T = 9, bad.n = 1, bad.w[0] = &w.w;
    if (host_awq_gemv(&bad) == cudaSuccess) printf("FAIL T=9 accepted\n"), failures++;
    bad.T = 1, bad.epi = CU_EPI_SWIGLU;
    if (host_awq_gemv(&bad) == cudaSuccess) printf("FAIL swiglu with one weight accepted\n"), failures++;
    bad.epi = CU_EPI_PLAIN, bad.warps = 5;
    if (host_awq_gemv(&bad) == cudaSuccess) printf("FAIL 5 warps per block accepted\n"), failures++;
    float g[128] = {};
    bad.warps = 0, bad.xnorm_w = g, bad.x_place = CU_X_GLOBAL;
    if (host_awq_gemv(&bad) == cudaSuccess) printf("FAIL rmsnorm on load without staging accepted\n"), failures++;
    bad.x_place = CU_X_AUTO, bad.x_f16 = 1;
    if (host_awq_gemv(&bad) == cudaSuccess) printf("FAIL f16 rows with rmsnorm on load accepted\n"), failures++;
    bad.xnorm_w = nullptr, bad.x_f16 = 0, bad.y_f16 = 1;
    if (host_awq_gemv(&bad) == cudaSuccess) printf("FAIL f16 rows out of a plain GEMV accepted\n"), failures++;
    { // a norm weight off 16-byte alignment is staged per block (per warp reads it four elements a load)
        weight w2 = make_weight(512, 64);
        std::vector<float> xv(512, 0.5f), g2(513, 1.0f), y2(64);
        cu_awq_gemv_args m{};
        m.x = xv.data(), m.T = 1, m.n = 1, m.w[0] = &w2.w, m.y[0] = y2.data();
        m.xnorm_w = g2.data() + 1, m.xnorm_wdt = LOOM_F32, m.xnorm_eps = 1e-6f;
        awq_params P;
        int bl, th;
        if (awq_geometry(&m, 132, &P, &bl, &th) || awq_xmode(&m, P) != AWQ_XB)
            printf("FAIL a misaligned norm weight is not staged per block\n"), failures++;
    }
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
