#include "runtime/checkpoint/export.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/model/gpt2_hf.h"
#include "runtime/model/gpt2_params.h"

namespace zt {

namespace fs = std::filesystem;

namespace {

// One shard file: its header (validated by SafetensorsReader; the data is never touched through
// the mapping) and a descriptor for positioned reads.
struct ShardFile {
  std::optional<SafetensorsReader> header;
  int fd = -1;
  ~ShardFile() {
    if (fd >= 0) ::close(fd);
  }
};

Status pread_all(int fd, void* dst, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return make_error(StatusCode::kIoError, "reading '{}' at byte {}: {}", path, offset,
                        got < 0 ? std::strerror(errno) : "unexpected end of file");
    p += got;
    n -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return Status::ok();
}

}  // namespace

Result<ExportStats> export_checkpoint(const std::string& dir, const std::string& out, DType dtype) {
  ZT_ASSIGN_OR_RETURN(Manifest m, read_manifest(dir));
  ZT_RETURN_IF_ERROR(verify_checkpoint_files(dir, m));
  const std::string& master_state = m.optimizer_states.at(0);
  const ParamLayout layout = make_param_layout(gpt2_param_inventory(m.model));
  ZT_RETURN_IF_ERROR(check_pieces_tile(m, layout, dir));

  std::vector<ShardFile> files(m.shards.size());
  auto open_shard = [&](size_t s) -> Result<ShardFile*> {
    ShardFile& f = files[s];
    if (f.fd < 0) {
      ZT_ASSIGN_OR_RETURN(const std::string path, check_shard_file(dir, m.shards[s]));
      ZT_ASSIGN_OR_RETURN(SafetensorsReader r, SafetensorsReader::open(path));
      f.header.emplace(std::move(r));
      f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (f.fd < 0)
        return make_error(StatusCode::kIoError, "cannot open '{}': {}", path, std::strerror(errno));
    }
    return &f;
  };
  struct Source {
    size_t shard;
    int64_t begin, count;
  };
  std::map<std::string, std::vector<Source>> sources;
  for (size_t s = 0; s < m.shards.size(); ++s)
    for (const ParamRange& p : m.shards[s].pieces)
      sources[p.param].push_back({s, p.begin, p.count});

  ExportStats stats;
  auto fill = [&](const ParamEntry& e, float* values) -> Status {
    int64_t covered = 0;
    for (const Source& src : sources[e.spec.name]) {
      ZT_ASSIGN_OR_RETURN(ShardFile * f, open_shard(src.shard));
      const std::string tname = master_state + "/" + e.spec.name;
      const TensorInfo* t = f->header->find(tname);
      if (!t || t->dtype != DType::kF32 || t->shape != std::vector<int64_t>{src.count})
        return make_error(StatusCode::kDataError,
                          "checkpoint file '{}': tensor '{}' is missing or not F32 [{}]",
                          f->header->path(), tname, src.count);
      if (src.begin + src.count > e.spec.numel())
        return make_error(StatusCode::kDataError, "'{}': piece [{}, {}) of '{}' is out of range",
                          f->header->path(), src.begin, src.begin + src.count, e.spec.name);
      ZT_RETURN_IF_ERROR(pread_all(f->fd, values + src.begin,
                                   static_cast<size_t>(src.count) * sizeof(float), t->file_offset,
                                   f->header->path()));
      covered += src.count;
    }
    if (covered != e.spec.numel())
      return make_error(StatusCode::kDataError,
                        "{}: the shards hold {} of the {} elements of '{}': the manifest is "
                        "inconsistent",
                        dir, covered, e.spec.numel(), e.spec.name);
    ++stats.tensors;
    stats.parameters += e.spec.numel();
    stats.largest_tensor_bytes = std::max<int64_t>(stats.largest_tensor_bytes, e.spec.numel() * 4);
    return Status::ok();
  };
  ZT_RETURN_IF_ERROR(export_gpt2_safetensors(out, layout, fill, dtype));
  std::error_code ec;
  stats.file_bytes = fs::file_size(out, ec);
  return stats;
}

}  // namespace zt
