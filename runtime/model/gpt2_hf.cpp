#include "runtime/model/gpt2_hf.h"

#include <algorithm>
#include <vector>

#include "runtime/checkpoint/safetensors.h"

namespace zt {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Shape of a parameter as HF stores it.
std::vector<int64_t> hf_shape(const ParamSpec& spec) {
  if (spec.hf_transposed) return {spec.shape[1], spec.shape[0]};
  return spec.shape;
}

void transpose(const float* src, float* dst, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

}  // namespace

Status load_gpt2_safetensors(const std::string& path, const ParamLayout& layout, float* master) {
  ZT_ASSIGN_OR_RETURN(SafetensorsReader reader, SafetensorsReader::open(path));
  std::vector<float> staging;
  for (const ParamEntry& e : layout.entries) {
    const ParamSpec& spec = e.spec;
    std::string name = spec.name;
    const TensorInfo* info = reader.find(name);
    if (!info) {
      name = "transformer." + spec.name;
      info = reader.find(name);
    }
    if (!info)
      return make_error(StatusCode::kNotFound,
                        "{}: no tensor '{}' (nor 'transformer.{}'): not a GPT-2 checkpoint of this "
                        "shape?",
                        path, spec.name, spec.name);
    const std::vector<int64_t> want = hf_shape(spec);
    if (info->shape != want)
      return make_error(StatusCode::kInvalidArgument,
                        "{}: tensor '{}' has shape {} but the config's model needs {}; check "
                        "model.vocab_size/block_size/n_embd/n_layer",
                        path, name, shape_str(info->shape), shape_str(want));
    float* dst = master + e.offset;
    if (spec.hf_transposed) {
      staging.resize(static_cast<size_t>(spec.numel()));
      ZT_RETURN_IF_ERROR(reader.read_as(name, DType::kF32, staging.data(), staging.size()));
      transpose(staging.data(), dst, want[0], want[1]);
    } else {
      ZT_RETURN_IF_ERROR(reader.read_as(name, DType::kF32, dst, static_cast<size_t>(spec.numel())));
    }
  }
  return Status::ok();
}

Status export_gpt2_safetensors(const std::string& path, const ParamLayout& layout,
                               const float* master, DType dtype) {
  return export_gpt2_safetensors(
      path, layout,
      [master](const ParamEntry& e, float* out) {
        std::copy_n(master + e.offset, e.spec.numel(), out);
        return Status::ok();
      },
      dtype);
}

Status export_gpt2_safetensors(const std::string& path, const ParamLayout& layout,
                               const ParamSource& fill, DType dtype) {
  std::vector<TensorSpec> specs;
  for (const ParamEntry& e : layout.entries)
    specs.push_back({e.spec.name, dtype, hf_shape(e.spec)});
  ZT_ASSIGN_OR_RETURN(SafetensorsWriter writer,
                      SafetensorsWriter::create(path, std::move(specs), {{"format", "pt"}}));
  std::vector<float> values, staging;
  for (const ParamEntry& e : layout.entries) {
    values.assign(static_cast<size_t>(e.spec.numel()), 0.0f);
    ZT_RETURN_IF_ERROR(fill(e, values.data()));
    const float* src = values.data();
    if (e.spec.hf_transposed) {
      staging.resize(values.size());
      transpose(values.data(), staging.data(), e.spec.shape[0], e.spec.shape[1]);
      src = staging.data();
    }
    ZT_RETURN_IF_ERROR(writer.write_tensor(e.spec.name, src, DType::kF32));
  }
  return writer.finish();
}

}  // namespace zt
