// Metal prelude, header part: handed to mx.fast.metal_kernel as `header`. Defines the vocabulary
// the shared kernel bodies are written in: qualifiers, barriers, SIMD-group shuffles, math, and
// the SIMD group's 8x8 matrix fragments (simdgroup_matrix, half in, float accumulate) filled
// straight from packed codes through thread_elements(), so no tile goes through threadgroup
// memory. Inputs/outputs/grid: none (helpers only).
//
// Fragment geometry (as MLX's steel kernels use it): lane holds elements (fm, fn) and (fm, fn+1)
// of every 8x8 fragment, fm = (lane/4 & 4) + (lane/2 % 4), fn = (lane/4 & 2)*2 + (lane%2)*2.
// S^T (8 tokens x 8 heads) = K . Q^T and O^T (D x 8 heads) += V^T (D x 8 tokens) . P^T, as on CUDA:
//   K row this lane dequantizes: token fm, the quarter fn/2 of the row's words.
//   V rows: tokens fn, fn+1, the eighth fm of each row's words (pairs along tokens).
//   Score element e: token fm, head fn + e; output element e of dim tile i: head fn + e, dim
//   fm*D/8 + i.
#include <metal_stdlib>
using namespace metal;
typedef half half_t;

#define FN inline
#define SHARED threadgroup
#define SHARED_PTR(T) threadgroup T*
#define BARRIER() threadgroup_barrier(mem_flags::mem_threadgroup)
#define FINF (as_type<float>(0x7f800000u))
#define F32_BITS(i) as_type<float>(i)    // the float whose bits int i holds

FN float shfl_xor(float v, ushort mask) { return simd_shuffle_xor(v, mask); }
FN float fast_exp2(float x) { return metal::exp2(x); }
FN float inv_sqrt(float x) { return metal::rsqrt(x); }
FN float to_f32(float x) { return x; }
FN float to_f32(half x) { return float(x); }
FN float to_f32(bfloat16_t x) { return float(x); }
FN half_t to_half(float x) { return half_t(x); }
template <typename T> FN T from_f32(float x) { return static_cast<T>(x); }
// Eight consecutive outputs (prefill_span.body; p 16-byte aligned): two 4-wide stores.
FN void store8(device half* p, thread const float (&x)[8]) {
  *((device half4*)p) = half4(x[0], x[1], x[2], x[3]);
  *((device half4*)(p + 4)) = half4(x[4], x[5], x[6], x[7]);
}
FN void store8(device float* p, thread const float (&x)[8]) {
  *((device float4*)p) = float4(x[0], x[1], x[2], x[3]);
  *((device float4*)(p + 4)) = float4(x[4], x[5], x[6], x[7]);
}

// Decode runs in two launches here (decode_combine.body merges the splits): Metal's memory model
// for one threadgroup reading another's results within a dispatch has not been validated on a Mac.
#define FOLIO_ONE_PASS 0
FN float load_partial(const device float* p) { return *p; }
FN void load_partial4(const device float* p, thread float (&d)[4]) {   // one 16-byte load (p aligned)
  const float4 v = *((const device float4*)p);
  d[0] = v.x; d[1] = v.y; d[2] = v.z; d[3] = v.w;
}

// 1024+n for each 16-bit lane of `codes` (n < 256), minus 1024, times s plus b (see the CUDA side).
FN half2 dq_pair(uint codes, half2 s2, half2 b2) {
  return fma(as_type<half2>(codes | 0x64006400u) - half2(half(1024.0f)), s2, b2);
}

// n consecutive words from p[i] (i a multiple of n): one 16- or 8-byte load where n allows.
template <int N> FN void load_words(thread uint (&dst)[N], const device uint32_t* p, int i) {
  if (N % 4 == 0) {
    for (int k = 0; k < N; k += 4) {
      const uint4 v = *((const device uint4*)(p + i + k));
      for (int c = 0; c < 4; ++c) dst[k + c] = v[c];
    }
  } else if (N % 2 == 0) {
    for (int k = 0; k < N; k += 2) {
      const uint2 v = *((const device uint2*)(p + i + k));
      for (int c = 0; c < 2; ++c) dst[k + c] = v[c];
    }
  } else {
    for (int k = 0; k < N; ++k) dst[k] = p[i + k];
  }
}
template <int N> FN void zero_words(thread uint (&dst)[N]) {
  for (int k = 0; k < N; ++k) dst[k] = 0u;
}

// -- geometry --------------------------------------------------------------------------------
#define TM 8
#define KR 1
#define VR 2
#define SE 2
#define TOKEN_XOR_1 2
#define TOKEN_XOR_2 4
#define TOKEN_XOR_3 16
struct Lane { int fm, fn; };
FN Lane lane_of(uint lane) {
  const int qid = int(lane) / 4;
  return Lane{(qid & 4) + (int(lane) / 2) % 4, (qid & 2) * 2 + (int(lane) % 2) * 2};
}
// A lane's rows of a tile are its first row plus a constant: k_row(l, j) = k_row(l, 0) + k_row_off(j).
FN int k_row_off(int j) { return 0; }
FN int v_row_off(int j) { return j; }
FN int k_row(Lane l, int j) { return l.fm + k_row_off(j); }
FN int k_part(Lane l) { return l.fn / 2; }
FN int v_row(Lane l, int j) { return l.fn + v_row_off(j); }
FN int v_part(Lane l) { return l.fm; }
FN int se_tok(Lane l, int e) { return l.fm; }
FN int lane_head(Lane l, int h) { return l.fn + h; }
FN bool head_owner(Lane l) { return l.fm == 0; }

// -- fragments ---------------------------------------------------------------------------------
template <int D> struct QFrag { simdgroup_half8x8 r[D / 8]; };
struct SFrag { simdgroup_float8x8 m; };
struct PFrag { simdgroup_half8x8 m; };
template <int D> struct OAcc { simdgroup_float8x8 m[D / 8]; };

FN void s_zero(thread SFrag& s) { s.m = make_filled_simdgroup_matrix<float, 8, 8>(0.0f); }
FN float s_get(thread SFrag& s, int e) { return s.m.thread_elements()[e]; }
template <int D> FN void o_zero(thread OAcc<D>& o) {
  for (int i = 0; i < D / 8; ++i) o.m[i] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}
template <int D> FN void o_scale(thread OAcc<D>& o, float c0, float c1) {
  for (int i = 0; i < D / 8; ++i) {
    o.m[i].thread_elements()[0] *= c0;
    o.m[i].thread_elements()[1] *= c1;
  }
}
template <int D> FN void o_store(thread OAcc<D>& o, Lane l, threadgroup float* out) {
  for (int i = 0; i < D / 8; ++i)
    for (int e = 0; e < 2; ++e) out[lane_head(l, e) * D + l.fm * (D / 8) + i] = o.m[i].thread_elements()[e];
}

template <int KBITS> FN int k_pair_dim(int part, int p, int e, int D) {
  const int PPW = 16 / KBITS, EPW = 32 / KBITS;
  return part * (D / 4) + (p / PPW) * EPW + (p % PPW) + e * (EPW / 2);
}
template <int KBITS> FN uint k_codes(thread const uint* w, int p) {
  const int PPW = 16 / KBITS;
  return KBITS == 4 ? (w[p / PPW] >> (4 * (p % PPW))) & 0x000F000Fu : (w[p / PPW] >> (8 * (p % PPW))) & 0x00FF00FFu;
}

// Q^T fragments: row fm of k-step s is pair s, element fm%2, of the lane quarter fm/2; columns are
// heads fn and fn+1 (zeros for padded heads h >= G); from the queries staged in threadgroup memory.
template <int D, int KBITS> FN void q_frag_load(thread QFrag<D>& qf, Lane l, const threadgroup float* qh, int G) {
  for (int s = 0; s < D / 8; ++s) {
    const int dim = k_pair_dim<KBITS>(l.fm / 2, s, l.fm % 2, D);
    for (int e = 0; e < 2; ++e)
      qf.r[s].thread_elements()[e] = l.fn + e < G ? half(qh[(l.fn + e) * D + dim]) : half(0.0f);
  }
}

template <int D, int KBITS, int KGROUP, int KWL, int KGL>
FN void s_tile(thread SFrag& s, thread const QFrag<D>& qf, thread const uint (&kw)[KR][KWL],
               thread const half_t (&ks)[KR][KGL], thread const half_t (&kb)[KR][KGL]) {
  const int EPW = 32 / KBITS;
  for (int st = 0; st < D / 8; ++st) {
    const int gi = ((st / (16 / KBITS)) * EPW) / KGROUP;
    const half2 v = dq_pair(k_codes<KBITS>(kw[0], st), half2(ks[0][gi]), half2(kb[0][gi]));
    simdgroup_half8x8 a;
    a.thread_elements()[0] = v[0];
    a.thread_elements()[1] = v[1];
    simdgroup_multiply_accumulate(s.m, a, qf.r[st], s.m);
  }
}

FN void p_frag(thread PFrag& pf, thread const float (&p)[2]) {
  pf.m.thread_elements()[0] = half(p[0]);
  pf.m.thread_elements()[1] = half(p[1]);
}

template <int D, int VBITS, int VWL>
FN void pv_tile(thread OAcc<D>& o, thread const PFrag& pf, thread const uint (&vw)[VR][VWL],
                thread const half_t (&vs)[VR], thread const half_t (&vb)[VR]) {
  const int EPW = 32 / VBITS;
  const uint mask = VBITS == 4 ? 0xFu : 0xFFu;
  const half2 s01 = half2(vs[0], vs[1]), b01 = half2(vb[0], vb[1]);
  for (int i = 0; i < D / 8; ++i) {
    const int w = i / EPW, sh = VBITS * (i % EPW);
    const uint codes = ((vw[0][w] >> sh) & mask) | (((vw[1][w] >> sh) & mask) << 16);
    const half2 v = dq_pair(codes, s01, b01);
    simdgroup_half8x8 a;
    a.thread_elements()[0] = v[0];
    a.thread_elements()[1] = v[1];
    simdgroup_multiply_accumulate(o.m[i], a, pf.m, o.m[i]);
  }
}
