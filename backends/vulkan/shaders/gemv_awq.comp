#version 450
/* matmul_awq for few tokens (T <= 8, in blocks of 4), on the checkpoint's layout:
 * qweight u32 [K][N/8], qzeros u32 [K/128][N/8], scales f16 [K/128][N].
 * A workgroup is 32 packed columns (256 outputs) x 8 K-slices; slice ks takes
 * rows ks*16 .. ks*16+15 of every group, summing x*q and x per group, then
 * acc += s * (sum(x q) - z * sum(x)). The 8 slices are added in shared memory.
 * Bindings: 0 x, 1 qweight, 2 qzeros, 3 scales, 4 bias, 5 y.
 * p[7] K, p[8] N, p[9] has bias. */
#include "common.glsl"
layout(local_size_x = 32, local_size_y = 8) in;
layout(constant_id = 1) const uint BDT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer QW { uint qw[]; };
layout(std430, binding = 2) readonly buffer QZ { uint qz[]; };
layout(std430, binding = 3) readonly buffer SC { uint sc[]; };
layout(std430, binding = 4) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };
shared float red[8][256];
const uint order[8] = uint[8](0u, 2u, 4u, 6u, 1u, 3u, 5u, 7u);

void main()
{
    uint lx = gl_LocalInvocationID.x, ks = gl_LocalInvocationID.y, K = pc.p[7], N = pc.p[8];
    uint NW = N / 8u, c = flat_group() * 32u + lx, G = K / 128u;
    for (uint tb = 0u; tb < ROWS; tb += 4u) {
    uint T = min(4u, ROWS - tb), xo = OFF(0) + tb * K, yo = OFF(5) + tb * N;
    float acc[4][8];
    for (uint t = 0u; t < 4u; t++)
        for (uint i = 0u; i < 8u; i++) acc[t][i] = 0.0;
    if (c < NW) {
        for (uint g = 0u; g < G; g++) {
            float part[4][8], sx[4];
            for (uint t = 0u; t < 4u; t++) {
                sx[t] = 0.0;
                for (uint i = 0u; i < 8u; i++) part[t][i] = 0.0;
            }
            uint k0 = g * 128u + ks * 16u;
            for (uint kk = 0u; kk < 16u; kk++) {
                uint k = k0 + kk, wd = qw[OFF(1) + k * NW + c];
                for (uint t = 0u; t < 4u; t++) {
                    if (t >= T) break;
                    float xv = x[xo + t * K + k];
                    sx[t] += xv;
                    for (uint i = 0u; i < 8u; i++) part[t][i] += xv * float((wd >> (4u * i)) & 15u);
                }
            }
            uint zw = qz[OFF(2) + g * NW + c], sb = OFF(3) + g * N + c * 8u; /* sb: half index, even */
            for (uint i = 0u; i < 8u; i++) {
                float z = float((zw >> (4u * i)) & 15u);
                uint col = order[i];
                float s = unpackHalf2x16(sc[(sb + col) >> 1] >> (((sb + col) & 1u) * 16u)).x;
                for (uint t = 0u; t < 4u; t++) acc[t][i] += s * (part[t][i] - z * sx[t]);
            }
        }
    }
    uint j = ks * 32u + lx; /* this invocation's output column within the workgroup */
    uint cj = flat_group() * 32u + j / 8u, nj = cj * 8u + order[j % 8u];
    for (uint t = 0u; t < T; t++) {
        for (uint i = 0u; i < 8u; i++) red[ks][lx * 8u + i] = acc[t][i];
        barrier();
        if (cj < NW) {
            float v = 0.0;
            for (uint q = 0u; q < 8u; q++) v += red[q][j];
            if (pc.p[9] != 0u) v += LOADT(BDT, bias, OFF(4) + nj);
            y[yo + t * N + nj] = v;
        }
        barrier();
    }
    }
}
