#version 450
/* phases.comp — the shader of bench/vulkan/phases.c: a decode step's memory
 * traffic without its arithmetic. A phase streams a range of one buffer
 * (uvec4 words [p.x, p.x + p.y)) with its first p.z work-groups; the xor of
 * what an invocation read is compared with a push constant so that no load is
 * dead (it never matches in practice; a match only counts in sink[1]).
 *   MODE 0: one phase per dispatch, its row of the phase table in pc.
 *   MODE 1: the n_phase rows from pc.phase in one dispatch (persistent):
 *           after each phase the work-groups meet at a grid barrier (a
 *           counter per phase in sync[], zeroed by the host before each step).
 *   MODE 2: nothing (the cost of a dispatch alone).
 *   MODE 3: one phase per dispatch as MODE 0, recorded without pipeline
 *           barriers: a work-group waits until every work-group of the phase
 *           before has counted itself in sync[phase - 1], then streams and
 *           counts itself in sync[phase] (cross-dispatch chaining).
 *   MODE 4: every phase's work-groups in one dispatch, each taking its place
 *           by an atomic ticket (sync[n_phase]) so that a waiting work-group
 *           only ever waits for ones that started before it; then as MODE 3.
 *   FLAGS bit 1 in MODES 3 and 4: the work-group's first word is loaded
 *   before the wait, as a GEMV's weights can be. Their waits read the
 *   counter by atomicOr(c, 0) (no compiler drops or hoists it) and give up
 *   after 8 x 65,535 reads (lavapipe ends a loop after 65,535 turns), counting
 *   the give-ups in timeouts[0]: a wait that never ends is a deadlock.
 *   FLAGS bit 2 in MODE 3: the wait is an unbounded loop of volatile reads
 *   instead (cheaper, but it hangs where the atomic form gives up). */
#extension GL_EXT_control_flow_attributes : enable
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
layout(constant_id = 1) const uint FLAGS = 0; /* MODE 1: bit 0 writes before the barrier, bit 1 loads ahead */
layout(std430, binding = 0) readonly buffer W { uvec4 w[]; };
layout(std430, binding = 1) readonly buffer P { uvec4 ph[]; };
layout(std430, binding = 2) volatile coherent buffer S { uint sync[]; };
layout(std430, binding = 3) buffer K { uint sink[]; };
layout(std430, binding = 4) buffer T { uint timeouts[]; };
layout(push_constant, std430) uniform PC { uint phase, n_phase, magic, pad; } pc;
shared uint s_ticket;

#define U 4u /* words in flight per invocation */

uint stream(uvec4 p, uint g, uint n_g)
{
    uint acc = 0u;
    if (g >= p.z) return acc;
    uint n = p.x + p.y, stride = min(p.z, n_g) * 256u;
    for (uint i = p.x + g * 256u + gl_LocalInvocationID.x; i < n; i += stride * U) {
        uvec4 v[U];
        [[unroll]] for (uint u = 0u; u < U; u++) v[u] = i + u * stride < n ? w[i + u * stride] : uvec4(0u);
        [[unroll]] for (uint u = 0u; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    return acc;
}

void main()
{
    uint g = gl_WorkGroupID.x, n_g = gl_NumWorkGroups.x, lid = gl_LocalInvocationID.x, acc = 0u;
    if (MODE == 0u) acc = stream(ph[pc.phase], g, n_g);
    if (MODE == 1u) {
        for (uint k = 0u; k < pc.n_phase; k++) {
            acc ^= stream(ph[pc.phase + k], g, n_g);
            /* FLAGS & 1: each work-group's first 32 invocations write a word, as a GEMV writes its
             * columns, and the fence must wait for them; FLAGS & 2: the next phase's first word of
             * this invocation is loaded before the wait, as weights can be (they do not depend on it) */
            if ((FLAGS & 1u) != 0u && lid < 32u) sink[2u + (k * n_g + g) * 32u + lid] = acc;
            uvec4 next = uvec4(0u);
            uvec4 pn = k + 1u < pc.n_phase ? ph[pc.phase + k + 1u] : uvec4(0u);
            if ((FLAGS & 2u) != 0u && g < pn.z && g * 256u + lid < pn.y) next = w[pn.x + g * 256u + lid];
            barrier();
            if (lid == 0u) {
                memoryBarrierBuffer();
                atomicAdd(sync[k], 1u);
                while (sync[k] < n_g) {}
            }
            barrier();
            acc ^= next.x ^ next.w;
        }
    }
    if (MODE == 3u || MODE == 4u) {
        uint k = pc.phase;
        if (MODE == 4u) { /* ph[].w: the phase's first ticket */
            if (lid == 0u) s_ticket = atomicAdd(sync[pc.n_phase], 1u);
            barrier();
            uint t = s_ticket;
            k = 0u;
            while (k + 1u < pc.n_phase && ph[k + 1u].w <= t) k++;
            g = t - ph[k].w;
        }
        uvec4 p = ph[k], first = uvec4(0u);
        if ((FLAGS & 2u) != 0u && g * 256u + lid < p.y) first = w[p.x + g * 256u + lid];
        if (k > 0u) {
            if (lid == 0u && (FLAGS & 4u) != 0u) {
                while (sync[k - 1u] < ph[k - 1u].z) {}
                memoryBarrierBuffer();
            } else if (lid == 0u) {
                uint need = ph[k - 1u].z;
                for (uint o = 0u; o < 8u && atomicOr(sync[k - 1u], 0u) < need; o++)
                    for (uint s = 0u; s < 65535u && atomicOr(sync[k - 1u], 0u) < need; s++) {}
                if (atomicOr(sync[k - 1u], 0u) < need) atomicAdd(timeouts[0], 1u);
                memoryBarrierBuffer();
            }
            barrier();
        }
        acc = stream(p, g, p.z) ^ first.x ^ first.w;
        barrier();
        if (lid == 0u) {
            memoryBarrierBuffer();
            atomicAdd(sync[k], 1u);
        }
    }
    if (MODE != 2u && acc == pc.magic) atomicAdd(sink[1], 1u);
}
