// Reading and writing the Hugging Face safetensors format, the interchange format for model weights
// (`model.init_from`, export).
//
// Layout of a file: an 8-byte little-endian unsigned header length N; N bytes of UTF-8 JSON mapping
// each tensor name to {"dtype": "F32" | "BF16" | "F16" | "I64" | ..., "shape": [d0, d1, ...],
// "data_offsets": [begin, end]} plus an optional "__metadata__": {string: string}; then the tensor
// bytes, little-endian and tightly packed, with offsets relative to the first byte after the
// header.
//
// SafetensorsReader memory-maps the file and validates the whole header before handing anything
// out, so a truncated or malformed file is an error at open(), never a crash later.
// SafetensorsWriter streams tensors one at a time into `path + ".tmp"` and renames it into place
// only in finish(), so the final name never holds a half-written file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <xxhash.h>

#include "runtime/core/dtype.h"
#include "runtime/core/status.h"

namespace zt {

// One tensor as described by a file's header.
struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as spelled in the file: "F32", "BF16", "F16", "I64", "U8", ...
  std::optional<DType> dtype;  // set for F32, BF16 and F16, the dtypes read_as() can convert
  std::vector<int64_t> shape;  // empty for a scalar
  int64_t numel = 0;           // product of shape (1 for a scalar)
  std::span<const std::byte> bytes;  // points into the reader's mapping; valid while it lives
  uint64_t file_offset = 0;          // where `bytes` start in the file (for pread)
};

// Read-only view of a safetensors file. Owns the memory mapping (unmapped on destruction); movable,
// not copyable. TensorInfo pointers and byte spans stay valid across moves of the reader. As with
// any mapping, the file must not be truncated while a reader has it open (access would raise
// SIGBUS); the writer never does that, since it replaces files by rename.
class SafetensorsReader {
 public:
  // Maps `path` and validates the header: length within the file, valid JSON, every entry well
  // formed, dtype known, byte size == numel * dtype size, offsets inside the data section and not
  // overlapping. Errors name the file and, where there is one, the tensor.
  static Result<SafetensorsReader> open(const std::string& path);

  SafetensorsReader(SafetensorsReader&& other) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&& other) noexcept;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;
  ~SafetensorsReader();

  const std::string& path() const { return path_; }
  // Tensor names in the order their data lies in the file.
  const std::vector<std::string>& names() const { return names_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* find(std::string_view name) const;
  // The "__metadata__" section (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Converts tensor `name` into `count` elements of `dst_type` at `dst` (round to nearest even when
  // narrowing). Errors: no such tensor (kNotFound), a dtype that is not F32/BF16/F16
  // (kUnsupported), `count` != the tensor's element count (kInvalidArgument).
  Status read_as(std::string_view name, DType dst_type, void* dst, size_t count) const;

 private:
  SafetensorsReader() = default;
  void release();

  std::string path_;
  void* map_ = nullptr;  // whole-file mapping, or nullptr
  size_t map_size_ = 0;
  // Moving a vector keeps its heap buffer, so the TensorInfo pointers find() returns survive a
  // move of the reader.
  std::vector<TensorInfo> tensors_;  // in data order
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

// What a writer will store under one name.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;  // dtype in the file; write_tensor() converts to it
  std::vector<int64_t> shape;
};

// Streaming writer. The header (names in the order given, HF-style space padding to a multiple of 8
// bytes) is fixed at create(); write_tensor() must then be called once per spec, in that order, and
// finish() publishes the file. Memory use stays at one bounded conversion buffer, whatever the size
// of the tensors. Destroying an unfinished writer removes the .tmp file. Movable, not copyable.
// The writer hashes every byte it writes (XXH3-64), so a checkpoint gets its file's checksum
// without reading the file back.
class SafetensorsWriter {
 public:
  static Result<SafetensorsWriter> create(const std::string& path, std::vector<TensorSpec> specs,
                                          std::map<std::string, std::string> metadata = {});

  SafetensorsWriter(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();

  // Appends the next tensor: `data` holds numel elements of `src_type` (may be nullptr when numel
  // is 0), converted to the spec's dtype. Errors when `name` is not the next spec in order. After
  // any I/O error the writer is dead: the .tmp is removed and every later call fails.
  Status write_tensor(std::string_view name, const void* data, DType src_type);
  // Appends the next tensor in its spec's dtype from a producer: fill(offset, count, out) writes
  // elements [offset, offset + count) into `out`, `chunk` elements at most at a time. For tensors
  // that are not in memory as a whole (state streamed from NVMe).
  using Producer = std::function<Status(size_t offset, size_t count, void* out)>;
  Status write_tensor_from(std::string_view name, const Producer& fill, size_t chunk);

  // Checks that every tensor was written, fsyncs, renames `path.tmp` to `path` and fsyncs the
  // directory. On failure the .tmp is removed and `path` is untouched.
  Status finish();

  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_path_; }
  // Bytes written so far and their XXH3-64; after finish(), those of the whole file.
  uint64_t bytes_written() const { return bytes_written_; }
  uint64_t xxh3() const;

 private:
  SafetensorsWriter() = default;
  // The spec of the next tensor once `name` is it and the writer can take it.
  Result<const TensorSpec*> next_spec(std::string_view name);
  Status write_all(const void* data, size_t size);
  Status fail(Status status);  // closes and removes the .tmp, then returns `status`
  void abandon();

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  size_t next_ = 0;
  bool finished_ = false;
  bool failed_ = false;
  uint64_t bytes_written_ = 0;
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> hash_{nullptr, XXH3_freeState};
};

// XXH3-64 of a whole file, read in bounded chunks. Errors name the file.
Result<uint64_t> xxh3_file(const std::string& path, uint64_t* size = nullptr);

}  // namespace zt
