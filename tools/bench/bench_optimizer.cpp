// bench_optimizer: optimizer-step throughput of the CPU kernels (kernels/optimizer.h) in
// parameters per second, for AdamW, AdamW8bit, SGD with momentum and Lion on fp32 and bf16
// gradients, over one flat buffer of --n parameters on --threads OpenMP threads. AdamW on fp32
// gradients is also timed at every SIMD level the CPU has (kernels/cpu/simd.h). Prints one JSON
// object; tools/bench/run_optimizer_bench.sh puts PyTorch beside it.
//
// Every buffer is written before the clock starts: on a VM the first touch of a page can cost
// ~10 us, which would otherwise be timed as optimizer work. Each configuration runs --warmup
// untimed steps, then --steps timed ones; the median step is reported (the cores are shared).
//
// Bytes per parameter: state = what the optimizer keeps (fp32 master included); traffic = what
// one step reads and writes (gradient included), the floor of a memory-bound step.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kernels/cpu/simd.h"
#include "kernels/half.h"
#include "kernels/optimizer.h"
#include "kernels/threads.h"

namespace {

namespace kc = zt::kernels::cpu;

struct Buffers {
  std::vector<float> master, m, v;
  std::vector<uint8_t> mc, vc;
  std::vector<float> ma, va;
  std::vector<float> grad_f32;
  std::vector<zt::bf16> grad_bf16;
};

// Fills every buffer in parallel (which also faults every page in) with deterministic values.
void fill(Buffers& b, size_t n) {
  b.master.resize(n);
  b.m.resize(n);
  b.v.resize(n);
  b.mc.resize(n);
  b.vc.resize(n);
  b.grad_f32.resize(n);
  b.grad_bf16.resize(n);
  const size_t blocks = kc::quant_block_count(n, kc::kQuantBlock);
  b.ma.assign(blocks, 0.0f);
  b.va.assign(blocks, 0.0f);
  const uint8_t m_zero = kc::quantize_value(kc::signed_dynamic_map(), 0.0f);
  const uint8_t v_zero = kc::quantize_value(kc::unsigned_dynamic_map(), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
    const auto u = static_cast<uint32_t>(i) * 2654435761u;  // cheap hash: values in [-1, 1)
    const float x = static_cast<float>(u >> 8) * (2.0f / 16777216.0f) - 1.0f;
    b.master[i] = 0.5f * x;
    b.m[i] = 0.0f;
    b.v[i] = 0.0f;
    b.mc[i] = m_zero;
    b.vc[i] = v_zero;
    b.grad_f32[i] = x;
    b.grad_bf16[i] = zt::to_bf16(x);
  }
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  const size_t k = xs.size() / 2;
  return xs.size() % 2 ? xs[k] : 0.5 * (xs[k - 1] + xs[k]);
}

template <typename T>
void step(const std::string& opt, Buffers& b, const T* grad, size_t n, int t) {
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f, scale = 1.0f;
  const float bc1 = 1.0f - std::pow(beta1, static_cast<float>(t));
  const float bc2 = 1.0f - std::pow(beta2, static_cast<float>(t));
  if (opt == "adamw") {
    kc::adamw_update(b.master.data(), b.m.data(), b.v.data(), grad, n, lr, beta1, beta2, eps, wd,
                     bc1, bc2, scale);
  } else if (opt == "adamw8bit") {
    kc::adamw8bit_update(b.master.data(), b.mc.data(), b.ma.data(), b.vc.data(), b.va.data(), grad,
                         n, kc::kQuantBlock, lr, beta1, beta2, eps, wd, bc1, bc2, scale);
  } else if (opt == "sgd_momentum") {
    kc::sgd_update(b.master.data(), b.m.data(), grad, n, lr, 0.9f, 0.0f, wd, false, t == 1, scale);
  } else {  // lion
    kc::lion_update(b.master.data(), b.m.data(), grad, n, lr, 0.9f, 0.99f, wd, scale);
  }
}

double state_bytes(const std::string& opt) {
  if (opt == "adamw") return 12.0;                                         // master, m, v
  if (opt == "adamw8bit") return 4.0 + 2.0 + 2.0 * 4.0 / kc::kQuantBlock;  // + 2 absmax / block
  return 8.0;                                                              // master + one moment
}

double traffic_bytes(const std::string& opt, size_t grad_bytes) {
  if (opt == "adamw") return 24.0 + grad_bytes;      // read + write master, m, v
  if (opt == "adamw8bit") return 12.0 + grad_bytes;  // read + write master and two codes
  return 16.0 + grad_bytes;                          // read + write master and one moment
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_optimizer"};
  size_t n = 50'000'000;
  int threads = 2, steps = 7, warmup = 2;
  app.add_option("--n", n, "parameters");
  app.add_option("--threads", threads, "OpenMP threads");
  app.add_option("--steps", steps, "timed steps (the median is reported)");
  app.add_option("--warmup", warmup, "untimed steps first");
  CLI11_PARSE(app, argc, argv);

  kc::set_num_threads(threads);
  Buffers b;
  fill(b, n);

  nlohmann::json out;
  out["n"] = n;
  out["threads"] = threads;
  out["simd_detected"] = kc::simd_level_name(kc::detected_simd_level());
  nlohmann::json rows = nlohmann::json::array();

  auto run = [&](const std::string& opt, const std::string& dtype, kc::SimdLevel level) {
    kc::set_simd_level_for_testing(level);
    std::vector<double> secs;
    for (int t = 1; t <= warmup + steps; ++t) {
      const auto t0 = std::chrono::steady_clock::now();
      if (dtype == "f32") {
        step(opt, b, b.grad_f32.data(), n, t);
      } else {
        step(opt, b, b.grad_bf16.data(), n, t);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (t > warmup) secs.push_back(s);
    }
    const double sec = median(secs);
    const size_t grad_bytes = dtype == "f32" ? 4 : 2;
    nlohmann::json r;
    r["optimizer"] = opt;
    r["grad_dtype"] = dtype;
    r["simd"] = kc::simd_level_name(level);
    r["step_ms"] = 1e3 * sec;
    r["params_per_s"] = static_cast<double>(n) / sec;
    r["state_bytes_per_param"] = state_bytes(opt);
    r["traffic_bytes_per_param"] = traffic_bytes(opt, grad_bytes);
    r["gb_per_s"] = traffic_bytes(opt, grad_bytes) * static_cast<double>(n) / sec / 1e9;
    rows.push_back(r);
    std::fprintf(stderr, "%-13s %-4s %-6s %8.2f ms  %7.1f M params/s\n", opt.c_str(), dtype.c_str(),
                 kc::simd_level_name(level), 1e3 * sec, n / sec / 1e6);
  };

  const kc::SimdLevel best = kc::detected_simd_level();
  for (const std::string opt : {"adamw", "adamw8bit", "sgd_momentum", "lion"}) {
    for (const std::string dtype : {"f32", "bf16"}) run(opt, dtype, best);
  }
  for (kc::SimdLevel level : {kc::SimdLevel::kScalar, kc::SimdLevel::kAvx2}) {
    if (kc::simd_level_supported(level) && level != best) {
      run("adamw", "f32", level);
      run("adamw8bit", "f32", level);
    }
  }
  kc::set_simd_level_for_testing(best);
  out["results"] = rows;
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
