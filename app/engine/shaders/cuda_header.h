// CUDA prelude, header part: prepended (after MLX's own CUDA header) to every kernel handed to
// mx.fast.cuda_kernel. Defines the vocabulary the shared kernel bodies are written in: qualifiers,
// barriers, warp shuffles, math, and the warp's matrix fragments (mma.sync m16n8k16, fp16 in, fp32
// accumulate) filled straight from packed codes in registers, so no tile goes through shared memory.
// Inputs/outputs/grid: none (helpers only).
//
// Fragment geometry (PTX ISA, mma.m16n8k16): lane = 4g + t. Scores are computed transposed,
// S^T (16 tokens x 8 heads) = K (16 x D) . Q^T, and O^T (D x 8 heads) += V^T (D x 16 tokens) . P^T.
//   K rows this lane dequantizes: tokens g and g+8, the quarter t of each row's words.
//   V rows: tokens 2t, 2t+1, 2t+8, 2t+9, the eighth g of each row's words (pairs along tokens).
//   Score element e: token g + 8(e>>1), head 2t + (e&1); output element e of dim tile i: head
//   2t + (e&1), dim g*D/8 + 2i + (e>>1).
#include <cuda_fp16.h>
typedef unsigned int uint;
typedef __half half_t;

#define FN __device__ __forceinline__
#define SHARED __shared__
#define SHARED_PTR(T) T*                  // a pointer into shared memory
#define BARRIER() __syncthreads()
#define FINF (__int_as_float(0x7f800000))
#define F32_BITS(i) __int_as_float(i)   // the float whose bits int i holds

FN float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
// The MUFU's exp2 as is: exp2f adds range fix-ups for subnormal results (four more instructions
// per call), which probabilities below 2^-126 do not need.
FN float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
FN float inv_sqrt(float x) { return rsqrtf(x); }
FN float to_f32(float x) { return x; }
FN float to_f32(__half x) { return __half2float(x); }
FN float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
FN half_t to_half(float x) { return __float2half_rn(x); }
template <typename T> FN T from_f32(float x) { return static_cast<T>(x); }

// One-pass decode: decode_partial.body's last block of each KV head merges its splits
// (merge_splits.inc), counting finished blocks with an atomic; pass 2 is then not launched.
#define FOLIO_ONE_PASS 1
FN void device_fence() { __threadfence(); }
FN bool arrive(const int* counter, int n) { return atomicAdd(const_cast<int*>(counter), 1) == n - 1; }
FN void depart(const int* counter) { atomicExch(const_cast<int*>(counter), 0); }
// A kernel input the kernel writes: its own work buffer (kernels._work_buffer), never read by others.
FN float* writable(const float* p) { return const_cast<float*>(p); }
FN float load_partial(const float* p) { return __ldcg(p); }   // from L2: other blocks wrote it
FN void load_partial4(const float* p, float (&d)[4]) {         // four, one 16-byte load (p 16-byte aligned)
  const float4 v = __ldcg(reinterpret_cast<const float4*>(p));
  d[0] = v.x; d[1] = v.y; d[2] = v.z; d[3] = v.w;
}

FN uint h2_bits(__half2 h) { return *reinterpret_cast<uint*>(&h); }
FN __half2 bits_h2(uint u) { return *reinterpret_cast<__half2*>(&u); }
FN uint pack_h2(float a, float b) { return h2_bits(__floats2half2_rn(a, b)); }
// Eight consecutive outputs (p 16-byte aligned): one 16-byte store in fp16, two in fp32, so a
// warp writes whole 512-byte runs (prefill_span.body).
FN void store8(__half* p, const float (&x)[8]) {
  *reinterpret_cast<uint4*>(p) = make_uint4(pack_h2(x[0], x[1]), pack_h2(x[2], x[3]), pack_h2(x[4], x[5]),
                                            pack_h2(x[6], x[7]));
}
FN void store8(float* p, const float (&x)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(x[0], x[1], x[2], x[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(x[4], x[5], x[6], x[7]);
}

// Codes to halves without conversion instructions: OR-ing the 0x6400 exponent into a 16-bit lane
// holding an integer m < 1024 gives the half 1024+m. dq_lo: m = n, minus 1024 gives n; dq_hi: m =
// 16n (a nibble used where it sits, bits 4-7, saving the shift), times 1/16 minus 64 gives n. Both
// exact; the mask and the OR are one LOP3. Then s*n+b, one fma.
// (x & mask) | 0x64006400 as one LOP3: given two constants, the compiler emits an AND and an OR.
FN uint codes_or_exponent(uint x, uint mask) {
  uint y;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(y) : "r"(x), "r"(mask), "r"(0x64006400u));
  return y;
}
FN uint dq_lo(uint x, uint mask, uint s2, uint b2) {
  return h2_bits(__hfma2(__hsub2(bits_h2(codes_or_exponent(x, mask)), bits_h2(0x64006400u)), bits_h2(s2), bits_h2(b2)));
}
FN uint dq_hi(uint x, uint mask, uint s2, uint b2) {
  const __half2 n = __hfma2(bits_h2(codes_or_exponent(x, mask)), bits_h2(0x2C002C00u), bits_h2(0xD400D400u));  // 1/16, -64
  return h2_bits(__hfma2(n, bits_h2(s2), bits_h2(b2)));
}
// Codes j and j+EPW/2 of word w (MLX packs code i at bits BITS*i) dequantized into two halves.
template <int BITS> FN uint dq_word(uint w, int j, uint s2, uint b2) {
  if (BITS == 4) {
    const uint x = (j & 2) ? (w >> 8) : w;
    return (j & 1) ? dq_hi(x, 0x00F000F0u, s2, b2) : dq_lo(x, 0x000F000Fu, s2, b2);
  }
  return dq_lo(j ? (w >> 8) : w, 0x00FF00FFu, s2, b2);
}
// n consecutive words from p[i] (i a multiple of n): one 16- or 8-byte load where n allows.
template <int N> FN void load_words(uint (&dst)[N], const uint32_t* p, int i) {
  if (N % 4 == 0) {
#pragma unroll
    for (int k = 0; k < N; k += 4) {
      const uint4 v = reinterpret_cast<const uint4*>(p + i + k)[0];
      dst[k] = v.x; dst[k + 1] = v.y; dst[k + 2] = v.z; dst[k + 3] = v.w;
    }
  } else if (N % 2 == 0) {
#pragma unroll
    for (int k = 0; k < N; k += 2) {
      const uint2 v = reinterpret_cast<const uint2*>(p + i + k)[0];
      dst[k] = v.x; dst[k + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) dst[k] = p[i + k];
  }
}
template <int N> FN void zero_words(uint (&dst)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) dst[k] = 0u;
}
FN uint two_h(half_t a, half_t b) { return h2_bits(__halves2half2(a, b)); }
FN uint byte_pair(uint a, uint b, int byte) {   // byte `byte` of a in bits 0-7, of b in bits 16-23
  return __byte_perm(a, b, byte | (byte << 4) | ((4 + byte) << 8) | ((4 + byte) << 12));
}

// -- geometry --------------------------------------------------------------------------------
#define TM 16                       // tokens per fragment tile
#define KR 2                        // K rows a lane dequantizes per tile
#define VR 4                        // V rows a lane dequantizes per tile
#define SE 4                        // score elements per lane per tile
#define TOKEN_XOR_1 4               // lanes holding the same heads' scores differ in these bits
#define TOKEN_XOR_2 8
#define TOKEN_XOR_3 16
struct Lane { int g, t; };
FN Lane lane_of(uint lane) { return Lane{int(lane >> 2), int(lane & 3u)}; }
// A lane's rows of a tile are its first row plus a constant: k_row(l, j) = k_row(l, 0) + k_row_off(j).
FN int k_row_off(int j) { return 8 * j; }
FN int v_row_off(int j) { return (j & 1) + 8 * (j >> 1); }
FN int k_row(Lane l, int j) { return l.g + k_row_off(j); }
FN int k_part(Lane l) { return l.t; }
FN int v_row(Lane l, int j) { return 2 * l.t + v_row_off(j); }
FN int v_part(Lane l) { return l.g; }
FN int se_tok(Lane l, int e) { return l.g + 8 * (e >> 1); }
FN int lane_head(Lane l, int h) { return 2 * l.t + h; }
FN bool head_owner(Lane l) { return l.g == 0; }

// Not volatile (nor movmatrix below): they have no effect beyond their outputs, and a volatile asm
// keeps its place among the others, which stopped the compiler interleaving the tiles' independent
// MMAs (ncu, H200, 128K: "wait" stalls 1.24 -> 1.00 per issued instruction with the split below).
FN void mma16816(float* c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
FN uint transpose8x8(uint x) {
  uint y;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// -- fragments ---------------------------------------------------------------------------------
// Q^T as the B operand of the scores product: two registers per 16-dim k-step.
template <int D> struct QFrag { uint r[D / 16][2]; };
// One tile's scores (fp32) and its probabilities as the B operand of O^T += V^T P^T.
struct SFrag { float c[4]; };
struct PFrag { uint r[2]; };
template <int D> struct OAcc { float c[D / 16][4]; };

FN void s_zero(SFrag& s) { s.c[0] = s.c[1] = s.c[2] = s.c[3] = 0.0f; }
FN float s_get(const SFrag& s, int e) { return s.c[e]; }
template <int D> FN void o_zero(OAcc<D>& o) {
#pragma unroll
  for (int i = 0; i < D / 16; ++i) o.c[i][0] = o.c[i][1] = o.c[i][2] = o.c[i][3] = 0.0f;
}
template <int D> FN void o_scale(OAcc<D>& o, float c0, float c1) {
#pragma unroll
  for (int i = 0; i < D / 16; ++i) { o.c[i][0] *= c0; o.c[i][1] *= c1; o.c[i][2] *= c0; o.c[i][3] *= c1; }
}
// out[head * D + dim] for the heads and dims this lane holds.
template <int D> FN void o_store(const OAcc<D>& o, Lane l, float* out) {
#pragma unroll
  for (int i = 0; i < D / 16; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) out[lane_head(l, e & 1) * D + l.g * (D / 8) + 2 * i + (e >> 1)] = o.c[i][e];
}

// The K codes' pair p of a lane's quarter row: which two dims it holds (see k_pair below).
template <int KBITS> FN int k_pair_dim(int part, int p, int e, int D) {
  constexpr int PPW = 16 / KBITS, EPW = 32 / KBITS;   // pairs and codes per word
  return part * (D / 4) + (p / PPW) * EPW + (p % PPW) + e * (EPW / 2);
}
// Q^T fragments for the lane's head g (zeros for padded heads h >= G), in the K pair order, from
// the block's queries staged in shared memory (qh[h * D + dim], fp32).
template <int D, int KBITS> FN void q_frag_load(QFrag<D>& qf, Lane l, const float* qh, int G) {
#pragma unroll
  for (int s = 0; s < D / 16; ++s)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int p = 2 * s + h;
      float a = 0.0f, b = 0.0f;
      if (l.g < G) {
        a = qh[l.g * D + k_pair_dim<KBITS>(l.t, p, 0, D)];
        b = qh[l.g * D + k_pair_dim<KBITS>(l.t, p, 1, D)];
      }
      qf.r[s][h] = pack_h2(a, b);
    }
}

// S^T += K . Q^T for one tile: kw[j] = the lane's words of row k_row(j); ks, kb = its groups'
// scale and bias (KGL per row).
template <int D, int KBITS, int KGROUP, int KWL, int KGL>
FN void s_tile(SFrag& s, const QFrag<D>& qf, const uint (&kw)[KR][KWL], const half_t (&ks)[KR][KGL],
               const half_t (&kb)[KR][KGL]) {
  constexpr int EPW = 32 / KBITS, PPW = 16 / KBITS;
  uint s2[KR][KGL], b2[KR][KGL];          // each group's scale and bias as half pairs, once per tile
#pragma unroll
  for (int j = 0; j < KR; ++j)
#pragma unroll
    for (int i = 0; i < KGL; ++i) { s2[j][i] = two_h(ks[j][i], ks[j][i]); b2[j][i] = two_h(kb[j][i], kb[j][i]); }
  // Two accumulators, even and odd k-steps: each MMA waits on the one before it into the same
  // accumulator, so one chain of D/16 would serialise the tile on the matrix unit's latency.
  float s_odd[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int st = 0; st < D / 16; ++st) {
    uint a[4];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < KR; ++j) {
        const int p = 2 * st + h, gi = ((p / PPW) * EPW) / KGROUP;
        a[2 * h + j] = dq_word<KBITS>(kw[j][p / PPW], p % PPW, s2[j][gi], b2[j][gi]);
      }
    mma16816((st & 1) ? s_odd : s.c, a[0], a[1], a[2], a[3], qf.r[st][0], qf.r[st][1]);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) s.c[e] += s_odd[e];
}

// Probabilities (element order of SFrag) -> the B operand of O^T += V^T . P^T.
FN void p_frag(PFrag& pf, const float (&p)[4]) {
  pf.r[0] = transpose8x8(pack_h2(p[0], p[1]));
  pf.r[1] = transpose8x8(pack_h2(p[2], p[3]));
}

// O^T += V^T . P^T for one tile: vw[j] = the lane's words of row v_row(j) (tokens 2t, 2t+1, 2t+8,
// 2t+9), vs, vb = each row's scale and bias. A lane's dims are its eighth of the row, in order.
template <int D, int VBITS, int VWL>
FN void pv_tile(OAcc<D>& o, const PFrag& pf, const uint (&vw)[VR][VWL], const half_t (&vs)[VR],
                const half_t (&vb)[VR]) {
  constexpr int EPW = 32 / VBITS;
  const uint s01 = two_h(vs[0], vs[1]), s23 = two_h(vs[2], vs[3]);
  const uint b01 = two_h(vb[0], vb[1]), b23 = two_h(vb[2], vb[3]);
#pragma unroll
  for (int i = 0; i < D / 16; ++i) {
    uint a[4];
#pragma unroll
    for (int r = 0; r < 2; ++r) {          // A rows g (lane dim 2i) and g+8 (lane dim 2i+1)
      const int u = 2 * i + r, w = u / EPW, j = u % EPW;
      const int byte = VBITS == 4 ? j / 2 : j;
      const uint x01 = byte_pair(vw[0][w], vw[1][w], byte), x23 = byte_pair(vw[2][w], vw[3][w], byte);
      if (VBITS == 4 && (j & 1)) {
        a[r] = dq_hi(x01, 0x00F000F0u, s01, b01);
        a[2 + r] = dq_hi(x23, 0x00F000F0u, s23, b23);
      } else {
        a[r] = dq_lo(x01, VBITS == 4 ? 0x000F000Fu : 0x00FF00FFu, s01, b01);
        a[2 + r] = dq_lo(x23, VBITS == 4 ? 0x000F000Fu : 0x00FF00FFu, s23, b23);
      }
    }
    mma16816(o.c[i], a[0], a[1], a[2], a[3], pf.r[0], pf.r[1]);
  }
}
