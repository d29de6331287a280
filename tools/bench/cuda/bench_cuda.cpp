// bench_cuda: zerotrain's CUDA benchmarks, one JSON object per line on stdout (tools/gpu-check.sh
// turns them into one table).
//   bench_cuda ceilings                the device's measured ceilings: copy bandwidth (bytes read +
//                                      written per second) and a large bf16 GEMM's TFLOP/s
//   bench_cuda kernels [--B --T ...]   every op of the CUDA backend at GPT-2 shapes: time, and
//                                      achieved bandwidth or TFLOP/s against the ceilings
//   bench_cuda train --config FILE     tokens/s and MFU of the training step on one GPU with the
//                                      largest micro-batch that fits (or --micro-batch N)
//   bench_cuda offload-search          ZeRO stage 3 with the optimizer state offloaded to pinned
//                                      host memory: the largest GPT-2-shaped model that trains,
//                                      and its tokens/s, within a time budget
// MFU = (6 N + 12 L T C) tokens/s / peak, N all parameters, L layers, T the sequence, C the width
// (PaLM's count: the attention term counts the full T x T product, as most reports do), with the
// peak 989 TFLOP/s (H100 SXM dense bf16) unless --peak-tflops says otherwise.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <yaml-cpp/yaml.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "runtime/backend/cuda/cublaslt_matmul.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/comm/nccl/nccl_communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/train/trainer.h"

namespace {

using json = nlohmann::json;
using zt::Buffer;
using zt::CudaBackend;
using zt::DType;
using zt::MemCategory;
using zt::Tensor;

[[noreturn]] void die(const zt::Status& st) {
  std::fprintf(stderr, "bench_cuda: %s\n", st.to_string().c_str());
  std::exit(1);
}
template <typename T>
T must(zt::Result<T> r) {
  if (!r.is_ok()) die(r.status());
  return std::move(r).value();
}

std::unique_ptr<CudaBackend> make_backend() {
  return must(CudaBackend::create(zt::CudaBackendOptions{}));
}

// Median milliseconds of `reps` runs of fn on the backend's stream, after `warmup` runs.
double time_ms(CudaBackend& be, const std::function<void()>& fn, int reps = 20, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a, be.stream());
    fn();
    cudaEventRecord(b, be.stream());
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Ceilings {
  double bandwidth_gbs = 0, gemm_tflops = 0;
};

Ceilings measure_ceilings(CudaBackend& be) {
  Ceilings c;
  const size_t bytes = size_t{2} << 30;
  Buffer src = must(be.allocate(bytes, MemCategory::kWorkspace));
  Buffer dst = must(be.allocate(bytes, MemCategory::kWorkspace));
  const double copy_ms = time_ms(be, [&] {
    cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, be.stream());
  });
  c.bandwidth_gbs = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e-3) / 1e9;
  src.reset();
  dst.reset();
  const int n = 8192;
  const size_t mb = static_cast<size_t>(n) * n * 2;
  Buffer a = must(be.allocate(mb, MemCategory::kWorkspace));
  Buffer b = must(be.allocate(mb, MemCategory::kWorkspace));
  Buffer d = must(be.allocate(mb, MemCategory::kWorkspace));
  Buffer ws = must(be.allocate(size_t{32} << 20, MemCategory::kWorkspace));
  // Random bf16 data: zeros run faster than real inputs (less switching).
  std::vector<uint16_t> host(static_cast<size_t>(n) * n);
  std::mt19937 rng(1);
  for (auto& x : host)
    x = static_cast<uint16_t>(0x3c00 + (rng() & 0x7f) - 0x40 + ((rng() & 1) << 15));
  be.copy(a.data(), host.data(), mb);
  be.copy(b.data(), host.data(), mb);
  zt::cuda::LtMatmul lt(ws.data(), ws.bytes());
  const double gemm_ms = time_ms(be, [&] {
    lt.gemm(DType::kBF16, true, false, n, n, n, a.data(), b.data(), d.data(), 0.0f, nullptr,
            be.stream());
  });
  c.gemm_tflops = 2.0 * n * static_cast<double>(n) * n / (gemm_ms * 1e-3) / 1e12;
  return c;
}

void emit(json j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

int run_ceilings() {
  auto be = make_backend();
  const Ceilings c = measure_ceilings(*be);
  emit({{"bench", "ceiling"},
        {"device", be->name()},
        {"copy_gbs", c.bandwidth_gbs},
        {"bf16_gemm_tflops", c.gemm_tflops}});
  return 0;
}

int run_kernels(int B, int T, int C, int NH, int V, const std::string& dtype_name) {
  auto be = make_backend();
  const Ceilings ceil = measure_ceilings(*be);
  emit({{"bench", "ceiling"},
        {"device", be->name()},
        {"copy_gbs", ceil.bandwidth_gbs},
        {"bf16_gemm_tflops", ceil.gemm_tflops}});
  const DType dt = must(zt::parse_dtype(dtype_name));
  const size_t es = zt::dtype_size(dt);
  const int64_t N = static_cast<int64_t>(B) * T;
  auto alloc = [&](int64_t elems, DType t) {
    Buffer buf = must(be->allocate(static_cast<size_t>(elems) * zt::dtype_size(t) + 256,
                                   MemCategory::kActivations));
    return buf;
  };
  // Inputs hold small random values (zeros would flatter the GEMMs); fill through a host copy.
  auto fill = [&](Buffer& buf, int64_t elems, DType t, float scale) {
    std::vector<float> v(static_cast<size_t>(elems));
    std::mt19937 rng(static_cast<uint32_t>(elems));
    std::normal_distribution<float> d(0.0f, scale);
    for (float& x : v) x = d(rng);
    std::vector<uint8_t> bytes(static_cast<size_t>(elems) * zt::dtype_size(t));
    zt::convert(v.data(), DType::kF32, bytes.data(), t, static_cast<size_t>(elems));
    be->copy(buf.data(), bytes.data(), bytes.size());
  };
  zt::Ops& ops = be->ops();
  std::vector<Buffer> keep;
  auto tensor = [&](zt::Shape s, DType t, float scale = 0.02f) {
    Buffer b = alloc(s.numel(), t);
    fill(b, s.numel(), t, scale);
    Tensor x = b.as(t, s);
    keep.push_back(std::move(b));
    return x;
  };
  Tensor x = tensor({B, T, C}, dt, 1.0f), y = tensor({B, T, C}, dt), h = tensor({B, T, 4 * C}, dt);
  Tensor h2 = tensor({B, T, 4 * C}, dt);
  Tensor qkv = tensor({B, T, 3 * C}, dt, 1.0f), dqkv = tensor({B, T, 3 * C}, dt);
  Tensor w_fc = tensor({4 * C, C}, dt), b_fc = tensor({4 * C}, dt), dw_fc = tensor({4 * C, C}, dt);
  Tensor db_fc = tensor({4 * C}, dt);
  Tensor ln_w = tensor({C}, dt, 1.0f), ln_b = tensor({C}, dt), dln_w = tensor({C}, dt);
  Tensor dln_b = tensor({C}, dt);
  Tensor mean = tensor({N}, DType::kF32), rstd = tensor({N}, DType::kF32, 1.0f);
  Tensor lse = tensor({B, NH, T}, DType::kF32);
  Tensor logits = tensor({N, V}, dt, 1.0f), losses = tensor({N}, DType::kF32);
  Tensor wte = tensor({V, C}, dt), wpe = tensor({T, C}, dt);
  std::vector<int32_t> tok(static_cast<size_t>(N));
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<int32_t>((i * 7919) % V);
  Buffer dtok = alloc(N, DType::kF32);
  be->copy(dtok.data(), tok.data(), tok.size() * 4);
  const auto* tokens = static_cast<const int32_t*>(dtok.data());
  const double flops_attn_fwd = 2.0 * 2.0 * B * NH * (T * (T + 1.0) / 2.0) * (C / NH);

  struct Row {
    std::string op;
    double ms, bytes, flops;
  };
  std::vector<Row> rows;
  auto bench = [&](const std::string& op, double bytes, double flops, std::function<void()> fn) {
    rows.push_back({op, time_ms(*be, fn), bytes, flops});
  };
  const double nc = static_cast<double>(N) * C;
  bench("encoder_fwd", nc * es * 3, 0, [&] { ops.encoder_fwd(x, tokens, wte, wpe); });
  bench("layernorm_fwd", nc * es * 2, 0, [&] { ops.layernorm_fwd(y, mean, rstd, x, ln_w, ln_b); });
  bench("layernorm_bwd", nc * es * 4, 0,
        [&] { ops.layernorm_bwd(x, dln_w, dln_b, y, x, ln_w, mean, rstd); });
  bench("matmul_fwd (fc)", 0, 2.0 * N * C * 4.0 * C, [&] { ops.matmul_fwd(h, x, w_fc, b_fc); });
  bench("matmul_bwd (fc)", 0, 4.0 * N * C * 4.0 * C,
        [&] { ops.matmul_bwd(x, dw_fc, db_fc, h, x, w_fc); });
  bench("attention_fwd", 0, flops_attn_fwd, [&] { ops.attention_fwd(y, lse, qkv, NH); });
  bench("attention_bwd", 0, 2.5 * flops_attn_fwd,
        [&] { ops.attention_bwd(dqkv, y, qkv, y, lse, NH); });
  bench("gelu_fwd", 4 * nc * es * 2, 0, [&] { ops.gelu_fwd(h2, h); });
  bench("gelu_bwd", 4 * nc * es * 3, 0, [&] { ops.gelu_bwd(h2, h, h2); });
  bench("residual_fwd", nc * es * 3, 0, [&] { ops.residual_fwd(y, x, y); });
  bench("softmax_crossentropy", static_cast<double>(N) * V * es * 2, 0,
        [&] { ops.softmax_crossentropy(losses, logits, logits, tokens, 1e-6f); });
  bench("sum_squares", 4 * nc * es, 0, [&] { (void)ops.sum_squares(h); });
  {
    const int64_t n = 124'000'000;
    Tensor master = tensor({n}, DType::kF32), m = tensor({n}, DType::kF32);
    Tensor v = tensor({n}, DType::kF32), g = tensor({n}, dt);
    const zt::AdamWArgs a{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 0.5f, 1.0f};
    bench("adamw (124M)", n * (4.0 * 6 + static_cast<double>(es)), 0, [&] {
      be->optimizer_ops().adamw(master.ptr<float>(), m.ptr<float>(), v.ptr<float>(), g.data, dt,
                                static_cast<size_t>(n), a);
    });
  }
  for (const Row& r : rows) {
    json j{{"bench", "kernel"}, {"op", r.op}, {"dtype", dtype_name}, {"ms", r.ms}};
    if (r.bytes > 0) {
      const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
      j["gbs"] = gbs;
      j["pct_of_ceiling"] = 100.0 * gbs / ceil.bandwidth_gbs;
    }
    if (r.flops > 0) {
      const double tf = r.flops / (r.ms * 1e-3) / 1e12;
      j["tflops"] = tf;
      j["pct_of_ceiling"] = 100.0 * tf / ceil.gemm_tflops;
    }
    emit(j);
  }
  return 0;
}

// A token file of random tokens for benchmarks (the data's values do not change the speed).
std::string synthetic_tokens(int vocab, int64_t count) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "zt_bench_cuda_tokens.bin").string();
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<int32_t>(count);
  std::vector<uint16_t> tok(static_cast<size_t>(count));
  std::mt19937 rng(7);
  for (auto& t : tok) t = static_cast<uint16_t>(rng() % static_cast<uint32_t>(vocab));
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) die(zt::make_error(zt::StatusCode::kIoError, "cannot write {}", path));
  std::fwrite(header.data(), 4, header.size(), f);
  std::fwrite(tok.data(), 2, tok.size(), f);
  std::fclose(f);
  return path;
}

struct TrainMeasure {
  bool ok = false;
  std::string error;
  double step_ms = 0, tokens_per_s = 0, loss = 0;
  int64_t params = 0, peak_bytes = 0;
};

// Trains `steps` timed steps after `warmup` on one GPU; an out-of-memory or any other error is
// returned, not fatal (the micro-batch search and the model search try the next candidate).
TrainMeasure measure_training(zt::JobConfig cfg, int steps, int warmup) {
  TrainMeasure m;
  try {
    auto be = make_backend();
    zt::NcclOptions o;
    o.compute_stream = be->stream();
    auto comm = must(zt::make_nccl_communicator(o));
    auto t = zt::Trainer::create(cfg, *be, *comm);
    if (!t.is_ok()) {
      m.error = t.status().to_string();
      return m;
    }
    m.params = (*t)->layout().num_parameters;
    std::vector<double> ms;
    for (int s = 0; s < warmup + steps; ++s) {
      auto r = (*t)->step();
      if (!r.is_ok()) {
        m.error = r.status().to_string();
        return m;
      }
      if (s >= warmup) ms.push_back(r->step_ms);
      m.loss = r->loss;
    }
    std::sort(ms.begin(), ms.end());
    m.step_ms = ms[ms.size() / 2];
    const double tokens = static_cast<double>(cfg.train_batch_size) * cfg.model.block_size;
    m.tokens_per_s = tokens / (m.step_ms * 1e-3);
    m.peak_bytes = be->allocator().stats().peak_reserved_bytes;
    m.ok = true;
  } catch (const zt::StatusError& e) {
    m.error = e.status().to_string();
  } catch (const std::exception& e) {
    m.error = e.what();
  }
  return m;
}

double model_flops_per_token(const zt::JobConfig& cfg, int64_t params) {
  return 6.0 * static_cast<double>(params) +
         12.0 * cfg.model.n_layer * static_cast<double>(cfg.model.block_size) * cfg.model.n_embd;
}

int run_train(const std::string& config, int64_t micro, int steps, int warmup, double peak) {
  // The config's data file need not exist here (a bare GPU machine has no build/data): point
  // data.path at a synthetic token file of the config's vocabulary before it is validated.
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(config);
  } catch (const std::exception& e) {
    die(zt::make_error(zt::StatusCode::kInvalidArgument, "{}: {}", config, e.what()));
  }
  const int vocab =
      doc["model"] && doc["model"]["vocab_size"] ? doc["model"]["vocab_size"].as<int>() : 50257;
  doc["data"]["path"] = synthetic_tokens(vocab, int64_t{1} << 24);
  YAML::Emitter out;
  out << doc;
  zt::JobConfig cfg = must(zt::parse_job_config(
      out.c_str(), config, std::filesystem::path(config).parent_path().string()));
  cfg.backend = zt::BackendKind::kCuda;
  cfg.data.shuffle = false;
  cfg.checkpoint.every_steps = 0;
  std::vector<int64_t> candidates = {micro};
  if (micro <= 0) candidates = {64, 48, 32, 24, 16, 12, 8, 4, 2, 1};
  for (int64_t b : candidates) {
    cfg.train_micro_batch_size_per_gpu = b;
    cfg.gradient_accumulation_steps = 1;
    cfg.train_batch_size = b;
    const TrainMeasure m = measure_training(cfg, steps, warmup);
    if (!m.ok) {
      std::fprintf(stderr, "bench_cuda train: micro-batch %lld does not run: %s\n",
                   static_cast<long long>(b), m.error.c_str());
      continue;
    }
    const double mfu = model_flops_per_token(cfg, m.params) * m.tokens_per_s / (peak * 1e12);
    emit({{"bench", "train"},
          {"impl", "zerotrain"},
          {"config", config},
          {"params", m.params},
          {"micro_batch", b},
          {"seq_len", cfg.model.block_size},
          {"step_ms", m.step_ms},
          {"tokens_per_s", m.tokens_per_s},
          {"mfu", mfu},
          {"loss", m.loss},
          {"peak_reserved_bytes", m.peak_bytes}});
    return 0;
  }
  std::fprintf(stderr, "bench_cuda train: no micro-batch trains\n");
  return 1;
}

int run_offload_search(double budget_s, double peak) {
  struct Shape {
    const char* name;
    int n_layer, n_embd, n_head;
  };
  // GPT-2's family, then the GPT-3 paper's shapes beyond it.
  const std::vector<Shape> shapes = {{"gpt2-124M", 12, 768, 12},  {"gpt2-350M", 24, 1024, 16},
                                     {"gpt2-774M", 36, 1280, 20}, {"gpt2-1.5B", 48, 1600, 25},
                                     {"gpt3-2.7B", 32, 2560, 32}, {"gpt3-6.7B", 32, 4096, 32},
                                     {"gpt3-13B", 40, 5140, 40}};
  const auto start = std::chrono::steady_clock::now();
  const std::string data = synthetic_tokens(50257, int64_t{1} << 22);
  for (const Shape& s : shapes) {
    const double used =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (used > budget_s) {
      std::fprintf(stderr, "bench_cuda offload-search: time budget spent before %s\n", s.name);
      break;
    }
    zt::JobConfig cfg;
    cfg.backend = zt::BackendKind::kCuda;
    cfg.model.vocab_size = 50257;
    cfg.model.block_size = 1024;
    cfg.model.n_layer = s.n_layer;
    cfg.model.n_embd = s.n_embd;
    cfg.model.n_head = s.n_head;
    cfg.data.path = data;
    cfg.data.shuffle = false;
    cfg.bf16.enabled = true;
    cfg.zero.stage = 3;
    cfg.zero.overlap_comm = true;
    cfg.zero.offload_optimizer.device = zt::OffloadDevice::kCpu;
    cfg.zero.offload_optimizer.pin_memory = true;
    cfg.activation_checkpointing.policy = zt::CheckpointPolicy::kLayer;
    cfg.train_micro_batch_size_per_gpu = 8;
    cfg.gradient_accumulation_steps = 1;
    cfg.train_batch_size = 8;
    cfg.checkpoint.every_steps = 0;
    const TrainMeasure m = measure_training(cfg, 2, 1);
    json j{{"bench", "offload"}, {"model", s.name}, {"ok", m.ok}};
    if (m.ok) {
      j["params"] = m.params;
      j["tokens_per_s"] = m.tokens_per_s;
      j["step_ms"] = m.step_ms;
      j["mfu"] = model_flops_per_token(cfg, m.params) * m.tokens_per_s / (peak * 1e12);
      j["peak_reserved_bytes"] = m.peak_bytes;
    } else {
      j["error"] = m.error;
    }
    emit(j);
    if (!m.ok) break;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_cuda: zerotrain's CUDA benchmarks (JSON lines)"};
  app.require_subcommand(1);
  double peak = 989.0;
  app.add_option("--peak-tflops", peak, "dense bf16 peak for MFU (H100 SXM: 989)");
  app.add_subcommand("ceilings", "measured copy bandwidth and bf16 GEMM throughput");
  auto* k = app.add_subcommand("kernels", "every op at GPT-2 shapes");
  int B = 8, T = 1024, C = 768, NH = 12, V = 50304;
  std::string dtype = "bf16";
  k->add_option("--B", B);
  k->add_option("--T", T);
  k->add_option("--C", C);
  k->add_option("--NH", NH);
  k->add_option("--V", V);
  k->add_option("--dtype", dtype);
  auto* tr = app.add_subcommand("train", "training step tokens/s and MFU on one GPU");
  std::string config = "configs/gpt2-124m.yaml";
  int64_t micro = 0;
  int steps = 10, warmup = 3;
  tr->add_option("--config", config);
  tr->add_option("--micro-batch", micro, "0: the largest that fits");
  tr->add_option("--steps", steps);
  tr->add_option("--warmup", warmup);
  auto* off = app.add_subcommand("offload-search", "largest model with ZeRO-3 + CPU offload");
  double budget = 240;
  off->add_option("--budget-s", budget);
  CLI11_PARSE(app, argc, argv);
  try {
    if (app.got_subcommand("ceilings")) return run_ceilings();
    if (app.got_subcommand("kernels")) return run_kernels(B, T, C, NH, V, dtype);
    if (app.got_subcommand("train")) return run_train(config, micro, steps, warmup, peak);
    if (app.got_subcommand("offload-search")) return run_offload_search(budget, peak);
  } catch (const zt::StatusError& e) {
    die(e.status());
  }
  return 1;
}
