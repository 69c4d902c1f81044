#version 450
/* rope (neox): pairs (i, i + hd/2) rotate by the step's cos/sin table
 * (host-computed in double: step.w[p[9] + (t * hd/2 + i) * 2 + {0,1}]).
 * p[7] n_head, p[8] head_dim, p[9] table base word. Grid: (ceil(H*hd/2 / 256), T). */
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
void main()
{
    uint t = gl_WorkGroupID.y, j = gl_GlobalInvocationID.x, H = pc.p[7], hd = pc.p[8], h2 = hd / 2u;
    if (j >= H * h2) return;
    uint h = j / h2, i = j % h2, tab = pc.p[9] + (t * h2 + i) * 2u;
    float c = uintBitsToFloat(step.w[tab]), s = uintBitsToFloat(step.w[tab + 1u]);
    uint r = t * H * hd + h * hd + i;
    float a = x[OFF(0) + r], b = x[OFF(0) + r + h2];
    y[OFF(2) + r] = a * c - b * s;
    y[OFF(2) + r + h2] = b * c + a * s;
}
