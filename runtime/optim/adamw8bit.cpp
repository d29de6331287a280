// 8-bit AdamW (AdamW8bit; Adam8bit decays decoupled too): exp_avg and exp_avg_sq stored as 8-bit
// codes (store arrays, one byte per element) with one fp32 absmax per block (side state). Blocks
// are the cells of a 256-element grid over the owned range cut at segment edges, so a block never
// straddles a parameter or a shard boundary and the store's chunks (multiples of 4096 elements)
// never cut one. Parameters under kMin8bitNumel elements keep fp32 moments (side state).
// Checkpoints: Note [8-bit checkpoints]. The codes, absmax and small moments live in the memory of
// the optimizer's backend; checkpoint reads and writes reach them through backend copies and, when
// the host cannot dereference that memory, (de)quantise in a scratch buffer there.
#include <algorithm>
#include <vector>

#include "kernels/optimizer.h"
#include "runtime/optim/optimizer_impls.h"

namespace zt::optim_impl {
namespace {

namespace kc = kernels::cpu;
constexpr int64_t kBlock = static_cast<int64_t>(kc::kQuantBlock);
constexpr int64_t kMin8bitNumel = 4096;

// Length of the block holding owned element `x` from x on, within `count` elements.
size_t first_block_at(int64_t x, int64_t count) {
  return static_cast<size_t>(std::min(count, kBlock - x % kBlock));
}

class AdamW8bit final : public Optimizer {
 public:
  using Optimizer::Optimizer;

  Status allocate() {
    int64_t blocks = 0, small = 0;
    for (const OptimSegment& s : segments_) {
      Side side;
      if (s.spec->numel() < kMin8bitNumel) {
        side.small = small;
        small += s.count;
      } else {
        side.block = blocks;
        blocks += (s.local + s.count - 1) / kBlock - s.local / kBlock + 1;
      }
      sides_.push_back(side);
    }
    ZT_ASSIGN_OR_RETURN(absmax_[0], side_floats(blocks));
    ZT_ASSIGN_OR_RETURN(absmax_[1], side_floats(blocks));
    ZT_ASSIGN_OR_RETURN(small_[0], side_floats(small));
    ZT_ASSIGN_OR_RETURN(small_[1], side_floats(small));
    return Status::ok();
  }

  std::vector<StoreArray> store_arrays() const override {
    return {{"exp_avg", 1}, {"exp_avg_sq", 1}};
  }

  // A zero byte is the signed map's -1 (x absmax 0 = -0.0): start exp_avg at the code of 0 so a
  // checkpoint of the initial state reads +0 and requantises to the same codes.
  // The chunks may be device memory: filled by a copy from a host pattern.
  Status init_state(StateStore& store) override {
    const uint8_t zero = kc::quantize_value(kc::signed_dynamic_map(), 0.0f);
    const std::vector<uint8_t> pattern(static_cast<size_t>(store.chunk()), zero);
    return store.stream(0u, 1u << 1, [&](int64_t, int64_t count, void* const* p) {
      backend_.copy(p[1], pattern.data(), static_cast<size_t>(count));
      return Status::ok();
    });
  }

  void update(const OptimSegment& seg, int64_t begin, int64_t count, void* const* arrays,
              const void* grad, DType grad_dtype, const OptimizerStepArgs& a) override {
    const Side& side = side_of(seg);
    const float wd = seg.spec->weight_decay ? cfg_.weight_decay : 0.0f;
    const float bc1 = bias_correction(cfg_.beta1, a.t), bc2 = bias_correction(cfg_.beta2, a.t);
    float* master = static_cast<float*>(arrays[0]);
    const AdamWArgs args{a.lr, cfg_.beta1, cfg_.beta2, cfg_.eps, wd, bc1, bc2, a.grad_scale};
    OptimizerOps& ops = backend_.optimizer_ops();
    if (side.small >= 0) {
      const int64_t at = side.small + (begin - seg.local);
      ops.adamw(master, small_[0] + at, small_[1] + at, grad, grad_dtype,
                static_cast<size_t>(count), args);
      return;
    }
    const int64_t blk = block_index(seg, side, begin);
    ops.adamw8bit(master, static_cast<uint8_t*>(arrays[1]), absmax_[0] + blk,
                  static_cast<uint8_t*>(arrays[2]), absmax_[1] + blk, grad, grad_dtype,
                  static_cast<size_t>(count), first_block_at(begin, count), args);
  }

  Status read_state(int k, int s, int64_t begin, int64_t count, StateStore& store,
                    float* out) override {
    const OptimSegment& seg = segments_[static_cast<size_t>(s)];
    const Side& side = sides_[static_cast<size_t>(s)];
    if (side.small >= 0) {
      backend_.copy(out, small_[k] + side.small + (begin - seg.local),
                    static_cast<size_t>(count) * sizeof(float));
      return Status::ok();
    }
    const size_t n = static_cast<size_t>(count);
    std::vector<uint8_t> codes(n);
    ZT_RETURN_IF_ERROR(store.read(k + 1, begin, count, codes.data()));
    const float* absmax = absmax_[k] + block_index(seg, side, begin);
    const size_t first = first_block_at(begin, count);
    OptimizerOps& ops = backend_.optimizer_ops();
    if (backend_.host_accessible()) {
      ops.dequantize_blocks(k == 0, codes.data(), absmax, n, first, out);
      return Status::ok();
    }
    // The absmax is in device memory: dequantise there, from and into a scratch buffer.
    ZT_ASSIGN_OR_RETURN(Buffer scratch, scratch_bytes(n * (sizeof(float) + 1)));
    float* x = static_cast<float*>(scratch.data());
    uint8_t* c = reinterpret_cast<uint8_t*>(x + n);
    backend_.copy(c, codes.data(), n);
    ops.dequantize_blocks(k == 0, c, absmax, n, first, x);
    backend_.copy(out, x, n * sizeof(float));
    return Status::ok();
  }

  Status write_state(int k, int s, const float* in, StateStore& store) override {
    const OptimSegment& seg = segments_[static_cast<size_t>(s)];
    const Side& side = sides_[static_cast<size_t>(s)];
    if (side.small >= 0) {
      backend_.copy(small_[k] + side.small, in, static_cast<size_t>(seg.count) * sizeof(float));
      return Status::ok();
    }
    const size_t n = static_cast<size_t>(seg.count);
    const size_t first = first_block_at(seg.local, seg.count);
    std::vector<uint8_t> codes(n);
    OptimizerOps& ops = backend_.optimizer_ops();
    if (backend_.host_accessible()) {
      ops.quantize_blocks(k == 0, in, n, first, codes.data(), absmax_[k] + side.block);
    } else {
      // The absmax is in device memory: quantise there, from and into a scratch buffer.
      ZT_ASSIGN_OR_RETURN(Buffer scratch, scratch_bytes(n * (sizeof(float) + 1)));
      float* x = static_cast<float*>(scratch.data());
      uint8_t* c = reinterpret_cast<uint8_t*>(x + n);
      backend_.copy(x, in, n * sizeof(float));
      ops.quantize_blocks(k == 0, x, n, first, c, absmax_[k] + side.block);
      backend_.copy(codes.data(), c, n);
    }
    return store.write(k + 1, seg.local, seg.count, codes.data());
  }

 private:
  struct Side {
    int64_t block = -1;  // first absmax entry (8-bit segments)
    int64_t small = -1;  // first fp32 moment (small parameters)
  };
  const Side& side_of(const OptimSegment& seg) const {
    return sides_[static_cast<size_t>(&seg - segments_.data())];
  }
  static int64_t block_index(const OptimSegment& seg, const Side& side, int64_t x) {
    return side.block + x / kBlock - seg.local / kBlock;
  }

  std::vector<Side> sides_;
  float* absmax_[2] = {nullptr, nullptr};
  float* small_[2] = {nullptr, nullptr};
};

}  // namespace

Result<std::unique_ptr<Optimizer>> make_adamw8bit(const OptimizerConfig& cfg,
                                                  std::vector<OptimSegment> segs, bool partitioned,
                                                  Backend& backend) {
  std::unique_ptr<AdamW8bit> o(new AdamW8bit(cfg, std::move(segs), partitioned, backend));
  ZT_RETURN_IF_ERROR(o->allocate());
  return std::unique_ptr<Optimizer>(std::move(o));
}

}  // namespace zt::optim_impl
