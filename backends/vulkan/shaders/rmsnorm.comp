#version 450
/* rmsnorm: one workgroup per row; y = x / sqrt(mean(x^2) + eps) * w.
 * p[7] D, p[8] eps. */
#include "common.glsl"
#define WG 256u
layout(local_size_x = 256) in;
#include "reduce.glsl"
layout(constant_id = 0) const uint WDT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
void main()
{
    uint t = flat_group(), l = gl_LocalInvocationID.x, D = pc.p[7];
    uint xb = OFF(0) + t * D, yb = OFF(2) + t * D;
    float s = 0.0;
    for (uint d = l; d < D; d += WG) s += x[xb + d] * x[xb + d];
    s = wg_sum(s);
    float inv = 1.0 / sqrt(s / float(D) + PF(8));
    for (uint d = l; d < D; d += WG) y[yb + d] = x[xb + d] * inv * LOADT(WDT, w, OFF(1) + d);
}
