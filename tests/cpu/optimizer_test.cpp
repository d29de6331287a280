// Optimizer (runtime/optim) driven the way the ZeRO engine drives it — prepare(), then update() on
// every (store chunk x segment) piece — over a small hand-built ParamLayout (odd 2-D shapes, one
// 3-D, 1-D biases, padding between parameters, parameters above and below the 8-bit threshold),
// against an independent fp64 reference of each published rule written here in plain loops:
//   * every optimizer and variant matches its reference for 7 steps with random gradients, a
//     varying learning rate and grad_scale != 1, fp32 gradients and a few bf16/fp16 cases; padding
//     between parameters is never touched; the checkpoint states match the reference's moments;
//   * the same with parameters cut into two segments at non-256-aligned offsets (how a ZeRO shard
//     piece looks), Adafactor included (all pieces local, partitioned = false); the elementwise
//     optimizers give the same bits cut or whole;
//   * AdamW8bit in lockstep: from the optimizer's own dequantised state, one step of the fp64 rule
//     with fp64 block-wise quantisation gives the same codes (rare one-code differences allowed)
//     and the same master weights;
//   * a memory store (one chunk or 4096-element chunks), an nvme store (4096-element chunks, so
//     chunks cut segments) and partitioned = true over a local communicator give bit-identical
//     master weights and checkpoint states;
//   * checkpoint round trip: read_state / read_whole of every state written into a fresh optimizer
//     and store reads back the same bits and continues bit-identically (8-bit idempotence at the
//     optimizer level); reading a ranged state in pieces gives the bits of the whole read.
#include "runtime/optim/optimizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/half.h"
#include "kernels/optimizer.h"
#include "runtime/backend/backend.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/model/gpt2_params.h"
#include "runtime/offload/state_store.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

namespace kc = kernels::cpu;
using zt::testing::TempDir;

constexpr int kSteps = 7;
constexpr int64_t kQuant = 256;       // 8-bit block (kernels::cpu::kQuantBlock)
constexpr int64_t kMin8bit = 4096;    // parameters below keep fp32 moments under AdamW8bit
constexpr float kPadding = 12345.0f;  // master value of every padding element; must survive

void must(const Status& s) {
  if (!s.is_ok()) throw std::runtime_error(s.to_string());
}
template <typename T>
T must(Result<T> r) {
  if (!r.is_ok()) throw std::runtime_error(r.status().to_string());
  return std::move(r).value();
}

// ---- the fake model ----

// Offsets are multiples of 16 (as make_param_layout makes them) but mostly not of 256, with
// padding after every parameter; "b.w" (5120) and "d.w" (5063) and the 1-D "h.b" (4500) are
// 8-bit under AdamW8bit, "d.w" and "h.b" cross 4096-element chunk edges, "a.b" starts at zero
// (RMS 0: Adafactor's eps2 floor), "f.w" is 3-D (factored as (18, 11)).
ParamLayout fake_layout() {
  struct P {
    const char* name;
    std::vector<int64_t> shape;
    int64_t offset;
  };
  const P ps[] = {{"a.w", {7, 33}, 0},   {"a.b", {33}, 240},         {"b.w", {64, 80}, 288},
                  {"b.b", {80}, 5424},   {"c.w", {3, 5}, 5520},      {"d.w", {61, 83}, 5552},
                  {"e.b", {1}, 10624},   {"f.w", {2, 9, 11}, 10640}, {"g.b", {700}, 10848},
                  {"h.b", {4500}, 11552}};
  ParamLayout l;
  for (const P& p : ps) {
    ParamSpec s;
    s.name = p.name;
    s.shape = p.shape;
    s.weight_decay = p.shape.size() >= 2;
    l.entries.push_back({s, p.offset});
    l.num_parameters += s.numel();
  }
  l.total = 16064;  // "h.b" ends at 16052
  return l;
}

// Where parameters are cut in the split layout (element index in the parameter): mid-row of a 2-D
// parameter, inside 8-bit parameters at owned offsets 1288 and 8152 and 13553 (none a multiple
// of 256), inside a 1-D one. The pieces stay contiguous in the owned range.
int64_t split_point(int p) {
  switch (p) {
    case 0:
      return 100;
    case 2:
      return 1000;
    case 5:
      return 2600;
    case 8:
      return 333;
    case 9:
      return 2001;
    default:
      return 0;
  }
}

std::vector<OptimSegment> make_segments(const ParamLayout& l, bool split) {
  std::vector<OptimSegment> segs;
  for (size_t p = 0; p < l.entries.size(); ++p) {
    const ParamEntry& e = l.entries[p];
    const int64_t numel = e.spec.numel();
    const int64_t cut = split ? split_point(static_cast<int>(p)) : 0;
    if (cut > 0) {
      segs.push_back({static_cast<int>(p), &e.spec, 0, e.offset, cut});
      segs.push_back({static_cast<int>(p), &e.spec, cut, e.offset + cut, numel - cut});
    } else {
      segs.push_back({static_cast<int>(p), &e.spec, 0, e.offset, numel});
    }
  }
  return segs;
}

// ---- inputs ----

struct Inputs {
  std::vector<float> master;                   // owned range, kPadding in the padding
  std::vector<std::vector<float>> grads;       // per step, owned range (padding holds junk too)
  std::vector<std::vector<uint16_t>> grads16;  // the same as bf16/fp16 bits
  std::vector<float> lr, grad_scale;           // per step
};

// Gradients are "loss-scaled" by 64 and spread over 2.5 decades; grad_scale unscales them and
// varies per step (clipping), so a rule that ignores it, or applies it in one place only, fails.
Inputs make_inputs(const ParamLayout& l, float base_lr, DType grad_dtype, uint64_t seed) {
  Inputs in;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> decade(-2.0f, 0.5f);
  in.master.assign(static_cast<size_t>(l.total), kPadding);
  for (const ParamEntry& e : l.entries) {
    const bool zero = e.spec.name == "a.b";
    const float sd = e.spec.shape.size() >= 2 ? 0.5f : 0.1f;
    for (int64_t i = 0; i < e.spec.numel(); ++i)
      in.master[static_cast<size_t>(e.offset + i)] = zero ? 0.0f : sd * normal(rng) + 0.02f;
  }
  for (int t = 1; t <= kSteps; ++t) {
    std::vector<float> g(static_cast<size_t>(l.total));
    for (float& x : g) x = 64.0f * normal(rng) * std::pow(10.0f, decade(rng));
    std::vector<uint16_t> g16(g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      if (grad_dtype == DType::kBF16) {
        g16[i] = to_bf16(g[i]).bits;
        g[i] = to_f32(bf16{g16[i]});
      } else if (grad_dtype == DType::kF16) {
        g16[i] = to_fp16(g[i]).bits;
        g[i] = to_f32(fp16{g16[i]});
      }
    }
    in.grads.push_back(std::move(g));
    in.grads16.push_back(std::move(g16));
    in.lr.push_back(base_lr * (0.6f + 0.1f * static_cast<float>(t)));
    in.grad_scale.push_back((0.8f + 0.05f * static_cast<float>(t)) / 64.0f);
  }
  return in;
}

// ---- the code under test, driven as ZeroEngine::optimizer_step drives it ----

struct StoreSpec {
  bool nvme = false;
  int64_t chunk = 4096;
  bool partitioned = false;
};

class Harness {
 public:
  Harness(const OptimizerConfig& cfg, const ParamLayout& layout, std::vector<OptimSegment> segs,
          const StoreSpec& ss, const std::string& nvme_dir)
      : backend_(make_cpu_backend()), comm_(make_local_communicator()) {
    opt_ = must(Optimizer::create(cfg, layout, std::move(segs), ss.partitioned, *backend_));
    std::vector<StoreArray> arrays = {{"master", 4}};
    for (const StoreArray& a : opt_->store_arrays()) arrays.push_back(a);
    if (ss.nvme) {
      store_ = must(StateStore::on_nvme(nvme_dir, 0, std::move(arrays), layout.total, ss.chunk, 3,
                                        tracker_, MemCategory::kOptimizerStates));
    } else {
      store_ = must(StateStore::in_memory(*backend_, std::move(arrays), layout.total, ss.chunk,
                                          MemCategory::kOptimizerStates));
    }
  }

  Optimizer& opt() { return *opt_; }
  StateStore& store() { return *store_; }

  void set_master(const std::vector<float>& x) {
    must(store_->write(0, 0, static_cast<int64_t>(x.size()), x.data()));
  }
  std::vector<float> master() {
    std::vector<float> x(static_cast<size_t>(store_->size()));
    must(store_->read(0, 0, store_->size(), x.data()));
    return x;
  }

  void step(const Inputs& in, int t, DType grad_dtype) {
    const size_t i = static_cast<size_t>(t - 1);
    OptimizerStepArgs a;
    a.lr = in.lr[i];
    a.t = t;
    a.grad_scale = in.grad_scale[i];
    const void* g = grad_dtype == DType::kF32 ? static_cast<const void*>(in.grads[i].data())
                                              : static_cast<const void*>(in.grads16[i].data());
    step(a, g, grad_dtype);
  }

  void step(const OptimizerStepArgs& args, const void* grad_data, DType grad_dtype) {
    const Tensor grads(const_cast<void*>(grad_data), grad_dtype, {store_->size()});
    must(opt_->prepare(args, grads, *store_, *comm_));
    const std::vector<StoreArray>& arrays = store_->arrays();
    const uint32_t all = (1u << arrays.size()) - 1u;
    const std::vector<OptimSegment>& segs = opt_->segments();
    const size_t gsize = dtype_size(grad_dtype);
    std::vector<void*> ptrs(arrays.size());
    size_t first = 0;
    must(store_->stream(all, all, [&](int64_t begin, int64_t count, void* const* chunk) {
      const int64_t end = begin + count;
      while (first < segs.size() && segs[first].local + segs[first].count <= begin) ++first;
      for (size_t i = first; i < segs.size() && segs[i].local < end; ++i) {
        const OptimSegment& s = segs[i];
        const int64_t lo = std::max(begin, s.local), hi = std::min(end, s.local + s.count);
        for (size_t k = 0; k < arrays.size(); ++k)
          ptrs[k] =
              static_cast<char*>(chunk[k]) + static_cast<size_t>(lo - begin) * arrays[k].elem_bytes;
        opt_->update(s, lo, hi - lo, ptrs.data(),
                     static_cast<const char*>(grad_data) + static_cast<size_t>(lo) * gsize,
                     grad_dtype, args);
      }
      return Status::ok();
    }));
  }

  // Ranged state k of segment s (whole segment), or whole state k of parameter p.
  std::vector<float> ranged(int k, int s) {
    const OptimSegment& seg = opt_->segments()[static_cast<size_t>(s)];
    std::vector<float> out(static_cast<size_t>(seg.count));
    must(opt_->read_state(k, s, seg.local, seg.count, *store_, out.data()));
    return out;
  }
  std::vector<float> whole(int k, int p, const ParamSpec& spec) {
    std::vector<float> out(
        static_cast<size_t>(state_numel(opt_->checkpoint_states()[static_cast<size_t>(k)], spec)));
    opt_->read_whole(k, p, out.data());
    return out;
  }

  // Every checkpoint state, in a fixed order (ranged per segment, whole per parameter once).
  std::vector<std::vector<float>> all_states() {
    std::vector<std::vector<float>> out;
    const std::vector<CheckpointStateInfo> states = opt_->checkpoint_states();
    const std::vector<OptimSegment>& segs = opt_->segments();
    for (size_t k = 0; k < states.size(); ++k) {
      int last_param = -1;
      for (size_t s = 0; s < segs.size(); ++s) {
        if (!state_applies(states[k], *segs[s].spec)) continue;
        if (!states[k].whole) {
          out.push_back(ranged(static_cast<int>(k), static_cast<int>(s)));
        } else if (segs[s].param != last_param) {
          out.push_back(whole(static_cast<int>(k), segs[s].param, *segs[s].spec));
        }
        last_param = segs[s].param;
      }
    }
    return out;
  }

 private:
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> comm_;
  MemoryTracker tracker_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<StateStore> store_;
};

// ---- the fp64 reference ----

// The nearest entry of a code map to y (ties to the lower code), by brute force in fp64; the map
// values are the only thing taken from the code under test (Note [dynamic code maps]).
uint8_t nearest_code(const kc::QuantMap& map, double y) {
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c < 256; ++c) {
    const double d = std::fabs(static_cast<double>(map.code[c]) - y);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return static_cast<uint8_t>(best);
}

uint8_t zero_code(const kc::QuantMap& map) { return nearest_code(map, 0.0); }

// The published rules in fp64 over the owned range (the same flat layout as the store):
//   AdamW/Adam:  PyTorch's AdamW (decoupled decay p *= 1 - lr wd; bias-corrected moments;
//                p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps))
//   8-bit:       the same, with m and v held as block-wise codes: per block (cut at multiples of
//                256 of the owned offset and at segment edges) dequantise, step, then absmax =
//                max |x| and each code the nearest map entry to x/absmax; fp32-like (unquantised)
//                moments for parameters under 4096 elements
//   SGD:         torch.optim.SGD (L2 decay into the gradient, first step buf = g, dampening,
//                Nesterov)
//   Lion:        c = b1 m + (1-b1) g; p = p (1 - lr wd) - lr sign(c); m = b2 m + (1-b2) g
//   Adafactor:   Hugging Face transformers' rule (see step_adafactor)
// Weight decay only where ParamSpec::weight_decay. grad_scale multiplies every gradient first.
class Reference {
 public:
  Reference(const OptimizerConfig& cfg, const ParamLayout& layout,
            const std::vector<OptimSegment>& segs, const std::vector<float>& master)
      : cfg_(cfg), layout_(layout), segs_(segs) {
    x.assign(master.begin(), master.end());
    m.assign(x.size(), 0.0);
    v.assign(x.size(), 0.0);
    mcode.assign(x.size(), zero_code(kc::signed_dynamic_map()));
    vcode.assign(x.size(), zero_code(kc::unsigned_dynamic_map()));
    sign_margin.assign(x.size(), std::numeric_limits<double>::infinity());
    const size_t np = layout.entries.size();
    local_of.resize(np);
    row.resize(np);
    col.resize(np);
    for (size_t p = 0; p < np; ++p) {
      const ParamSpec& spec = layout.entries[p].spec;
      local_of[p].assign(static_cast<size_t>(spec.numel()), -1);
      if (spec.shape.size() >= 2) {
        const int64_t cols = spec.shape.back();
        row[p].assign(static_cast<size_t>(spec.numel() / cols), 0.0);
        col[p].assign(static_cast<size_t>(cols), 0.0);
      }
    }
    for (const OptimSegment& s : segs)
      for (int64_t i = 0; i < s.count; ++i)
        local_of[static_cast<size_t>(s.param)][static_cast<size_t>(s.param_begin + i)] =
            s.local + i;
  }

  void step(const Inputs& in, int t) {
    const size_t i = static_cast<size_t>(t - 1);
    step(in.lr[i], t, in.grad_scale[i], in.grads[i]);
  }

  void step(double lr, int64_t t, double gs, const std::vector<float>& grad) {
    if (cfg_.type == "Adafactor") {
      for (size_t p = 0; p < layout_.entries.size(); ++p) step_adafactor(p, lr, t, gs, grad);
      return;
    }
    for (const OptimSegment& s : segs_) {
      const double wd = s.spec->weight_decay ? cfg_.weight_decay : 0.0;
      if (cfg_.is_8bit() && s.spec->numel() >= kMin8bit) {
        for (int64_t b0 = s.local; b0 < s.local + s.count;) {
          const int64_t b1 = std::min(s.local + s.count, (b0 / kQuant + 1) * kQuant);
          step_adam8_block(b0, b1, lr, t, gs, wd, grad);
          b0 = b1;
        }
        continue;
      }
      for (int64_t j = s.local; j < s.local + s.count; ++j) {
        const size_t e = static_cast<size_t>(j);
        const double g = static_cast<double>(grad[e]) * gs;
        if (cfg_.is_adam())
          adam(e, g, lr, t, wd);
        else if (cfg_.type == "SGD")
          sgd(e, g, lr, t, wd);
        else
          lion(e, g, lr, wd);
      }
    }
  }

  std::vector<double> x, m, v;        // master; moments (dequantised for 8-bit), SGD's buffer in m
  std::vector<uint8_t> mcode, vcode;  // 8-bit codes of the quantised elements
  std::vector<std::vector<int64_t>> local_of;  // [param][element] -> owned offset
  std::vector<std::vector<double>> row, col;   // Adafactor's factored moments
  std::vector<double> sign_margin;  // Lion: min over steps of |c| / (|b1 m| + |(1-b1) g|)

 private:
  void adam(size_t e, double g, double lr, int64_t t, double wd) {
    const double b1 = cfg_.beta1, b2 = cfg_.beta2;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
    x[e] *= 1.0 - lr * wd;
    m[e] = b1 * m[e] + (1.0 - b1) * g;
    v[e] = b2 * v[e] + (1.0 - b2) * g * g;
    x[e] -= lr / bc1 * m[e] / (std::sqrt(v[e]) / std::sqrt(bc2) + cfg_.eps);
  }

  void step_adam8_block(int64_t b0, int64_t b1, double lr, int64_t t, double gs, double wd,
                        const std::vector<float>& grad) {
    double am = 0.0, av = 0.0;
    for (int64_t j = b0; j < b1; ++j) {
      const size_t e = static_cast<size_t>(j);
      adam(e, static_cast<double>(grad[e]) * gs, lr, t, wd);
      am = std::max(am, std::fabs(m[e]));
      av = std::max(av, std::fabs(v[e]));
    }
    const kc::QuantMap& sm = kc::signed_dynamic_map();
    const kc::QuantMap& um = kc::unsigned_dynamic_map();
    for (int64_t j = b0; j < b1; ++j) {
      const size_t e = static_cast<size_t>(j);
      mcode[e] = am > 0.0 ? nearest_code(sm, m[e] / am) : zero_code(sm);
      vcode[e] = av > 0.0 ? nearest_code(um, v[e] / av) : zero_code(um);
      m[e] = static_cast<double>(sm.code[mcode[e]]) * am;
      v[e] = static_cast<double>(um.code[vcode[e]]) * av;
    }
  }

  void sgd(size_t e, double g, double lr, int64_t t, double wd) {
    g += wd * x[e];
    if (cfg_.momentum != 0.0f) {
      const double mu = cfg_.momentum;
      m[e] = t == 1 ? g : mu * m[e] + (1.0 - cfg_.dampening) * g;
      g = cfg_.nesterov ? g + mu * m[e] : m[e];
    }
    x[e] -= lr * g;
  }

  void lion(size_t e, double g, double lr, double wd) {
    const double b1 = cfg_.beta1, b2 = cfg_.beta2;
    const double c = b1 * m[e] + (1.0 - b1) * g;
    const double mag = std::fabs(b1 * m[e]) + std::fabs((1.0 - b1) * g);
    if (mag > 0.0) sign_margin[e] = std::min(sign_margin[e], std::fabs(c) / mag);
    x[e] = x[e] * (1.0 - lr * wd) - lr * static_cast<double>((c > 0.0) - (c < 0.0));
    m[e] = b2 * m[e] + (1.0 - b2) * g;
  }

  // Hugging Face transformers' Adafactor.step for one parameter, viewed as (rows, last dim):
  //   lr_p = rel * (scale_parameter ? max(eps2, RMS(p)) : 1), rel = relative_step ?
  //          min(warmup_init ? 1e-6 t : 1e-2, 1/sqrt(t)) : lr;  beta2t = 1 - t^decay_rate
  //   factored: row = beta2t row + (1-beta2t) mean_c(g^2+eps1), col likewise over rows,
  //             u = g / sqrt(row[r] / mean(row)) / sqrt(col[c])
  //   else:     v = beta2t v + (1-beta2t) (g^2+eps1), u = g / sqrt(v)
  //   u *= lr_p / max(1, RMS(u) / clip_threshold);  first moment: m = b1 m + (1-b1) u, u = m
  //   p += p * (-wd * lr_p);  p -= u
  void step_adafactor(size_t p, double lr, int64_t t, double gs, const std::vector<float>& grad) {
    const ParamSpec& spec = layout_.entries[p].spec;
    const std::vector<int64_t>& loc = local_of[p];
    if (loc.empty() || loc[0] < 0) return;  // not held
    const int64_t numel = spec.numel();
    const bool factored = spec.shape.size() >= 2;
    const int64_t cols = factored ? spec.shape.back() : numel, rows = numel / cols;
    const double td = static_cast<double>(t);
    const double rel = cfg_.relative_step
                           ? std::min(cfg_.warmup_init ? 1e-6 * td : 1e-2, 1.0 / std::sqrt(td))
                           : lr;
    const double beta2t = 1.0 - std::pow(td, static_cast<double>(cfg_.decay_rate));
    const double eps1 = cfg_.eps;
    double sq = 0.0;
    for (int64_t e = 0; e < numel; ++e) sq += x[idx(loc, e)] * x[idx(loc, e)];
    const double rms = std::sqrt(sq / static_cast<double>(numel));
    const double lr_p = rel * (cfg_.scale_parameter ? std::max<double>(cfg_.eps2, rms) : 1.0);
    std::vector<double> g(static_cast<size_t>(numel)), u(static_cast<size_t>(numel));
    for (int64_t e = 0; e < numel; ++e)
      g[static_cast<size_t>(e)] = static_cast<double>(grad[idx(loc, e)]) * gs;
    if (factored) {
      std::vector<double> rs(static_cast<size_t>(rows), 0.0), cs(static_cast<size_t>(cols), 0.0);
      for (int64_t e = 0; e < numel; ++e) {
        const double s = g[static_cast<size_t>(e)] * g[static_cast<size_t>(e)] + eps1;
        rs[static_cast<size_t>(e / cols)] += s;
        cs[static_cast<size_t>(e % cols)] += s;
      }
      double row_mean = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        double& rr = row[p][static_cast<size_t>(r)];
        rr = beta2t * rr + (1.0 - beta2t) * rs[static_cast<size_t>(r)] / static_cast<double>(cols);
        row_mean += rr / static_cast<double>(rows);
      }
      for (int64_t c = 0; c < cols; ++c) {
        double& cc = col[p][static_cast<size_t>(c)];
        cc = beta2t * cc + (1.0 - beta2t) * cs[static_cast<size_t>(c)] / static_cast<double>(rows);
      }
      for (int64_t e = 0; e < numel; ++e) {
        const double rf = 1.0 / std::sqrt(row[p][static_cast<size_t>(e / cols)] / row_mean);
        const double cf = 1.0 / std::sqrt(col[p][static_cast<size_t>(e % cols)]);
        u[static_cast<size_t>(e)] = g[static_cast<size_t>(e)] * rf * cf;
      }
    } else {
      for (int64_t e = 0; e < numel; ++e) {
        const double gg = g[static_cast<size_t>(e)];
        double& vv = v[idx(loc, e)];
        vv = beta2t * vv + (1.0 - beta2t) * (gg * gg + eps1);
        u[static_cast<size_t>(e)] = gg / std::sqrt(vv);
      }
    }
    double usq = 0.0;
    for (double uu : u) usq += uu * uu;
    const double clip =
        std::max(1.0, std::sqrt(usq / static_cast<double>(numel)) / cfg_.clip_threshold);
    const double wd = spec.weight_decay ? cfg_.weight_decay : 0.0;
    for (int64_t e = 0; e < numel; ++e) {
      const size_t j = idx(loc, e);
      double uu = u[static_cast<size_t>(e)] / clip * lr_p;
      if (cfg_.use_first_moment) {
        m[j] = cfg_.beta1 * m[j] + (1.0 - cfg_.beta1) * uu;
        uu = m[j];
      }
      x[j] += x[j] * (-wd * lr_p);
      x[j] -= uu;
    }
  }

  static size_t idx(const std::vector<int64_t>& loc, int64_t e) {
    return static_cast<size_t>(loc[static_cast<size_t>(e)]);
  }

  OptimizerConfig cfg_;
  const ParamLayout& layout_;
  std::vector<OptimSegment> segs_;
};

// ---- cases ----

// Master-weight tolerance |got - ref| <= rtol |ref| + atol, and the states' tolerance relative
// to the largest |value| of the state over the parameter (state_rtol).
struct Tol {
  double rtol, atol, state_rtol;
};

struct OptCase {
  std::string name;
  OptimizerConfig cfg;
  DType grad_dtype = DType::kF32;
  Tol tol;
};

OptimizerConfig with(const std::string& type, void (*edit)(OptimizerConfig&)) {
  OptimizerConfig c = OptimizerConfig::defaults_for(type);
  edit(c);
  return c;
}

// Tolerances. Every step rounds the fp32 master weight a few times (p * decay, one fma: <= 1 ulp
// each), so 7 steps leave <= ~14 ulp = 8.3e-7 |p| of rounding: rtol 2e-6 covers it for every rule.
// atol covers the error of the update itself, which scales with the step size:
//   AdamW/Adam (and 8-bit's fp32 moments): m and v carry ~1e-7 relative rounding per operation,
//     so lr m/(sqrt(v)+eps) is exact to ~1e-6 relative; with sum(lr) ~ 0.03 that is ~3e-8:
//     atol 5e-7. A wrong bias correction, eps placement or decay moves weights by ~1e-4 and more.
//   SGD: p -= lr (g + wd p) with |g| up to ~2.5 and sum(lr) ~ 0.04: ~1e-7 relative of ~0.1:
//     atol 5e-7.
//   Lion: the update is exactly lr sign(c); only the decay rounds: atol 1e-7 — except where c is
//     within fp32 rounding of 0 and the sign may legitimately differ (sign_margin < 1e-5, checked
//     separately).
//   Adafactor: the factors, RMS and clip are fp32 (row/column sums fp64 then rounded), ~1e-6
//     relative on a step of ~1e-2 RMS(p) (~5e-3): atol 2e-7 per step -> 1.5e-6. A missing
//     clip, wrong row normalisation or factor transposition moves weights by ~1e-3.
// States: fp32 moments vs fp64 over 7 steps: 1e-5 of the state's largest value.
const Tol kAdamTol{2e-6, 5e-7, 1e-5};
const Tol kSgdTol{2e-6, 5e-7, 1e-5};
const Tol kLionTol{2e-6, 1e-7, 1e-5};
const Tol kAdafactorTol{2e-6, 1.5e-6, 1e-5};

std::vector<OptCase> all_cases() {
  std::vector<OptCase> c;
  c.push_back({"AdamW",
               with("AdamW",
                    [](OptimizerConfig& o) {
                      o.lr = 3e-3f;
                      o.beta2 = 0.95f;
                      o.weight_decay = 0.1f;
                    }),
               DType::kF32, kAdamTol});
  c.push_back({"AdamW_bf16", c.back().cfg, DType::kBF16, kAdamTol});
  c.push_back({"Adam", with("Adam", [](OptimizerConfig& o) { o.weight_decay = 0.05f; }),
               DType::kF32, kAdamTol});
  c.push_back({"AdamW8bit",
               with("AdamW8bit",
                    [](OptimizerConfig& o) {
                      o.lr = 3e-3f;
                      o.beta2 = 0.95f;
                      o.weight_decay = 0.1f;
                    }),
               DType::kF32, kAdamTol});
  c.push_back({"AdamW8bit_fp16", c.back().cfg, DType::kF16, kAdamTol});
  c.push_back({"Adam8bit", with("Adam8bit", [](OptimizerConfig& o) { o.lr = 2e-3f; }), DType::kF32,
               kAdamTol});
  c.push_back(
      {"Adafactor", OptimizerConfig::defaults_for("Adafactor"), DType::kF32, kAdafactorTol});
  c.push_back({"Adafactor_beta1_wd_clip",
               with("Adafactor",
                    [](OptimizerConfig& o) {
                      o.use_first_moment = true;
                      o.beta1 = 0.9f;
                      o.weight_decay = 0.05f;
                      o.clip_threshold = 0.5f;
                    }),
               DType::kF32, kAdafactorTol});
  c.push_back({"Adafactor_beta1_wd_clip_bf16", c.back().cfg, DType::kBF16, kAdafactorTol});
  c.push_back({"Adafactor_lr_scaled",
               with("Adafactor",
                    [](OptimizerConfig& o) {
                      o.relative_step = false;
                      o.lr = 2e-2f;
                      o.weight_decay = 0.02f;
                    }),
               DType::kF32, kAdafactorTol});
  c.push_back({"Adafactor_lr_unscaled_beta1",
               with("Adafactor",
                    [](OptimizerConfig& o) {
                      o.relative_step = false;
                      o.scale_parameter = false;
                      o.lr = 3e-3f;
                      o.use_first_moment = true;
                      o.beta1 = 0.8f;
                      o.weight_decay = 0.1f;
                    }),
               DType::kF32, kAdafactorTol});
  c.push_back({"Adafactor_warmup_unscaled",
               with("Adafactor",
                    [](OptimizerConfig& o) {
                      o.warmup_init = true;
                      o.scale_parameter = false;
                      o.decay_rate = -0.5f;
                    }),
               DType::kF32, kAdafactorTol});
  c.push_back({"SGD", with("SGD", [](OptimizerConfig& o) { o.weight_decay = 0.01f; }), DType::kF32,
               kSgdTol});
  c.push_back({"SGD_momentum",
               with("SGD",
                    [](OptimizerConfig& o) {
                      o.momentum = 0.9f;
                      o.weight_decay = 0.01f;
                    }),
               DType::kF32, kSgdTol});
  c.push_back({"SGD_nesterov",
               with("SGD",
                    [](OptimizerConfig& o) {
                      o.momentum = 0.9f;
                      o.nesterov = true;
                      o.weight_decay = 0.02f;
                    }),
               DType::kF32, kSgdTol});
  c.push_back({"SGD_dampening_bf16",
               with("SGD",
                    [](OptimizerConfig& o) {
                      o.momentum = 0.8f;
                      o.dampening = 0.3f;
                      o.weight_decay = 0.02f;
                    }),
               DType::kBF16, kSgdTol});
  c.push_back({"Lion", with("Lion", [](OptimizerConfig& o) { o.weight_decay = 0.1f; }), DType::kF32,
               kLionTol});
  return c;
}

std::string case_name(const ::testing::TestParamInfo<OptCase>& info) { return info.param.name; }
void PrintTo(const OptCase& c, std::ostream* os) { *os << c.name; }

bool elementwise(const OptimizerConfig& c) {
  return (c.is_adam() && !c.is_8bit()) || c.type == "SGD" || c.type == "Lion";
}

// Runs the reference next to the code under test: returns the number of master-weight elements
// out of tolerance (printing the first few), and checks padding and (non-8-bit) states.
struct RunResult {
  int bad = 0;
  double max_err = 0.0;  // max |got - ref| over parameter elements, last step
};

class OptimizerRef : public ::testing::TestWithParam<OptCase> {
 protected:
  void run_against_reference(bool split) {
    const OptCase& oc = GetParam();
    const ParamLayout layout = fake_layout();
    const std::vector<OptimSegment> segs = make_segments(layout, split);
    const Inputs in = make_inputs(layout, oc.cfg.lr, oc.grad_dtype, 1234);
    Harness h(oc.cfg, layout, segs, StoreSpec{}, "");
    h.set_master(in.master);
    Reference ref(oc.cfg, layout, segs, in.master);
    const bool lion = oc.cfg.type == "Lion";
    int64_t quantised = 0;
    for (const OptimSegment& s : segs)
      if (oc.cfg.is_8bit() && s.spec->numel() >= kMin8bit) quantised += s.count;
    double lr_sum = 0.0, flip_bound = 0.0;
    for (int t = 1; t <= kSteps; ++t) {
      h.step(in, t, oc.grad_dtype);
      ref.step(in, t);
      lr_sum += in.lr[static_cast<size_t>(t - 1)];
      flip_bound += 2.0 * std::sqrt(static_cast<double>(t)) * in.lr[static_cast<size_t>(t - 1)];
      const std::vector<float> got = h.master();
      int bad = 0, ambiguous = 0;
      int64_t flipped = 0;
      double max_err = 0.0, max_flip_err = 0.0;
      for (const OptimSegment& s : segs) {
        const bool q = oc.cfg.is_8bit() && s.spec->numel() >= kMin8bit;
        for (int64_t i = 0; i < s.count; ++i) {
          const size_t e = static_cast<size_t>(s.local + i);
          const double err = std::fabs(static_cast<double>(got[e]) - ref.x[e]);
          double tol = oc.tol.rtol * std::fabs(ref.x[e]) + oc.tol.atol;
          if (lion && ref.sign_margin[e] < 1e-5) {
            // sign(c) of a c within rounding of 0: either sign is right, each costs 2 lr.
            tol += 2.0 * lr_sum;
            ++ambiguous;
          }
          if (q && err > tol) {
            // Free-running 8-bit: where x/absmax fell within rounding of a midpoint, fp32 and
            // fp64 picked neighbouring codes (LockstepCodesMatchReference shows how rarely) and
            // the two runs carry moments one code apart from then on. That cannot move the weight
            // by more than two Adam steps apart: with bias correction m^ and v^ are weighted means
            // of g and g^2 over t steps, so |m^| <= sqrt(t) sqrt(v^) (Cauchy-Schwarz) and a step
            // is at most sqrt(t) lr: the bound is sum_t 2 sqrt(t) lr_t. The count of such weights
            // (<= 0.2%) is what catches a systematic error (a wrong block cut or code map moves
            // most weights of a block).
            ++flipped;
            max_flip_err = std::max(max_flip_err, err);
            tol = flip_bound;
          }
          max_err = std::max(max_err, err);
          if (!(err <= tol) && ++bad <= 5) {
            ADD_FAILURE() << oc.name << " step " << t << ": " << s.spec->name << "["
                          << s.param_begin + i << "] = " << got[e] << ", reference " << ref.x[e]
                          << " (|diff| " << err << " > tol " << tol << ")";
          }
        }
      }
      if (bad > 0) FAIL() << oc.name << " step " << t << ": " << bad << " weights out of tolerance";
      EXPECT_LT(ambiguous, 10) << "Lion: too many signs decided by rounding";
      EXPECT_LE(flipped * 500, quantised)
          << oc.name << " step " << t << ": more than 0.2% of the 8-bit weights off the reference";
      if (t == kSteps) {
        std::printf("[ info ] %s%s: max |master - ref| after %d steps %.3g", oc.name.c_str(),
                    split ? " (split)" : "", kSteps, max_err);
        if (quantised > 0)
          std::printf("; 8-bit: %lld weights one code off (max |diff| %.3g, bound %.3g)",
                      static_cast<long long>(flipped), max_flip_err, flip_bound);
        std::printf("\n");
        for (size_t e = 0; e < got.size(); ++e) {
          if (in.master[e] == kPadding) {
            ASSERT_EQ(got[e], kPadding) << "padding element " << e;
          }
        }
      }
    }
    if (!oc.cfg.is_8bit()) check_states(h, ref, oc);
  }

  // Checkpoint states against the reference's (fp32 moments only; 8-bit: LockstepCodes).
  void check_states(Harness& h, const Reference& ref, const OptCase& oc) {
    const std::vector<CheckpointStateInfo> states = h.opt().checkpoint_states();
    const std::vector<OptimSegment>& segs = h.opt().segments();
    for (size_t k = 0; k < states.size(); ++k) {
      const CheckpointStateInfo& st = states[k];
      for (size_t s = 0; s < segs.size(); ++s) {
        const OptimSegment& seg = segs[s];
        if (!state_applies(st, *seg.spec)) continue;
        std::vector<double> want;
        std::vector<float> got;
        if (st.whole) {
          got = h.whole(static_cast<int>(k), seg.param, *seg.spec);
          want = st.rows ? ref.row[static_cast<size_t>(seg.param)]
                         : ref.col[static_cast<size_t>(seg.param)];
        } else {
          got = h.ranged(static_cast<int>(k), static_cast<int>(s));
          const std::vector<double>& src = (st.name == "exp_avg_sq") ? ref.v : ref.m;
          want.assign(src.begin() + seg.local, src.begin() + seg.local + seg.count);
        }
        ASSERT_EQ(got.size(), want.size()) << st.name << " of " << seg.spec->name;
        double scale = 0.0;
        for (double w : want) scale = std::max(scale, std::fabs(w));
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_LE(std::fabs(got[i] - want[i]), oc.tol.state_rtol * scale)
              << oc.name << ": " << st.name << " of " << seg.spec->name << "[" << i
              << "] = " << got[i] << ", reference " << want[i];
        }
      }
    }
  }
};

TEST_P(OptimizerRef, MatchesReference) { run_against_reference(false); }

TEST_P(OptimizerRef, SplitSegmentsMatchReference) { run_against_reference(true); }

// Elementwise rules do not depend on how a parameter is cut (Note [one rounding sequence]);
// 8-bit blocks and Adafactor's whole-parameter sums do, so they are left out.
class OptimizerElementwise : public ::testing::TestWithParam<OptCase> {};

TEST_P(OptimizerElementwise, SplitSegmentsGiveTheSameBits) {
  const OptCase& oc = GetParam();
  const ParamLayout layout = fake_layout();
  const Inputs in = make_inputs(layout, oc.cfg.lr, oc.grad_dtype, 99);
  Harness whole(oc.cfg, layout, make_segments(layout, false), StoreSpec{}, "");
  Harness cut(oc.cfg, layout, make_segments(layout, true), StoreSpec{}, "");
  whole.set_master(in.master);
  cut.set_master(in.master);
  for (int t = 1; t <= kSteps; ++t) {
    whole.step(in, t, oc.grad_dtype);
    cut.step(in, t, oc.grad_dtype);
  }
  const std::vector<float> a = whole.master(), b = cut.master();
  ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
}

// (a) The store's kind and chunking, and partitioned over a world of one, change no bit.
TEST_P(OptimizerRef, StoreKindsAndChunkingGiveTheSameBits) {
  const OptCase& oc = GetParam();
  const ParamLayout layout = fake_layout();
  const Inputs in = make_inputs(layout, oc.cfg.lr, oc.grad_dtype, 7);
  TempDir dir;
  for (bool split : {false, true}) {
    const std::vector<OptimSegment> segs = make_segments(layout, split);
    std::vector<std::unique_ptr<Harness>> hs;
    hs.push_back(
        std::make_unique<Harness>(oc.cfg, layout, segs, StoreSpec{false, 4096, false}, dir.path()));
    hs.push_back(std::make_unique<Harness>(oc.cfg, layout, segs,
                                           StoreSpec{false, int64_t{1} << 20, false}, dir.path()));
    hs.push_back(
        std::make_unique<Harness>(oc.cfg, layout, segs, StoreSpec{true, 4096, false}, dir.path()));
    hs.push_back(
        std::make_unique<Harness>(oc.cfg, layout, segs, StoreSpec{false, 4096, true}, dir.path()));
    ASSERT_EQ(hs[0]->store().num_chunks(), 4);
    ASSERT_EQ(hs[1]->store().num_chunks(), 1);
    ASSERT_EQ(hs[2]->store().num_chunks(), 4);
    ASSERT_FALSE(hs[2]->store().resident());
    for (auto& h : hs) h->set_master(in.master);
    const char* names[] = {"memory/4096", "memory/one chunk", "nvme/4096",
                           "memory/4096 partitioned"};
    for (int t = 1; t <= kSteps; ++t) {
      for (auto& h : hs) h->step(in, t, oc.grad_dtype);
      const std::vector<float> m0 = hs[0]->master();
      const std::vector<std::vector<float>> s0 = hs[0]->all_states();
      for (size_t i = 1; i < hs.size(); ++i) {
        const std::vector<float> mi = hs[i]->master();
        ASSERT_EQ(std::memcmp(m0.data(), mi.data(), m0.size() * 4), 0)
            << names[i] << " vs " << names[0] << ": master weights differ at step " << t
            << (split ? " (split)" : "");
        const std::vector<std::vector<float>> si = hs[i]->all_states();
        ASSERT_EQ(si.size(), s0.size());
        for (size_t k = 0; k < s0.size(); ++k) {
          ASSERT_EQ(si[k].size(), s0[k].size());
          ASSERT_EQ(std::memcmp(s0[k].data(), si[k].data(), s0[k].size() * 4), 0)
              << names[i] << " vs " << names[0] << ": state " << k << " differs at step " << t;
        }
      }
    }
  }
}

// (b) Checkpoint round trip: every state read out and written into a fresh optimizer and store
// reads back the same bits and continues bit-identically.
TEST_P(OptimizerRef, CheckpointRoundTripContinuesBitIdentically) {
  const OptCase& oc = GetParam();
  const ParamLayout layout = fake_layout();
  const Inputs in = make_inputs(layout, oc.cfg.lr, oc.grad_dtype, 55);
  TempDir dir;
  for (bool split : {false, true}) {
    for (bool nvme : {false, true}) {
      SCOPED_TRACE(std::string(split ? "split" : "whole") + (nvme ? ", nvme" : ", memory"));
      const std::vector<OptimSegment> segs = make_segments(layout, split);
      const StoreSpec ss{nvme, 4096, false};
      // Two nvme stores of one process need two folders (the file is named by rank and pid).
      const std::string da = dir.path() + "/a", db = dir.path() + "/b";
      std::filesystem::create_directories(da);
      std::filesystem::create_directories(db);
      Harness a(oc.cfg, layout, segs, ss, da);
      a.set_master(in.master);
      for (int t = 1; t <= 4; ++t) a.step(in, t, oc.grad_dtype);

      Harness b(oc.cfg, layout, segs, ss, db);
      const std::vector<float> master = a.master();
      b.set_master(master);
      const std::vector<CheckpointStateInfo> states = a.opt().checkpoint_states();
      for (size_t k = 0; k < states.size(); ++k) {
        const int ki = static_cast<int>(k);
        for (size_t s = 0; s < segs.size(); ++s) {
          const OptimSegment& seg = segs[s];
          if (!state_applies(states[k], *seg.spec)) continue;
          if (states[k].whole) {
            if (s > 0 && segs[s - 1].param == seg.param) continue;  // once per parameter
            const std::vector<float> w = a.whole(ki, seg.param, *seg.spec);
            b.opt().write_whole(ki, seg.param, w.data());
            continue;
          }
          const std::vector<float> r = a.ranged(ki, static_cast<int>(s));
          must(b.opt().write_state(ki, static_cast<int>(s), r.data(), b.store()));
          // Reading in uneven pieces gives the bits of the whole read.
          const int64_t cuts[] = {0, seg.count / 3 + 1, seg.count / 2 + 7, seg.count};
          std::vector<float> pieces(static_cast<size_t>(seg.count));
          for (int c = 0; c < 3; ++c) {
            const int64_t lo = std::min(cuts[c], seg.count), hi = std::min(cuts[c + 1], seg.count);
            if (hi > lo)
              must(a.opt().read_state(ki, static_cast<int>(s), seg.local + lo, hi - lo, a.store(),
                                      pieces.data() + lo));
          }
          ASSERT_EQ(std::memcmp(pieces.data(), r.data(), r.size() * 4), 0)
              << states[k].name << " of " << seg.spec->name << " read in pieces";
          // A plain fp32 store array holds the same values in place.
          const int arr = a.opt().store_array_of(ki);
          if (arr >= 0 && !nvme) {
            const float* in_place = static_cast<const float*>(a.store().data(arr)) + seg.local;
            ASSERT_EQ(std::memcmp(in_place, r.data(), r.size() * 4), 0)
                << states[k].name << " of " << seg.spec->name << ": store_array_of";
          }
        }
      }
      {
        const std::vector<std::vector<float>> sa = a.all_states(), sb = b.all_states();
        ASSERT_EQ(sa.size(), sb.size());
        for (size_t k = 0; k < sa.size(); ++k)
          ASSERT_EQ(std::memcmp(sa[k].data(), sb[k].data(), sa[k].size() * 4), 0)
              << "state " << k << " does not read back as written";
      }
      for (int t = 5; t <= 6; ++t) {
        a.step(in, t, oc.grad_dtype);
        b.step(in, t, oc.grad_dtype);
        const std::vector<float> ma = a.master(), mb = b.master();
        ASSERT_EQ(std::memcmp(ma.data(), mb.data(), ma.size() * 4), 0)
            << "master weights differ at step " << t << " after the round trip";
        const std::vector<std::vector<float>> sa = a.all_states(), sb = b.all_states();
        for (size_t k = 0; k < sa.size(); ++k)
          ASSERT_EQ(std::memcmp(sa[k].data(), sb[k].data(), sa[k].size() * 4), 0)
              << "state " << k << " differs at step " << t << " after the round trip";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizers, OptimizerRef, ::testing::ValuesIn(all_cases()), case_name);

std::vector<OptCase> elementwise_cases() {
  std::vector<OptCase> out;
  for (const OptCase& c : all_cases())
    if (elementwise(c.cfg)) out.push_back(c);
  return out;
}
INSTANTIATE_TEST_SUITE_P(Optimizers, OptimizerElementwise, ::testing::ValuesIn(elementwise_cases()),
                         case_name);

// ---- 8-bit specifics ----

// The code of a dequantised value inside its block: the block's absmax is the largest |value|
// (its element holds the exact code +-1), and each value is map.code[c] * absmax.
std::vector<int> codes_of_block(const kc::QuantMap& map, const float* x, int64_t n) {
  float a = 0.0f;
  for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(x[i]));
  std::vector<int> out(static_cast<size_t>(n), zero_code(map));
  if (a == 0.0f) return out;  // an all-zero block: the code of 0 throughout
  for (int64_t i = 0; i < n; ++i) {
    int best = 0;
    float best_d = std::numeric_limits<float>::infinity();
    for (int c = 0; c < 256; ++c) {
      const float d = std::fabs(map.code[c] * a - x[i]);
      if (d < best_d) {
        best_d = d;
        best = c;
      }
    }
    out[static_cast<size_t>(i)] = best;
  }
  return out;
}

class AdamW8bitTest : public ::testing::TestWithParam<bool> {};

// Lockstep: each step the reference starts from the optimizer's own state (master weights and
// dequantised moments, via the checkpoint interface), takes one fp64 step with fp64 quantisation,
// and must agree on the master weights to fp32 rounding and on every code, except where x/absmax
// falls within rounding of a midpoint between two codes: there the fp32 and fp64 nearest codes may
// be neighbours (rare: the codes are >= 0.4% apart relative to absmax at the top of the map and
// x/absmax carries ~1e-7 error).
TEST_P(AdamW8bitTest, LockstepCodesMatchReference) {
  const bool split = GetParam();
  OptimizerConfig cfg = OptimizerConfig::defaults_for("AdamW8bit");
  cfg.lr = 3e-3f;
  cfg.beta2 = 0.95f;
  cfg.weight_decay = 0.1f;
  const ParamLayout layout = fake_layout();
  const std::vector<OptimSegment> segs = make_segments(layout, split);
  const Inputs in = make_inputs(layout, cfg.lr, DType::kF32, 4321);
  Harness h(cfg, layout, segs, StoreSpec{}, "");
  h.set_master(in.master);
  int64_t compared = 0, one_off = 0;
  for (int t = 1; t <= kSteps; ++t) {
    Reference ref(cfg, layout, segs, h.master());
    for (size_t s = 0; s < segs.size(); ++s) {
      const OptimSegment& seg = segs[s];
      const std::vector<float> m = h.ranged(0, static_cast<int>(s)),
                               v = h.ranged(1, static_cast<int>(s));
      for (int64_t i = 0; i < seg.count; ++i) {
        ref.m[static_cast<size_t>(seg.local + i)] = m[static_cast<size_t>(i)];
        ref.v[static_cast<size_t>(seg.local + i)] = v[static_cast<size_t>(i)];
      }
    }
    h.step(in, t, DType::kF32);
    ref.step(in, t);
    const std::vector<float> got = h.master();
    for (const OptimSegment& seg : segs) {
      for (int64_t i = 0; i < seg.count; ++i) {
        const size_t e = static_cast<size_t>(seg.local + i);
        // One step: two roundings of p plus ~1e-6 of the update.
        ASSERT_LE(std::fabs(got[e] - ref.x[e]), 3e-7 * std::fabs(ref.x[e]) + 2e-8)
            << "step " << t << ": " << seg.spec->name << "[" << seg.param_begin + i << "]";
      }
    }
    for (size_t s = 0; s < segs.size(); ++s) {
      const OptimSegment& seg = segs[s];
      if (seg.spec->numel() < kMin8bit) continue;
      for (int k = 0; k < 2; ++k) {
        const kc::QuantMap& map = k == 0 ? kc::signed_dynamic_map() : kc::unsigned_dynamic_map();
        const std::vector<uint8_t>& want = k == 0 ? ref.mcode : ref.vcode;
        const std::vector<float> vals = h.ranged(k, static_cast<int>(s));
        for (int64_t b0 = seg.local; b0 < seg.local + seg.count;) {
          const int64_t b1 = std::min(seg.local + seg.count, (b0 / kQuant + 1) * kQuant);
          const std::vector<int> codes =
              codes_of_block(map, vals.data() + (b0 - seg.local), b1 - b0);
          for (int64_t j = b0; j < b1; ++j) {
            const int d = codes[static_cast<size_t>(j - b0)] - want[static_cast<size_t>(j)];
            ++compared;
            if (d == 0) continue;
            ASSERT_EQ(std::abs(d), 1) << "step " << t << ", " << (k == 0 ? "m" : "v") << " of "
                                      << seg.spec->name << " at owned " << j;
            ++one_off;
          }
          b0 = b1;
        }
      }
    }
  }
  std::printf("[ info ] 8-bit lockstep%s: %lld codes compared, %lld one-code differences\n",
              split ? " (split)" : "", static_cast<long long>(compared),
              static_cast<long long>(one_off));
  EXPECT_LE(one_off * 1000, compared) << "more than 0.1% of the codes differ by one";
}

// Free-running: the quantised fp64 reference (MatchesReference) is far closer to the optimizer
// than an unquantised fp64 AdamW is: the quantisation is really there, at the places it should be.
TEST_P(AdamW8bitTest, QuantisedReferenceIsCloserThanUnquantised) {
  const bool split = GetParam();
  OptimizerConfig cfg = OptimizerConfig::defaults_for("AdamW8bit");
  cfg.lr = 3e-3f;
  cfg.beta2 = 0.95f;
  cfg.weight_decay = 0.1f;
  OptimizerConfig plain = cfg;
  plain.type = "AdamW";
  const ParamLayout layout = fake_layout();
  const std::vector<OptimSegment> segs = make_segments(layout, split);
  const Inputs in = make_inputs(layout, cfg.lr, DType::kF32, 777);
  Harness h(cfg, layout, segs, StoreSpec{}, "");
  h.set_master(in.master);
  Reference q(cfg, layout, segs, in.master), f(plain, layout, segs, in.master);
  for (int t = 1; t <= kSteps; ++t) {
    h.step(in, t, DType::kF32);
    q.step(in, t);
    f.step(in, t);
  }
  const std::vector<float> got = h.master();
  for (const OptimSegment& seg : segs) {
    double dq = 0.0, df = 0.0;
    for (int64_t i = 0; i < seg.count; ++i) {
      const size_t e = static_cast<size_t>(seg.local + i);
      dq = std::max(dq, std::fabs(got[e] - q.x[e]));
      df = std::max(df, std::fabs(got[e] - f.x[e]));
    }
    if (seg.spec->numel() < kMin8bit) {
      EXPECT_LE(df, 2e-6) << seg.spec->name << ": small parameters keep fp32 moments";
    } else {
      EXPECT_LE(dq * 20.0, df) << seg.spec->name << ": max |got - quantised ref| " << dq
                               << ", max |got - fp32 ref| " << df;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, AdamW8bitTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("split") : std::string("whole");
                         });

// ---- the reference checks itself on cases with a closed form ----

TEST(OptimizerReferenceSelfTest, AdafactorFirstStepIsSignDescentWhenUnfactored) {
  // Step 1 of a 1-D parameter: beta2t = 0 so v = g^2 + eps1 and u = sign(g) (RMS 1: no clip);
  // with relative_step and scale_parameter, p -= 1e-2 max(eps2, RMS(p)) sign(g).
  OptimizerConfig cfg = OptimizerConfig::defaults_for("Adafactor");
  ParamLayout l;
  ParamSpec s;
  s.name = "b";
  s.shape = {4};
  l.entries.push_back({s, 0});
  l.total = 16;
  std::vector<OptimSegment> segs = {{0, &l.entries[0].spec, 0, 0, 4}};
  std::vector<float> x = {0.5f, -1.0f, 2.0f, 0.0f}, g = {3.0f, 0.25f, -1e-3f, 1.0f};
  x.resize(16, 0.0f);
  g.resize(16, 0.0f);
  Reference ref(cfg, l, segs, x);
  ref.step(0.0, 1, 1.0, g);
  const double rms = std::sqrt((0.25 + 1.0 + 4.0) / 4.0);
  const double want[] = {0.5 - 1e-2 * rms, -1.0 - 1e-2 * rms, 2.0 + 1e-2 * rms, -1e-2 * rms};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(ref.x[static_cast<size_t>(i)], want[i], 1e-12);
}

TEST(OptimizerReferenceSelfTest, AdafactorFactoredRankOneGradientIsExact) {
  // A rank-one g^2 (g[r][c] = a_r b_c) is what the factored moment represents exactly: at step 1
  // (beta2t = 0, eps1 -> 0) u = sign(g) everywhere, so with scale_parameter false and
  // relative_step false, p -= lr sign(g).
  OptimizerConfig cfg = OptimizerConfig::defaults_for("Adafactor");
  cfg.relative_step = false;
  cfg.scale_parameter = false;
  cfg.lr = 0.1f;
  ParamLayout l;
  ParamSpec s;
  s.name = "w";
  s.shape = {2, 3};
  s.weight_decay = true;
  l.entries.push_back({s, 0});
  l.total = 16;
  std::vector<OptimSegment> segs = {{0, &l.entries[0].spec, 0, 0, 6}};
  const double a[] = {1.0, -2.0}, b[] = {0.5, 3.0, -0.25};
  std::vector<float> x(16, 1.0f), g(16, 0.0f);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) g[static_cast<size_t>(r * 3 + c)] = static_cast<float>(a[r] * b[c]);
  Reference ref(cfg, l, segs, x);
  ref.step(0.1, 1, 1.0, g);
  for (int e = 0; e < 6; ++e) {
    const double sg = g[static_cast<size_t>(e)] > 0 ? 1.0 : -1.0;
    EXPECT_NEAR(ref.x[static_cast<size_t>(e)], 1.0 - 0.1 * sg, 1e-6) << e;
  }
}

}  // namespace
}  // namespace zt
