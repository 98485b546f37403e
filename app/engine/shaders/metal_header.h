// Metal prelude, header part: handed to mx.fast.metal_kernel as `header`. Defines the vocabulary
// the shared kernel bodies are written in: qualifiers, barriers, SIMD-group shuffles, math,
// dequantization of one packed word, and a SIMD-group matrix product on threadgroup-memory tiles
// (simdgroup_matrix 8x8, half in, float accumulate). Inputs/outputs/grid: none (helpers only).
// MMA_N: the tile edge; heads are padded to it.
#include <metal_stdlib>
using namespace metal;
typedef half half_t;

#define DEV device
#define TG threadgroup
#define SHARED threadgroup
#define ALIGN32
#define BARRIER() threadgroup_barrier(mem_flags::mem_threadgroup)
#define WARP_BARRIER() simdgroup_barrier(mem_flags::mem_threadgroup)
#define FINF (as_type<float>(0x7f800000u))

inline float shfl_xor(float v, ushort mask) { return simd_shuffle_xor(v, mask); }
inline float fast_exp2(float x) { return metal::exp2(x); }
inline float to_f32(float x) { return x; }
inline float to_f32(half x) { return float(x); }
inline float to_f32(bfloat16_t x) { return float(x); }
inline half_t to_half(float x) { return half_t(x); }
template <typename T> inline T from_f32(float x) { return static_cast<T>(x); }

inline uint4 zero16() { return uint4(0u); }
inline uint4 load16(const device uint32_t* p, long i) { return ((const device uint4*)p)[i]; }

// One word of eight 4-bit codes -> eight halves s*n+b, stored in the order 0,4,1,5,2,6,3,7 (the
// same bit arithmetic as the CUDA side: the 0x6400 exponent makes a code into 1024+n).
inline uint4 dq4(uint w, half s, half b) {
  const half2 s2 = half2(s), b2 = half2(b), k = half2(half(1024.0f));
  uint4 r;
  for (int j = 0; j < 4; ++j)
    r[j] = as_type<uint>(fma(as_type<half2>(((w >> (4 * j)) & 0x000F000Fu) | 0x64006400u) - k, s2, b2));
  return r;
}
// One word of four 8-bit codes -> four halves, stored in the order 0,2,1,3.
inline uint2 dq8(uint w, half s, half b) {
  const half2 s2 = half2(s), b2 = half2(b), k = half2(half(1024.0f));
  uint2 r;
  for (int j = 0; j < 2; ++j)
    r[j] = as_type<uint>(fma(as_type<half2>(((w >> (8 * j)) & 0x00FF00FFu) | 0x64006400u) - k, s2, b2));
  return r;
}
inline void st4(threadgroup half_t* dst, uint4 v) { *((threadgroup uint4*)dst) = v; }
inline void st2(threadgroup half_t* dst, uint2 v) { *((threadgroup uint2*)dst) = v; }

#define MMA_N 8
// A SIMD group's float accumulator tile (M x N) held in registers across calls, and the matrix
// product acc += A (M x K, row-major) * B (K x N; B_COL: stored as N rows of K), operands in
// threadgroup memory.
template <int M, int N> struct Acc { simdgroup_float8x8 f[M / 8][N / 8]; };
template <int M, int N> inline void acc_fill(thread Acc<M, N>& a, float v) {
  for (int i = 0; i < M / 8; ++i)
    for (int j = 0; j < N / 8; ++j) a.f[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(v);
}
template <int M, int N> inline void acc_store(thread const Acc<M, N>& a, threadgroup float* C, int ldc) {
  for (int i = 0; i < M / 8; ++i)
    for (int j = 0; j < N / 8; ++j) simdgroup_store(a.f[i][j], C + i * 8 * ldc + j * 8, ldc);
}
template <int M, int N> inline void acc_load(thread Acc<M, N>& a, const threadgroup float* C, int ldc) {
  for (int i = 0; i < M / 8; ++i)
    for (int j = 0; j < N / 8; ++j) simdgroup_load(a.f[i][j], C + i * 8 * ldc + j * 8, ldc);
}
template <int M, int N, int K, bool B_COL>
inline void acc_mma(thread Acc<M, N>& acc, const threadgroup half_t* A, int lda, const threadgroup half_t* B, int ldb) {
  for (int ki = 0; ki < K; ki += 8) {
    simdgroup_half8x8 a[M / 8];
    for (int i = 0; i < M / 8; ++i) simdgroup_load(a[i], A + i * 8 * lda + ki, lda);
    for (int j = 0; j < N / 8; ++j) {
      simdgroup_half8x8 b;
      if (B_COL) simdgroup_load(b, B + j * 8 * ldb + ki, ldb, ulong2(0, 0), true);
      else simdgroup_load(b, B + ki * ldb + j * 8, ldb);
      for (int i = 0; i < M / 8; ++i) simdgroup_multiply_accumulate(acc.f[i][j], a[i], b, acc.f[i][j]);
    }
  }
}
