#include "ctl/estimate_cmd.h"

#include <algorithm>
#include <map>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/model/gpt2_params.h"
#include "runtime/plan/auto_plan.h"

namespace zt::ctl {
namespace {

nlohmann::json category_json(const CategoryBytes& b) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t k = 0; k < kNumMemCategories; ++k)
    j[mem_category_name(static_cast<MemCategory>(k))] = b[k];
  return j;
}

nlohmann::json choice_json(const PlanChoice& c) {
  return {{"stage", c.stage},
          {"offload_optimizer", std::string(offload_device_name(c.offload_optimizer))},
          {"offload_param", std::string(offload_device_name(c.offload_param))},
          {"policy", std::string(checkpoint_policy_name(c.policy))},
          {"every_n", c.every_n},
          {"micro_batch", c.micro_batch},
          {"accumulation", c.accumulation}};
}

std::string offload_text(const PlanChoice& c) {
  if (c.offload_optimizer == OffloadDevice::kNone) return "-";
  std::string s = fmt::format("opt:{}", offload_device_name(c.offload_optimizer));
  if (c.offload_param != OffloadDevice::kNone)
    s += fmt::format("+par:{}", offload_device_name(c.offload_param));
  return s;
}

std::string policy_text(const PlanChoice& c) {
  if (c.policy == CheckpointPolicy::kEveryN) return fmt::format("every_{}", c.every_n);
  return std::string(checkpoint_policy_name(c.policy));
}

}  // namespace

int run_estimate(const EstimateArgs& args, std::ostream& out, std::ostream& err) {
  auto fail = [&](const std::string& msg) {
    err << "ztctl estimate: " << msg << "\n";
    return 1;
  };
  if (args.world < 1) return fail(fmt::format("--world must be >= 1, got {}", args.world));
  auto loaded = load_job_config(args.config_path);
  if (!loaded.is_ok()) return fail(loaded.status().to_string());
  JobConfig cfg = std::move(loaded).value();
  if (Status st = resolve_batch_sizes(cfg, args.world); !st.is_ok()) return fail(st.to_string());

  MemoryBudget budget;
  budget.source = "--device-mem";
  if (!args.device_mem.empty()) {
    auto b = parse_byte_size(args.device_mem, "--device-mem");
    if (!b.is_ok()) return fail(b.status().message());
    budget.device_bytes = *b;
  } else if (cfg.memory_budget > 0) {
    budget.device_bytes = cfg.memory_budget;
    budget.source = "memory_budget in the config";
  }
  if (!args.host_mem.empty()) {
    auto b = parse_byte_size(args.host_mem, "--host-mem");
    if (!b.is_ok()) return fail(b.status().message());
    budget.host_bytes = *b;
  }
  EstimateOptions opt;
  opt.cpu_threads = args.cpu_threads;
  auto evaluated = evaluate_plans(cfg, args.world, budget, opt, /*every_combination=*/true);
  if (!evaluated.is_ok()) return fail(evaluated.status().to_string());
  const std::vector<PlanCandidate>& plans = evaluated.value();
  const int64_t params = make_param_layout(gpt2_param_inventory(cfg.model)).num_parameters;
  const bool budgeted = budget.device_bytes > 0 || budget.host_bytes > 0;

  // What `auto` would do with the config's own `auto` keys (or, without any, the fastest row).
  std::optional<AutoDecision> decision;
  std::string auto_error;
  if (cfg.autos.any()) {
    JobConfig copy = cfg;
    // --device-mem wins over memory_budget, for the table and the choice alike.
    if (!args.device_mem.empty()) copy.memory_budget = 0;
    MemoryBudget b = budget;
    auto d = resolve_auto(copy, args.world, b, opt);
    if (d.is_ok())
      decision = std::move(d).value();
    else
      auto_error = d.status().message();
  }
  const auto fastest_fit =
      std::find_if(plans.begin(), plans.end(), [](const PlanCandidate& c) { return c.fits; });

  if (args.json) {
    nlohmann::json j;
    j["config"] = args.config_path;
    j["world"] = args.world;
    j["parameters"] = params;
    j["budget"] = {{"device_bytes", budget.device_bytes},
                   {"host_bytes", budget.host_bytes},
                   {"margin", budget.margin},
                   {"source", budget.device_bytes > 0 ? budget.source : ""}};
    nlohmann::json rows = nlohmann::json::array();
    for (const PlanCandidate& c : plans) {
      nlohmann::json r = choice_json(c.choice);
      r["device"] = category_json(c.estimate.device);
      r["host"] = category_json(c.estimate.host);
      r["nvme_bytes"] = c.estimate.nvme_bytes;
      r["device_total"] = c.estimate.device_total();
      r["host_total"] = c.estimate.host_total();
      r["needed"] = c.device_needed;
      r["host_needed"] = c.host_needed;
      r["relative_time"] = c.relative_time;
      r["fits"] = c.fits;
      rows.push_back(std::move(r));
    }
    j["rows"] = std::move(rows);
    if (cfg.autos.any()) {
      j["auto"] = decision ? nlohmann::json{{"choice", choice_json(decision->chosen.choice)},
                                            {"reasons", decision->reasons}}
                           : nlohmann::json{{"error", auto_error}};
    }
    out << j.dump(2) << "\n";
    return 0;
  }

  // One row per stage x offload x policy: the largest micro-batch that fits (or, when none does
  // or no budget is known, the largest tried).
  std::map<std::tuple<int, int, int, int>, const PlanCandidate*> best;
  for (const PlanCandidate& c : plans) {
    const auto key = std::make_tuple(c.choice.stage, static_cast<int>(c.choice.offload_optimizer),
                                     static_cast<int>(c.choice.offload_param),
                                     static_cast<int>(c.choice.policy));
    const PlanCandidate*& slot = best[key];
    const auto better = [&](const PlanCandidate& a, const PlanCandidate& b) {
      if (a.fits != b.fits) return a.fits;
      return a.choice.micro_batch > b.choice.micro_batch;
    };
    if (slot == nullptr || better(c, *slot)) slot = &c;
  }
  int64_t largest = 0;
  for (const auto& [key, c] : best) largest = std::max(largest, c->device_needed);
  const bool gib = largest >= (int64_t{10} << 30);
  const double unit = gib ? 1073741824.0 : 1048576.0;
  const char* uname = gib ? "GiB" : "MiB";
  auto num = [&](int64_t b) { return fmt::format("{:.1f}", static_cast<double>(b) / unit); };

  out << fmt::format("{}: GPT-2 {:.2f}M parameters, {} layers, width {}, {} ranks, {} backend\n",
                     args.config_path, static_cast<double>(params) / 1e6, cfg.model.n_layer,
                     cfg.model.n_embd, args.world,
                     cfg.backend == BackendKind::kCuda ? "cuda" : "cpu");
  if (budget.device_bytes > 0)
    out << fmt::format("budget per rank: {} ({}), {:.0f}% kept free{}\n",
                       bytes_text(budget.device_bytes), budget.source, budget.margin * 100,
                       budget.host_bytes > 0 ? "; host " + bytes_text(budget.host_bytes) : "");
  else if (budget.host_bytes > 0)
    out << fmt::format("budget per rank: host {}\n", bytes_text(budget.host_bytes));
  out << fmt::format(
      "per-rank peak {} by category ({} memory{}); time: relative step time "
      "(Note [auto plan])\n\n",
      uname, cfg.backend == BackendKind::kCuda ? "device" : "host",
      cfg.backend == BackendKind::kCuda ? "; host: offloaded state in host memory"
                                        : ", offloaded state included");
  out << fmt::format(
      "{:>5} {:<16} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} "
      "{:>5} {}\n",
      "stage", "offload", "policy", "micro", "params", "grads", "optim", "activ", "comm",
      "workspace", "total", "host", "time", budgeted ? "fits" : "");
  for (const auto& [key, c] : best) {
    const MemoryEstimate& e = c->estimate;
    const bool cpu = cfg.backend == BackendKind::kCpu;
    // On the CPU backend host memory is the compute memory: show the categories together.
    CategoryBytes shown = e.device;
    if (cpu)
      for (size_t k = 0; k < kNumMemCategories; ++k) shown[k] += e.host[k];
    out << fmt::format(
        "{:>5} {:<16} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>5.2f} {}\n",
        c->choice.stage, offload_text(c->choice), policy_text(c->choice),
        fmt::format("{}x{}", c->choice.micro_batch, c->choice.accumulation), num(shown[0]),
        num(shown[1]), num(shown[2]), num(shown[3]), num(shown[4]), num(shown[5]),
        num(c->device_needed), cpu ? "-" : num(e.host_total()), c->relative_time,
        budgeted ? (c->fits ? "yes" : "no") : "");
  }
  out << "\n";
  if (budgeted) {
    if (fastest_fit != plans.end())
      out << "fastest that fits: " << fastest_fit->choice.describe() << "\n";
    else
      out << "nothing fits the budget\n";
  }
  if (cfg.autos.any()) {
    if (decision) {
      for (const std::string& line : decision->reasons) out << line << "\n";
    } else {
      out << "auto: " << auto_error << "\n";
    }
  }
  return 0;
}

}  // namespace zt::ctl
