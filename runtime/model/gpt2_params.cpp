#include "runtime/model/gpt2_params.h"

#include <cmath>

#include <fmt/format.h>

namespace zt {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const ParamEntry* ParamLayout::find(const std::string& name) const {
  for (const ParamEntry& e : entries)
    if (e.spec.name == name) return &e;
  return nullptr;
}

std::vector<ParamSpec> gpt2_param_inventory(const ModelConfig& cfg) {
  const int64_t V = cfg.vocab_size, C = cfg.n_embd, T = cfg.block_size;
  const float std_base = 0.02f;
  // GPT-2 scales the residual projections by 1/sqrt(2 n_layer): each block adds two of them.
  const float std_resid = std_base / std::sqrt(2.0f * static_cast<float>(cfg.n_layer));
  std::vector<ParamSpec> p;
  auto weight = [&](std::string name, std::vector<int64_t> shape, float stdv, bool conv1d) {
    p.push_back({std::move(name), std::move(shape), true, conv1d, ParamInit::kNormal, stdv});
  };
  auto vec = [&](std::string name, int64_t n, ParamInit init) {
    p.push_back({std::move(name), {n}, false, false, init, 0.0f});
  };
  weight("wte.weight", {V, C}, std_base, false);
  weight("wpe.weight", {T, C}, std_base, false);
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string h = fmt::format("h.{}.", l);
    vec(h + "ln_1.weight", C, ParamInit::kOnes);
    vec(h + "ln_1.bias", C, ParamInit::kZeros);
    weight(h + "attn.c_attn.weight", {3 * C, C}, std_base, true);
    vec(h + "attn.c_attn.bias", 3 * C, ParamInit::kZeros);
    weight(h + "attn.c_proj.weight", {C, C}, std_resid, true);
    vec(h + "attn.c_proj.bias", C, ParamInit::kZeros);
    vec(h + "ln_2.weight", C, ParamInit::kOnes);
    vec(h + "ln_2.bias", C, ParamInit::kZeros);
    weight(h + "mlp.c_fc.weight", {4 * C, C}, std_base, true);
    vec(h + "mlp.c_fc.bias", 4 * C, ParamInit::kZeros);
    weight(h + "mlp.c_proj.weight", {C, 4 * C}, std_resid, true);
    vec(h + "mlp.c_proj.bias", C, ParamInit::kZeros);
  }
  vec("ln_f.weight", C, ParamInit::kOnes);
  vec("ln_f.bias", C, ParamInit::kZeros);
  return p;
}

ParamLayout make_param_layout(const std::vector<ParamSpec>& inventory) {
  ParamLayout layout;
  int64_t off = 0;
  for (const ParamSpec& s : inventory) {
    layout.entries.push_back({s, off});
    layout.num_parameters += s.numel();
    off += (s.numel() + ParamLayout::kParamAlignment - 1) / ParamLayout::kParamAlignment *
           ParamLayout::kParamAlignment;
  }
  layout.total = off;
  return layout;
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// Uniform in (0, 1], from the top 53 bits.
double unit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53; }

}  // namespace

void init_param_range(const ParamSpec& spec, uint64_t seed, int64_t begin, int64_t count,
                      float* out) {
  if (spec.init != ParamInit::kNormal) {
    const float v = spec.init == ParamInit::kOnes ? 1.0f : 0.0f;
    for (int64_t i = 0; i < count; ++i) out[i] = v;
    return;
  }
  // Counter-based: element i's normal comes from a Box-Muller pair keyed by (seed, name, i / 2), so
  // it depends on nothing but the element's identity.
  const uint64_t key = splitmix64(seed ^ fnv1a(spec.name));
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t idx = static_cast<uint64_t>(begin + i);
    const uint64_t pair = idx >> 1;
    const double u1 = unit(splitmix64(key ^ splitmix64(2 * pair)));
    const double u2 = unit(splitmix64(key ^ splitmix64(2 * pair + 1)));
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double z = (idx & 1) ? r * std::sin(2.0 * M_PI * u2) : r * std::cos(2.0 * M_PI * u2);
    out[i] = static_cast<float>(z * spec.init_std);
  }
}

}  // namespace zt
