// What both emulated backends share (tests/kernel_emu): the threads (every thread of a block is a
// std::thread, a warp's or SIMD group's collectives meet at its barrier and trade values through
// per-lane slots, the block's barrier is the threadgroup's, blocks run one after another), the
// shuffle, and the fp16 and bfloat16 rounding the two vocabularies spell differently.
#pragma once
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

inline thread_local unsigned emu_tid, emu_bx, emu_by;
struct EmuBlock {
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> slots;           // per thread of the block: up to 10 words of a collective
  explicit EmuBlock(int nth) : block(nth), slots(size_t(nth) * 10) {
    for (int w = 0; w < (nth + 31) / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
};
inline EmuBlock* emu_block = nullptr;
inline void emu_block_sync() { emu_block->block.arrive_and_wait(); }
inline uint64_t* emu_slot(unsigned t) { return &emu_block->slots[size_t(t) * 10]; }
inline void emu_warp_sync() { emu_block->warps[emu_tid / 32]->arrive_and_wait(); }
// Lane l's first slot word after every lane of the warp has put `mine` there.
inline uint64_t emu_exchange(uint64_t mine, unsigned l) {
  const unsigned base = emu_tid & ~31u;
  emu_slot(emu_tid)[0] = mine;
  emu_warp_sync();
  const uint64_t got = emu_slot(base + l)[0];
  emu_warp_sync();
  return got;
}

// A warp's shuffle by XOR of the lane index (__shfl_xor_sync, simd_shuffle_xor).
inline float emu_shfl_xor(float v, unsigned mask) {
  uint32_t bits; std::memcpy(&bits, &v, 4);
  const uint32_t got = uint32_t(emu_exchange(bits, (emu_tid & 31u) ^ mask));
  float r; std::memcpy(&r, &got, 4);
  return r;
}

// A fused fp16 multiply-add: the exact product plus the addend, rounded once.
inline _Float16 emu_fma_f16(_Float16 a, _Float16 b, _Float16 c) {
  return static_cast<_Float16>(double(a) * double(b) + double(c));
}

// bfloat16 as its bits (__nv_bfloat16, bfloat16_t), from float by round to nearest even (finite values).
struct EmuBf16 {
  uint16_t bits;
  EmuBf16() = default;
  EmuBf16(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    bits = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
  operator float() const { uint32_t u = uint32_t(bits) << 16; float f; std::memcpy(&f, &u, 4); return f; }
};

// Runs kernel() over a grid of (gx, gy) blocks of nth threads (a multiple of 32): nth threads, each
// taking its place in every block in turn, all of a block's done before the next starts (its
// threadgroup arrays are static: one block's at a time).
template <class F> void emu_launch(int gx, int gy, int nth, F kernel) {
  EmuBlock blk(nth);
  emu_block = &blk;
  std::vector<std::thread> threads;
  for (int t = 0; t < nth; ++t)
    threads.emplace_back([=, &blk] {
      emu_tid = unsigned(t);
      for (int by = 0; by < gy; ++by)
        for (int bx = 0; bx < gx; ++bx) {
          emu_bx = unsigned(bx);
          emu_by = unsigned(by);
          kernel();
          blk.block.arrive_and_wait();
        }
    });
  for (auto& th : threads) th.join();
  emu_block = nullptr;
}
