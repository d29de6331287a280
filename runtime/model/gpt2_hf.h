// Hugging Face GPT-2 safetensors <-> zerotrain's flat fp32 parameters.
// Names are HF's (`wte.weight`, `h.N.attn.c_attn.weight`, ...), optionally prefixed `transformer.`;
// Conv1D weights are stored (in, out) in the file and transposed to (out, in) here; the attention
// mask buffers (`h.N.attn.bias`, `h.N.attn.masked_bias`) and a separate `lm_head.weight` (tied to
// wte) are ignored. F32, BF16 and F16 files load.
#pragma once

#include <functional>
#include <string>

#include "runtime/core/dtype.h"
#include "runtime/core/status.h"
#include "runtime/model/gpt2_params.h"

namespace zt {

// Fills `master` (layout.total fp32 elements) from `path`. Every parameter must be present with
// the shape the config implies; errors name the file, the tensor and both shapes.
Status load_gpt2_safetensors(const std::string& path, const ParamLayout& layout, float* master);

// Writes `master` as a HF GPT-2 file in `dtype`, one tensor at a time (memory stays near the
// largest tensor). The file appears under `path` only when complete.
Status export_gpt2_safetensors(const std::string& path, const ParamLayout& layout,
                               const float* master, DType dtype);

// The same, with each parameter's fp32 values (internal layout, spec.numel() of them) produced on
// demand by `fill`, so the whole model never needs to be in memory: peak memory is about twice the
// largest tensor (its values and the transposed copy).
using ParamSource = std::function<Status(const ParamEntry& entry, float* out)>;
Status export_gpt2_safetensors(const std::string& path, const ParamLayout& layout,
                               const ParamSource& fill, DType dtype);

}  // namespace zt
