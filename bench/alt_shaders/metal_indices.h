// Metal prelude, body part: prepended to each kernel body, because mx.fast.metal_kernel adds a
// thread-index parameter to the generated signature only when its attribute name appears in the
// body text. Names the thread coordinates the bodies use (lane, warp = SIMD group, block).
const uint lane = thread_index_in_simdgroup;
const uint warp = simdgroup_index_in_threadgroup;
const uint3 block = threadgroup_position_in_grid;
