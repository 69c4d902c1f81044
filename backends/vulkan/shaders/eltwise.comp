#version 450
/* add (OP 0): y = a + b; swiglu (OP 1): y = silu(a) * b. p[7] = elements. */
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint OP = 0;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
void main()
{
    uint i = flat_group() * 256u + gl_LocalInvocationID.x;
    if (i >= pc.p[7]) return;
    float x = a[OFF(0) + i], u = b[OFF(1) + i];
    y[OFF(2) + i] = OP == 0u ? x + u : x / (1.0 + exp(-x)) * u;
}
