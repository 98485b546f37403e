// CUDA prelude, body part: prepended to each kernel body. Names the thread coordinates the
// bodies use (lane in warp, warp in block, block in grid). Grid/threadgroup: as the kernel's own.
const uint lane = threadIdx.x & 31u;
const uint warp = threadIdx.x >> 5;
const uint3 block = make_uint3(blockIdx.x, blockIdx.y, blockIdx.z);
