// CUDA prelude, header part: prepended (after MLX's own CUDA header) to every kernel handed to
// mx.fast.cuda_kernel. Defines the vocabulary the shared kernel bodies are written in:
// qualifiers, barriers, warp shuffles, math, dequantization of one packed word, and a warp-level
// matrix product on shared-memory tiles (WMMA 8x32x16, fp16 in, fp32 accumulate).
// Inputs/outputs/grid: none (helpers only). MMA_N: the tile edge; heads are padded to it.
#include <mma.h>
typedef unsigned int uint;
typedef __half half_t;

#define DEV
#define TG
#define SHARED __shared__
#define ALIGN32 __align__(32)
#define BARRIER() __syncthreads()
#define WARP_BARRIER() __syncwarp()
#define FINF (__int_as_float(0x7f800000))

__device__ __forceinline__ float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
__device__ __forceinline__ float fast_exp2(float x) { return exp2f(x); }
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ half_t to_half(float x) { return __float2half_rn(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x) { return static_cast<T>(x); }

__device__ __forceinline__ uint4 zero16() { return make_uint4(0u, 0u, 0u, 0u); }
__device__ __forceinline__ uint4 load16(const uint32_t* p, long i) { return reinterpret_cast<const uint4*>(p)[i]; }
__device__ __forceinline__ uint h2_bits(__half2 h) { return *reinterpret_cast<uint*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint u) { return *reinterpret_cast<__half2*>(&u); }

// One word of eight 4-bit codes -> eight halves s*n+b, stored in the order 0,4,1,5,2,6,3,7: the
// magic 0x6400 exponent turns a code into 1024+n without a conversion instruction.
__device__ __forceinline__ uint4 dq4(uint w, __half s, __half b) {
  const __half2 s2 = __half2half2(s), b2 = __half2half2(b), k = __float2half2_rn(1024.0f);
  uint r[4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
    r[j] = h2_bits(__hfma2(__hsub2(bits_h2(((w >> (4 * j)) & 0x000F000Fu) | 0x64006400u), k), s2, b2));
  return make_uint4(r[0], r[1], r[2], r[3]);
}
// One word of four 8-bit codes -> four halves, stored in the order 0,2,1,3.
__device__ __forceinline__ uint2 dq8(uint w, __half s, __half b) {
  const __half2 s2 = __half2half2(s), b2 = __half2half2(b), k = __float2half2_rn(1024.0f);
  uint r[2];
#pragma unroll
  for (int j = 0; j < 2; ++j)
    r[j] = h2_bits(__hfma2(__hsub2(bits_h2(((w >> (8 * j)) & 0x00FF00FFu) | 0x64006400u), k), s2, b2));
  return make_uint2(r[0], r[1]);
}
__device__ __forceinline__ void st4(half_t* dst, uint4 v) { *reinterpret_cast<uint4*>(dst) = v; }
__device__ __forceinline__ void st2(half_t* dst, uint2 v) { *reinterpret_cast<uint2*>(dst) = v; }

#define MMA_N 8
// A warp's fp32 accumulator tile (M x N) held in registers across calls, and the matrix product
// acc += A (M x K, row-major) * B (K x N; B_COL: stored as N rows of K), operands in shared memory.
// WMMA shape m8n32k16: M (query heads) pads only to 8, N (tokens or head_dim) is a multiple of 32.
template <int M, int N> struct Acc {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 8, 32, 16, float> f[M / 8][N / 32];
};
template <int M, int N> __device__ __forceinline__ void acc_fill(Acc<M, N>& a, float v) {
#pragma unroll
  for (int i = 0; i < M / 8; ++i)
#pragma unroll
    for (int j = 0; j < N / 32; ++j) nvcuda::wmma::fill_fragment(a.f[i][j], v);
}
template <int M, int N> __device__ __forceinline__ void acc_store(const Acc<M, N>& a, float* C, int ldc) {
#pragma unroll
  for (int i = 0; i < M / 8; ++i)
#pragma unroll
    for (int j = 0; j < N / 32; ++j)
      nvcuda::wmma::store_matrix_sync(C + i * 8 * ldc + j * 32, a.f[i][j], ldc, nvcuda::wmma::mem_row_major);
}
template <int M, int N> __device__ __forceinline__ void acc_load(Acc<M, N>& a, const float* C, int ldc) {
#pragma unroll
  for (int i = 0; i < M / 8; ++i)
#pragma unroll
    for (int j = 0; j < N / 32; ++j)
      nvcuda::wmma::load_matrix_sync(a.f[i][j], C + i * 8 * ldc + j * 32, ldc, nvcuda::wmma::mem_row_major);
}
template <int M, int N, int K, bool B_COL>
__device__ __forceinline__ void acc_mma(Acc<M, N>& acc, const half_t* A, int lda, const half_t* B, int ldb) {
  using namespace nvcuda;
  typedef typename cuda::std::conditional<B_COL, wmma::col_major, wmma::row_major>::type BL;
#pragma unroll
  for (int ki = 0; ki < K; ki += 16) {
    wmma::fragment<wmma::matrix_a, 8, 32, 16, __half, wmma::row_major> a[M / 8];
#pragma unroll
    for (int i = 0; i < M / 8; ++i) wmma::load_matrix_sync(a[i], A + i * 8 * lda + ki, lda);
#pragma unroll
    for (int j = 0; j < N / 32; ++j) {
      wmma::fragment<wmma::matrix_b, 8, 32, 16, __half, BL> b;
      wmma::load_matrix_sync(b, B_COL ? B + j * 32 * ldb + ki : B + ki * ldb + j * 32, ldb);
#pragma unroll
      for (int i = 0; i < M / 8; ++i) wmma::mma_sync(acc.f[i][j], a[i], b, acc.f[i][j]);
    }
  }
}
