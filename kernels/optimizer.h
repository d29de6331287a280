// Optimizer and gradient-statistics kernels over flat buffers. Every update reads the gradient in
// its storage type T (fp32, bf16, fp16), multiplies it by `grad_scale` first (grad_scale folds
// loss-scale unscaling and global-norm clipping), and updates fp32 master weights in place.
//
//   adamw_update: PyTorch's AdamW (decoupled weight decay)
//     g = grad * grad_scale; master *= (1 - lr*weight_decay); m = b1 m + (1-b1) g
//     v = b2 v + (1-b2) g^2;  master -= (lr / bias_corr1) * m / (sqrt(v) / sqrt(bias_corr2) + eps)
//   sgd_update: torch.optim.SGD (weight decay is L2, added to the gradient)
//     g = grad * grad_scale + weight_decay * master
//     momentum != 0: buf = first_step ? g : momentum buf + (1 - dampening) g
//                    g = nesterov ? g + momentum buf : buf
//     master -= lr * g
//   lion_update: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")
//     g = grad * grad_scale; c = b1 m + (1-b1) g; master = master (1 - lr wd) - lr sign(c)
//     m = b2 m + (1-b2) g            (sign(0) = 0)
//   adamw8bit_update: AdamW whose m and v are stored as 8-bit codes with block-wise dynamic
//     quantisation (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"): each
//     block's values are value = map[code] * absmax[block]; m uses the signed map, v the unsigned
//     one. Per block: dequantise, the AdamW rule above in fp32, requantise (new absmax = max |x| of
//     the block, each code the nearest map entry to x / absmax, ties to the lower code).
//     Blocks: the first is `first_block` elements long (1..kQuantBlock), the rest kQuantBlock, the
//     last possibly shorter; absmax arrays hold one entry per block.
//   sum_squares: sum of x^2 in fp64, fixed chunking (deterministic)
//   count_nonfinite: number of NaN/Inf elements
//
// Multi-threaded with OpenMP; the hot loops are vectorised for AVX2 or AVX-512, chosen at run time
// by what the CPU supports (kernels/cpu/simd.h, which also lets tests force a level), with a scalar
// tail. Results depend neither on the thread count nor on the SIMD level (same bits).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zt::kernels::cpu {

template <typename T>
void adamw_update(float* master, float* m, float* v, const T* grad, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2,
                  float grad_scale);

// momentum_buf may be null when momentum == 0.
template <typename T>
void sgd_update(float* master, float* momentum_buf, const T* grad, size_t n, float lr,
                float momentum, float dampening, float weight_decay, bool nesterov, bool first_step,
                float grad_scale);

template <typename T>
void lion_update(float* master, float* m, const T* grad, size_t n, float lr, float beta1,
                 float beta2, float weight_decay, float grad_scale);

// ---- 8-bit block-wise quantisation ----
constexpr size_t kQuantBlock = 256;

// A 256-entry dynamic (non-linear) code map, sorted ascending, with a fast nearest-code lookup.
// signed:   0, +-1 and values spread over 7 decades below 1 (more codes near the top of each
//           decade's range), symmetric;  unsigned: 0, 1 and 7 decades of positive values.
// Both hold the exact values 0 and 1 (signed also -1), so quantising a dequantised block gives
// back the same codes and absmax (Note [8-bit checkpoints] in runtime/optim).
struct QuantMap {
  float code[256];
  // Implementation data for quantise (lookup tables, midpoints); filled by the map's builder.
  float mid[257];
  uint8_t lut[65536];
};
const QuantMap& signed_dynamic_map();
const QuantMap& unsigned_dynamic_map();

// The code of the map entry nearest to x (x within [-1, 1] for signed, [0, 1] for unsigned; values
// outside are clamped), ties to the lower code; NaN gives the code of 0. (The maps' construction
// and the proof of exactness: Notes [dynamic code maps] and [nearest code] in cpu/quantize.cpp.)
uint8_t quantize_value(const QuantMap& map, float x);

// Block-wise: codes/absmax from x (n values); and back. absmax is max |x| of the block, exact; an
// all-zero block gets absmax 0 and the code of 0; a block holding NaN or Inf gets absmax NaN or Inf
// and dequantises to NaN throughout. first_block outside 1..kQuantBlock is clamped into it.
void quantize_blocks(const QuantMap& map, const float* x, size_t n, size_t first_block,
                     uint8_t* codes, float* absmax);
void dequantize_blocks(const QuantMap& map, const uint8_t* codes, const float* absmax, size_t n,
                       size_t first_block, float* out);
// Number of blocks for n elements whose first block is first_block long.
size_t quant_block_count(size_t n, size_t first_block);

template <typename T>
void adamw8bit_update(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                      float* v_absmax, const T* grad, size_t n, size_t first_block, float lr,
                      float beta1, float beta2, float eps, float weight_decay, float bias_corr1,
                      float bias_corr2, float grad_scale);

template <typename T>
double sum_squares(const T* x, size_t n);

template <typename T>
size_t count_nonfinite(const T* x, size_t n);

}  // namespace zt::kernels::cpu
