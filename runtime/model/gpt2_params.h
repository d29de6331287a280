// The GPT-2 parameter inventory: every parameter's name (Hugging Face GPT-2 names without the
// "transformer." prefix), shape in zerotrain's internal layout, weight-decay class and initialiser.
// The coordinator's planner and the worker's model both build it from the same ModelConfig with
// this one function, so they cannot disagree.
//
// Internal layout: linear weights are (out, in) as in torch.nn.Linear; Hugging Face stores GPT-2's
// Conv1D weights as (in, out), so loading and exporting transpose them (see gpt2_hf.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"

namespace zt {

enum class ParamInit { kNormal, kZeros, kOnes };

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;  // internal layout
  bool weight_decay = false;   // two or more dimensions
  bool hf_transposed = false;  // Conv1D weight: stored transposed in Hugging Face files
  ParamInit init = ParamInit::kZeros;
  float init_std = 0.0f;
  int64_t numel() const;
};

struct ParamEntry {
  ParamSpec spec;
  int64_t offset = 0;  // element offset in the flat buffer
};

// Parameters in a flat buffer: each tensor starts at a multiple of `kParamAlignment` elements
// (64 bytes for fp32) so every view is aligned for vector loads.
struct ParamLayout {
  static constexpr int64_t kParamAlignment = 16;
  std::vector<ParamEntry> entries;
  int64_t total = 0;           // padded element count of the flat buffer
  int64_t num_parameters = 0;  // unpadded count
  const ParamEntry* find(const std::string& name) const;
};

std::vector<ParamSpec> gpt2_param_inventory(const ModelConfig& cfg);
ParamLayout make_param_layout(const std::vector<ParamSpec>& inventory);

// GPT-2 initialisation, deterministic from (seed, parameter name, element index) alone: any rank
// can fill any range of any parameter and get the same values, however the model is sharded.
// Fills `count` fp32 elements starting at element `begin` of `spec`.
void init_param_range(const ParamSpec& spec, uint64_t seed, int64_t begin, int64_t count,
                      float* out);

}  // namespace zt
