/* common.glsl — included by every loom Vulkan shader.
 *
 * Bindings 0..5 are the node's tensors (each bound at its own range), 7 the
 * program's step buffer. Push constants: p[0] = rows of this step (T),
 * p[1..6] = element offset of binding 0..5 inside its bound range (in the
 * binding's element size: words for f32/u32, halves for f16/bf16), p[7..]
 * op-specific. Floats travel as their bits. The fused decode shader binds
 * 0..6 and 8..15 (offsets in p[1 + binding]) and keeps its own words from p[17]. */
#extension GL_GOOGLE_include_directive : enable

layout(push_constant, std430) uniform PC { uint p[32]; } pc;

/* step: [0] n_tokens, [1] error flags, [4..] pos[maxT], seq[maxT], rope tables */
layout(std430, binding = 7) buffer Step { uint w[]; } step;

#define ROWS pc.p[0]
#define OFF(b) pc.p[1 + (b)]
#define PF(i) uintBitsToFloat(pc.p[i])

/* element i of a u32 array holding f32 (dt 0), f16 (1) or bf16 (2) */
#define HALF_AT(arr, i) ((arr[(i) >> 1] >> (((i) & 1u) * 16u)) & 0xffffu)
#define LOADT(dt, arr, i) ((dt) == 0u ? uintBitsToFloat(arr[i]) : \
                           (dt) == 1u ? unpackHalf2x16(HALF_AT(arr, i)).x : uintBitsToFloat(HALF_AT(arr, i) << 16))

uint flat_group() { return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; }
