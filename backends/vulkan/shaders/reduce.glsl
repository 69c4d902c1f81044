/* reduce.glsl: sums over a workgroup of WG invocations (WG a power of two).
 * With USE_SUBGROUP, subgroupAdd then one partial per subgroup. */
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#endif
shared float red_[WG];
float wg_sum(float v)
{
#ifdef USE_SUBGROUP
    v = subgroupAdd(v);
    if (subgroupElect()) red_[gl_SubgroupID] = v;
    barrier();
    float s = 0.0;
    for (uint i = 0u; i < gl_NumSubgroups; i++) s += red_[i];
    barrier();
    return s;
#else
    uint l = gl_LocalInvocationID.x;
    red_[l] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (l < s) red_[l] += red_[l + s];
        barrier();
    }
    float r = red_[0];
    barrier();
    return r;
#endif
}
