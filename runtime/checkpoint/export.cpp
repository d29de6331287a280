#include "runtime/checkpoint/export.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/shard_io.h"
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
  ZT_ASSIGN_OR_RETURN(const PieceIndex index, index_pieces(m, layout, dir));

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

  ExportStats stats;
  // The pieces tile each parameter (index_pieces): reading them all fills it.
  auto fill = [&](const ParamEntry& e, float* values) -> Status {
    for (const PieceSource& src : index.at(e.spec.name)) {
      ZT_ASSIGN_OR_RETURN(ShardFile * f, open_shard(src.shard));
      ZT_ASSIGN_OR_RETURN(const TensorInfo* t,
                          find_state_tensor(*f->header, master_state, e.spec.name, src.count));
      ZT_RETURN_IF_ERROR(pread_all(f->fd, values + src.begin,
                                   static_cast<size_t>(src.count) * sizeof(float), t->file_offset,
                                   f->header->path()));
    }
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
