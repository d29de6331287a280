// optimizer_driver: runs N steps of one Optimizer (runtime/optim) through a real StateStore, the
// way ZeroEngine::optimizer_step drives it at stage 0, on parameters and gradients read from raw
// files, and writes the parameters after every step. The PyTorch reference checks
// (tests/e2e/adafactor_torch.sh) compare its output with torch.optim and a PyTorch Adafactor.
//
//   optimizer_driver --type TYPE [hyperparameters] --shapes FILE --init FILE --grads FILE
//                    --steps N --out FILE [--lrs FILE] [--grad-scale S] [--nvme DIR] [--chunk N]
//
// Files (little-endian fp32, parameters in --shapes order, unpadded and concatenated):
//   --shapes  text, one parameter per line: its dimensions separated by spaces ("64 80"); weight
//             decay applies to parameters of two or more dimensions, as in the GPT-2 grouping
//   --init    the initial parameters (P values, P = the total element count)
//   --grads   N x P gradients, step by step (multiplied by --grad-scale inside the optimizer)
//   --lrs     N learning rates (optional; default: --lr every step)
//   --out     written: N x P, the parameters after each step
// Hyperparameters start from OptimizerConfig::defaults_for(TYPE); --beta1 gives Adafactor its
// first moment. Parameters sit in make_param_layout's padded flat buffer, the store is cut into
// --chunk-element chunks (4096: chunks cut parameters), in memory or in a file under --nvme DIR.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/model/gpt2_params.h"
#include "runtime/offload/state_store.h"
#include "runtime/optim/optimizer.h"

namespace {

using zt::Result;
using zt::Status;

Result<std::vector<float>> read_floats(const std::string& path, size_t n) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return zt::make_error(zt::StatusCode::kNotFound, "cannot open '{}'", path);
  std::vector<float> out(n);
  f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n * 4));
  if (static_cast<size_t>(f.gcount()) != n * 4)
    return zt::make_error(zt::StatusCode::kInvalidArgument,
                          "'{}' holds {} bytes, expected {} ({} fp32 values)", path, f.gcount(),
                          n * 4, n);
  return out;
}

Result<std::vector<zt::ParamSpec>> read_shapes(const std::string& path) {
  std::ifstream f(path);
  if (!f) return zt::make_error(zt::StatusCode::kNotFound, "cannot open '{}'", path);
  std::vector<zt::ParamSpec> specs;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    std::istringstream in(line);
    zt::ParamSpec s;
    int64_t d;
    while (in >> d) {
      if (d <= 0)
        return zt::make_error(zt::StatusCode::kInvalidArgument, "{}:{}: dimension {} is not > 0",
                              path, lineno, d);
      s.shape.push_back(d);
    }
    if (s.shape.empty()) continue;
    s.name = "p" + std::to_string(specs.size());
    s.weight_decay = s.shape.size() >= 2;
    specs.push_back(std::move(s));
  }
  if (specs.empty())
    return zt::make_error(zt::StatusCode::kInvalidArgument, "'{}' lists no parameter", path);
  return specs;
}

Status run(const zt::OptimizerConfig& cfg, const std::string& shapes_path,
           const std::string& init_path, const std::string& grads_path, const std::string& lrs_path,
           const std::string& out_path, int steps, float grad_scale, const std::string& nvme_dir,
           int64_t chunk) {
  ZT_ASSIGN_OR_RETURN(std::vector<zt::ParamSpec> specs, read_shapes(shapes_path));
  const zt::ParamLayout layout = zt::make_param_layout(specs);
  const size_t P = static_cast<size_t>(layout.num_parameters);
  const size_t S = static_cast<size_t>(steps);
  ZT_ASSIGN_OR_RETURN(std::vector<float> init, read_floats(init_path, P));
  ZT_ASSIGN_OR_RETURN(std::vector<float> grads, read_floats(grads_path, P * S));
  std::vector<float> lrs(S, cfg.lr);
  if (!lrs_path.empty()) {
    ZT_ASSIGN_OR_RETURN(lrs, read_floats(lrs_path, S));
  }

  std::vector<zt::OptimSegment> segs;
  for (size_t p = 0; p < layout.entries.size(); ++p) {
    const zt::ParamEntry& e = layout.entries[p];
    segs.push_back({static_cast<int>(p), &e.spec, 0, e.offset, e.spec.numel()});
  }
  auto backend = zt::make_cpu_backend();
  auto comm = zt::make_local_communicator();
  zt::MemoryTracker tracker;
  auto created = zt::Optimizer::create(cfg, layout, segs, false, *backend);
  ZT_ASSIGN_OR_RETURN(std::unique_ptr<zt::Optimizer> opt, std::move(created));
  std::vector<zt::StoreArray> arrays = {{"master", 4}};
  for (const zt::StoreArray& a : opt->store_arrays()) arrays.push_back(a);
  constexpr zt::MemCategory kStates = zt::MemCategory::kOptimizerStates;
  auto made =
      nvme_dir.empty()
          ? zt::StateStore::in_memory(*backend, arrays, layout.total, chunk, kStates)
          : zt::StateStore::on_nvme(nvme_dir, 0, arrays, layout.total, chunk, 3, tracker, kStates);
  ZT_ASSIGN_OR_RETURN(std::unique_ptr<zt::StateStore> store, std::move(made));

  // Unpadded <-> the padded flat buffer.
  auto scatter = [&](const float* src, std::vector<float>& flat) {
    size_t at = 0;
    for (const zt::ParamEntry& e : layout.entries) {
      std::copy_n(src + at, e.spec.numel(), flat.begin() + e.offset);
      at += static_cast<size_t>(e.spec.numel());
    }
  };
  std::vector<float> flat(static_cast<size_t>(layout.total), 0.0f);
  scatter(init.data(), flat);
  ZT_RETURN_IF_ERROR(store->write(0, 0, layout.total, flat.data()));

  std::ofstream out(out_path, std::ios::binary);
  if (!out) return zt::make_error(zt::StatusCode::kNotFound, "cannot create '{}'", out_path);
  std::vector<float> gflat(static_cast<size_t>(layout.total), 0.0f);
  const uint32_t all = (1u << arrays.size()) - 1u;
  std::vector<void*> ptrs(arrays.size());
  for (int t = 1; t <= steps; ++t) {
    scatter(grads.data() + static_cast<size_t>(t - 1) * P, gflat);
    zt::OptimizerStepArgs args;
    args.lr = lrs[static_cast<size_t>(t - 1)];
    args.t = t;
    args.grad_scale = grad_scale;
    const zt::Tensor g(gflat.data(), zt::DType::kF32, {layout.total});
    ZT_RETURN_IF_ERROR(opt->prepare(args, g, *store, *comm));
    const std::vector<zt::OptimSegment>& sg = opt->segments();
    size_t first = 0;
    ZT_RETURN_IF_ERROR(store->stream(all, all, [&](int64_t begin, int64_t count, void* const* c) {
      const int64_t end = begin + count;
      while (first < sg.size() && sg[first].local + sg[first].count <= begin) ++first;
      for (size_t i = first; i < sg.size() && sg[i].local < end; ++i) {
        const zt::OptimSegment& s = sg[i];
        const int64_t lo = std::max(begin, s.local), hi = std::min(end, s.local + s.count);
        for (size_t k = 0; k < arrays.size(); ++k)
          ptrs[k] =
              static_cast<char*>(c[k]) + static_cast<size_t>(lo - begin) * arrays[k].elem_bytes;
        opt->update(s, lo, hi - lo, ptrs.data(), gflat.data() + lo, zt::DType::kF32, args);
      }
      return Status::ok();
    }));
    ZT_RETURN_IF_ERROR(store->read(0, 0, layout.total, flat.data()));
    for (const zt::ParamEntry& e : layout.entries)
      out.write(reinterpret_cast<const char*>(flat.data() + e.offset),
                static_cast<std::streamsize>(e.spec.numel() * 4));
  }
  out.close();
  if (!out) return zt::make_error(zt::StatusCode::kInternal, "writing '{}' failed", out_path);
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Runs N steps of a zerotrain Optimizer on parameters and gradients from files"};
  std::string type = "AdamW";
  app.add_option("--type", type, "optimizer.type (AdamW, Adam, AdamW8bit, Adafactor, SGD, Lion)");
  // Parsed after --type sets the defaults, so only the options given override them.
  float lr = 0, eps = 0, eps2 = 0, wd = 0, clip = 0, decay = 0, beta1 = 0, mom = 0, damp = 0;
  std::vector<float> betas;
  bool scale_parameter = true, relative_step = true, warmup_init = false, nesterov = false;
  auto* o_lr = app.add_option("--lr", lr);
  auto* o_betas = app.add_option("--betas", betas)->expected(2)->delimiter(',');
  auto* o_eps = app.add_option("--eps", eps, "Adam's eps, Adafactor's eps[0]");
  auto* o_eps2 = app.add_option("--eps2", eps2, "Adafactor's eps[1]");
  auto* o_wd = app.add_option("--weight-decay", wd);
  auto* o_clip = app.add_option("--clip-threshold", clip);
  auto* o_decay = app.add_option("--decay-rate", decay);
  auto* o_beta1 = app.add_option("--beta1", beta1, "Adafactor: use a first moment with this beta1");
  auto* o_sp = app.add_option("--scale-parameter", scale_parameter);
  auto* o_rs = app.add_option("--relative-step", relative_step);
  auto* o_wi = app.add_option("--warmup-init", warmup_init);
  auto* o_mom = app.add_option("--momentum", mom);
  auto* o_damp = app.add_option("--dampening", damp);
  auto* o_nest = app.add_option("--nesterov", nesterov);
  std::string shapes, init, grads, lrs, out, nvme;
  int steps = 0;
  float grad_scale = 1.0f;
  int64_t chunk = 4096;
  app.add_option("--shapes", shapes)->required();
  app.add_option("--init", init)->required();
  app.add_option("--grads", grads)->required();
  app.add_option("--lrs", lrs);
  app.add_option("--out", out)->required();
  app.add_option("--steps", steps)->required()->check(CLI::PositiveNumber);
  app.add_option("--grad-scale", grad_scale);
  app.add_option("--nvme", nvme, "keep the state in a file under this folder");
  app.add_option("--chunk", chunk, "store chunk in elements (rounded up to 4096)");
  CLI11_PARSE(app, argc, argv);

  zt::OptimizerConfig cfg = zt::OptimizerConfig::defaults_for(type);
  if (*o_lr) cfg.lr = lr;
  if (*o_betas) {
    cfg.beta1 = betas[0];
    cfg.beta2 = betas[1];
  }
  if (*o_eps) cfg.eps = eps;
  if (*o_eps2) cfg.eps2 = eps2;
  if (*o_wd) cfg.weight_decay = wd;
  if (*o_clip) cfg.clip_threshold = clip;
  if (*o_decay) cfg.decay_rate = decay;
  if (*o_beta1) {
    cfg.beta1 = beta1;
    cfg.use_first_moment = true;
  }
  if (*o_sp) cfg.scale_parameter = scale_parameter;
  if (*o_rs) cfg.relative_step = relative_step;
  if (*o_wi) cfg.warmup_init = warmup_init;
  if (*o_mom) cfg.momentum = mom;
  if (*o_damp) cfg.dampening = damp;
  if (*o_nest) cfg.nesterov = nesterov;

  try {
    const Status s = run(cfg, shapes, init, grads, lrs, out, steps, grad_scale, nvme, chunk);
    if (!s.is_ok()) {
      std::cerr << "optimizer_driver: " << s.to_string() << "\n";
      return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "optimizer_driver: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
