// A CPU stand-in for the CUDA device vocabulary the decode kernel uses, so the CUDA build of the
// kernel (cuda_header.h + the shared body, as MLX assembles it) runs here under g++ on the threads
// of emu_threads.h: warp collectives (shuffles, mma.sync, movmatrix) meet at a per-warp barrier,
// __syncthreads at the block's. The four inline PTX statements of cuda_header.h are swapped for
// the emu_* calls below by tests/kernel_emu/emulate.py.
// Numerics follow the PTX ISA's definitions (fp16 operands with subnormals kept, products exact),
// with the MMA sums taken in double: not the hardware's order and truncation of additions, nor
// ex2.approx's last bits.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "emu_threads.h"

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __location__(x)
#define __launch_bounds__(...)
#define __grid_constant__

struct uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct uint3 { unsigned int x, y, z; };
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return uint4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// -- half and bfloat16 ---------------------------------------------------------------------------
struct __half {
  _Float16 v;
  __half() = default;
  __half(float f) : v(static_cast<_Float16>(f)) {}
  operator float() const { return static_cast<float>(v); }
};
struct __half2 { __half x, y; };
typedef EmuBf16 __nv_bfloat16;
static_assert(sizeof(__half) == 2 && sizeof(__half2) == 4, "half layout");
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __half fma_h(__half a, __half b, __half c) { return __half(float(emu_fma_f16(a.v, b.v, c.v))); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) { return __half2{fma_h(a.x, b.x, c.x), fma_h(a.y, b.y, c.y)}; }
inline __half2 __hsub2(__half2 a, __half2 b) {
  return __half2{__half(float(static_cast<_Float16>(double(float(a.x)) - double(float(b.x))))),
                 __half(float(static_cast<_Float16>(double(float(a.y)) - double(float(b.y)))))};
}

// -- scalar intrinsics -----------------------------------------------------------------------------
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
  const uint64_t both = uint64_t(x) | (uint64_t(y) << 32);
  unsigned int r = 0;
  for (int i = 0; i < 4; ++i) r |= unsigned((both >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <class A, class B> inline auto min(A a, B b) { return a < b ? a : b; }
template <class A, class B> inline auto max(A a, B b) { return a > b ? a : b; }
inline float __ldcg(const float* p) { return *p; }
inline float4 __ldcg(const float4* p) { return *p; }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline int atomicExch(int* p, int v) { return std::atomic_ref<int>(*p).exchange(v); }

// -- threads ---------------------------------------------------------------------------------------
#define threadIdx (uint3{emu_tid, 0, 0})
#define blockIdx (uint3{emu_bx, emu_by, 0})
inline void __syncthreads() { emu_block_sync(); }

inline float __shfl_xor_sync(unsigned, float v, int mask) { return emu_shfl_xor(v, unsigned(mask)); }

inline float emu_half(uint32_t reg, int hi) {
  const uint16_t b = uint16_t(hi ? reg >> 16 : reg & 0xFFFF);
  _Float16 h; std::memcpy(&h, &b, 2);
  return float(h);
}
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, lane = 4g + t (PTX ISA fragment layouts):
// a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9];
// b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1].
inline void emu_mma(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  const unsigned me = emu_tid, base = me & ~31u;
  uint64_t* s = emu_slot(me);
  s[0] = a0; s[1] = a1; s[2] = a2; s[3] = a3; s[4] = b0; s[5] = b1;
  emu_warp_sync();
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const uint64_t* o = emu_slot(base + l);
    const int g = l >> 2, t = l & 3;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = emu_half(uint32_t(o[0]), h);
      A[g + 8][2 * t + h] = emu_half(uint32_t(o[1]), h);
      A[g][2 * t + 8 + h] = emu_half(uint32_t(o[2]), h);
      A[g + 8][2 * t + 8 + h] = emu_half(uint32_t(o[3]), h);
      B[2 * t + h][g] = emu_half(uint32_t(o[4]), h);
      B[2 * t + 8 + h][g] = emu_half(uint32_t(o[5]), h);
    }
  }
  emu_warp_sync();
  const int g = int(me & 31u) >> 2, t = int(me & 3u);
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    double acc = c[e];
    for (int k = 0; k < 16; ++k) acc += double(A[row][k]) * double(B[k][col]);
    c[e] = float(acc);
  }
}
// movmatrix.sync.aligned.m8n8.trans.b16: lane = 4r + c holds M[r][2c, 2c+1]; gets M^T's.
inline uint32_t emu_movmatrix(uint32_t x) {
  const unsigned me = emu_tid, base = me & ~31u;
  emu_slot(me)[0] = x;
  emu_warp_sync();
  uint16_t M[8][8];
  for (int l = 0; l < 32; ++l) {
    const uint32_t v = uint32_t(emu_slot(base + l)[0]);
    M[l >> 2][2 * (l & 3)] = uint16_t(v & 0xFFFF);
    M[l >> 2][2 * (l & 3) + 1] = uint16_t(v >> 16);
  }
  emu_warp_sync();
  const int r = int(me & 31u) >> 2, c = int(me & 3u);
  return uint32_t(M[2 * c][r]) | (uint32_t(M[2 * c + 1][r]) << 16);
}
