#version 450
/* embed: y[t] = table[ids[t]] for ids in this dispatch's row range [v0, v1).
 * p[7] D, p[8] v0, p[9] v1, p[10] V. Grid: (ceil(D/256), T). */
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint WDT = 0;
layout(std430, binding = 0) readonly buffer Tab { uint tab[]; };
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
void main()
{
    uint t = gl_WorkGroupID.y, d = gl_GlobalInvocationID.x, D = pc.p[7];
    int id = ids[OFF(1) + t];
    if (id < 0 || id >= int(pc.p[10])) {
        if (d == 0u) atomicOr(step.w[1], 1u); /* reported by the host after the step */
        return;
    }
    if (d >= D || id < int(pc.p[8]) || id >= int(pc.p[9])) return;
    uint e = OFF(0) + (uint(id) - pc.p[8]) * D + d;
    y[OFF(2) + t * D + d] = LOADT(WDT, tab, e);
}
