#include "runtime/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace zt {

// The format stores everything little-endian and we hand out the mapped bytes as-is.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

// Same limit as the Hugging Face implementation: a bigger header is a corrupt length field, and
// refusing it keeps a bad file from making us parse gigabytes of garbage.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

// Elements converted per write() when the file dtype differs from the caller's: bounds the writer's
// memory at 1 MiB whatever the tensor size.
constexpr size_t kConvertChunk = size_t{1} << 18;

struct StDType {
  const char* name;
  size_t size;
};

// Every byte-sized dtype of the safetensors spec. The sub-byte ones (F4, F6_*) are left out: their
// byte size is not numel * size, and nothing zerotrain loads uses them.
constexpr StDType kStDTypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
    {"F32", 4},  {"C64", 8}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

std::string known_st_dtypes() {
  std::string out;
  for (const StDType& d : kStDTypes) out += out.empty() ? d.name : std::string(", ") + d.name;
  return out;
}

const StDType* find_st_dtype(std::string_view name) {
  for (const StDType& d : kStDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const char* st_dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
  }
  return "?";
}

std::optional<DType> zt_dtype_of(std::string_view st_name) {
  if (st_name == "F32") return DType::kF32;
  if (st_name == "BF16") return DType::kBF16;
  if (st_name == "F16") return DType::kF16;
  return std::nullopt;
}

std::string errno_text(int err) { return std::strerror(err); }

// numel of `shape`, or nullopt on a negative dimension or int64 overflow.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Reads a non-negative JSON integer; floats, negatives and non-numbers are rejected.
bool get_u64(const nlohmann::json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// SafetensorsReader

SafetensorsReader::SafetensorsReader(SafetensorsReader&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      names_(std::move(other.names_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    names_ = std::move(other.names_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsReader::~SafetensorsReader() { release(); }

void SafetensorsReader::release() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

Result<SafetensorsReader> SafetensorsReader::open(const std::string& path) {
  SafetensorsReader r;
  r.path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return make_error(err == ENOENT ? StatusCode::kNotFound : StatusCode::kIoError,
                      "cannot open safetensors file '{}': {}", path, errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return make_error(StatusCode::kIoError, "cannot stat '{}': {}", path, errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(StatusCode::kInvalidArgument, "'{}' is not a regular file", path);
  }
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return make_error(StatusCode::kDataError,
                      "'{}' is truncated: {} bytes, too short to hold the 8-byte header length of "
                      "a safetensors file",
                      path, file_size);
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return make_error(StatusCode::kIoError, "cannot mmap '{}' ({} bytes): {}", path, file_size,
                      errno_text(map_err));
  }
  r.map_ = map;
  r.map_size_ = file_size;
  const auto* base = static_cast<const std::byte*>(map);

  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);
  if (header_len > file_size - 8) {
    return make_error(
        StatusCode::kDataError,
        "'{}': header length {} runs past the end of the file ({} bytes); the file is "
        "truncated or not safetensors",
        path, header_len, file_size);
  }
  if (header_len > kMaxHeaderSize) {
    return make_error(StatusCode::kDataError,
                      "'{}': header length {} exceeds the {}-byte limit; the file is corrupt", path,
                      header_len, kMaxHeaderSize);
  }
  const auto* header_begin = reinterpret_cast<const char*>(base + 8);
  const std::byte* data_base = base + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  // nlohmann keeps the last of duplicated keys silently; a tensor listed twice is a corrupt header,
  // so the callback catches top-level duplicates while parsing.
  std::unordered_set<std::string> seen_keys;
  std::string duplicate;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        header_begin, header_begin + header_len,
        [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string() &&
              !seen_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
            duplicate = parsed.get<std::string>();
          }
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    return make_error(StatusCode::kDataError, "'{}': header ({} bytes) is not valid JSON: {}", path,
                      header_len, e.what());
  }
  if (!header.is_object()) {
    return make_error(StatusCode::kDataError, "'{}': header is JSON but not an object ({})", path,
                      header.type_name());
  }
  if (!duplicate.empty()) {
    return make_error(StatusCode::kDataError, "'{}': tensor '{}' is listed twice in the header",
                      path, duplicate);
  }

  std::vector<TensorInfo> tensors;
  std::vector<std::pair<uint64_t, uint64_t>> offsets;  // parallel to `tensors`
  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      if (!entry.is_object()) {
        return make_error(StatusCode::kDataError, "'{}': __metadata__ must be an object, not {}",
                          path, entry.type_name());
      }
      for (const auto& [mk, mv] : entry.items()) {
        if (!mv.is_string()) {
          return make_error(StatusCode::kDataError,
                            "'{}': __metadata__ value of '{}' must be a string, not {}", path, mk,
                            mv.type_name());
        }
        r.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    auto bad = [&](std::string_view what) {
      return make_error(StatusCode::kDataError, "'{}': tensor '{}': {}", path, key, what);
    };
    if (!entry.is_object()) return bad("header entry is not an object");

    TensorInfo info;
    info.name = key;
    const auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) return bad("missing or non-string \"dtype\"");
    info.dtype_name = dt->get<std::string>();
    const StDType* st_dtype = find_st_dtype(info.dtype_name);
    if (st_dtype == nullptr) {
      return bad(fmt::format("unknown dtype '{}' (known: {})", info.dtype_name, known_st_dtypes()));
    }
    info.dtype = zt_dtype_of(info.dtype_name);

    const auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array()) return bad("missing or non-array \"shape\"");
    for (const auto& d : *shape) {
      uint64_t v = 0;
      if (!get_u64(d, &v) || v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad(fmt::format("shape {} has a dimension that is not a non-negative integer",
                               shape->dump()));
      }
      info.shape.push_back(static_cast<int64_t>(v));
    }
    const std::optional<int64_t> numel = checked_numel(info.shape);
    uint64_t nbytes = 0;
    if (!numel || __builtin_mul_overflow(static_cast<uint64_t>(*numel), st_dtype->size, &nbytes)) {
      return bad(fmt::format("shape {} overflows 64-bit sizes", fmt::join(info.shape, "x")));
    }
    info.numel = *numel;

    const auto offs = entry.find("data_offsets");
    uint64_t begin = 0;
    uint64_t end = 0;
    if (offs == entry.end() || !offs->is_array() || offs->size() != 2 ||
        !get_u64((*offs)[0], &begin) || !get_u64((*offs)[1], &end)) {
      return bad("\"data_offsets\" must be [begin, end] with non-negative integers");
    }
    if (begin > end) return bad(fmt::format("data_offsets [{}, {}] has begin > end", begin, end));
    if (end > data_size) {
      return bad(
          fmt::format("data_offsets [{}, {}] run past the end of the data section ({} "
                      "bytes); the file is truncated",
                      begin, end, data_size));
    }
    if (end - begin != nbytes) {
      return bad(fmt::format(
          "data_offsets [{}, {}] span {} bytes but dtype {} with shape [{}] "
          "needs {}",
          begin, end, end - begin, info.dtype_name, fmt::join(info.shape, ", "), nbytes));
    }
    info.bytes = std::span<const std::byte>(data_base + begin, nbytes);
    info.file_offset = 8 + header_len + begin;
    tensors.push_back(std::move(info));
    offsets.emplace_back(begin, end);
  }

  // Order by position in the data section: that is the order names() reports, and adjacent pairs
  // are all that must be compared to find an overlap.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (offsets[a] != offsets[b]) return offsets[a] < offsets[b];
    return tensors[a].name < tensors[b].name;
  });
  const TensorInfo* prev = nullptr;  // the non-empty tensor reaching furthest so far
  uint64_t prev_end = 0;
  for (size_t i : order) {
    const auto [begin, end] = offsets[i];
    if (begin == end) continue;  // an empty range overlaps nothing
    if (prev != nullptr && begin < prev_end) {
      return make_error(StatusCode::kDataError,
                        "'{}': tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (ends at {})",
                        path, tensors[i].name, begin, end, prev->name, prev_end);
    }
    prev = &tensors[i];
    prev_end = end;
  }

  r.tensors_.reserve(tensors.size());
  for (size_t i : order) {
    r.index_.emplace(tensors[i].name, r.tensors_.size());
    r.names_.push_back(tensors[i].name);
    r.tensors_.push_back(std::move(tensors[i]));
  }
  return r;
}

const TensorInfo* SafetensorsReader::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Status SafetensorsReader::read_as(std::string_view name, DType dst_type, void* dst,
                                  size_t count) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) {
    return make_error(StatusCode::kNotFound, "'{}' has no tensor '{}' ({} tensors in the file)",
                      path_, name, tensors_.size());
  }
  if (!info->dtype) {
    return make_error(StatusCode::kUnsupported,
                      "'{}': tensor '{}' has dtype {}, which cannot be read as {} (only F32, BF16 "
                      "and F16 convert)",
                      path_, name, info->dtype_name, dtype_name(dst_type));
  }
  if (count != static_cast<uint64_t>(info->numel)) {
    return make_error(StatusCode::kInvalidArgument,
                      "'{}': tensor '{}' has {} elements (shape [{}]) but the destination holds {}",
                      path_, name, info->numel, fmt::join(info->shape, ", "), count);
  }
  if (count == 0) return Status::ok();
  if (dst == nullptr) {
    return make_error(StatusCode::kInvalidArgument, "'{}': tensor '{}': destination is null", path_,
                      name);
  }
  const DType src_type = *info->dtype;
  const std::byte* src = info->bytes.data();
  if (src_type == dst_type) {
    std::memcpy(dst, src, info->bytes.size());  // bit-exact, NaN payloads included
    return Status::ok();
  }
  const size_t src_size = dtype_size(src_type);
  if (reinterpret_cast<uintptr_t>(src) % src_size == 0) {
    convert(src, src_type, dst, dst_type, count);
    return Status::ok();
  }
  // The format does not promise aligned tensor data (only the header is padded), and convert()
  // reads typed pointers, so misaligned data goes through a small aligned bounce buffer.
  std::vector<float> bounce(kConvertChunk);  // float-aligned, big enough for any source dtype
  auto* out = static_cast<std::byte*>(dst);
  const size_t dst_size = dtype_size(dst_type);
  for (size_t done = 0; done < count; done += kConvertChunk) {
    const size_t n = std::min(kConvertChunk, count - done);
    std::memcpy(bounce.data(), src + done * src_size, n * src_size);
    convert(bounce.data(), src_type, out + done * dst_size, dst_type, n);
  }
  return Status::ok();
}

// ------------------------------------------------------------------------------------------------
// SafetensorsWriter

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_path_(std::move(other.tmp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      specs_(std::move(other.specs_)),
      next_(other.next_),
      finished_(other.finished_),
      failed_(other.failed_),
      bytes_written_(other.bytes_written_),
      hash_(std::move(other.hash_)) {
  other.finished_ = true;  // the moved-from shell owns no file and must not delete ours
}

SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&& other) noexcept {
  if (this != &other) {
    abandon();
    path_ = std::move(other.path_);
    tmp_path_ = std::move(other.tmp_path_);
    fd_ = std::exchange(other.fd_, -1);
    specs_ = std::move(other.specs_);
    next_ = other.next_;
    finished_ = other.finished_;
    failed_ = other.failed_;
    bytes_written_ = other.bytes_written_;
    hash_ = std::move(other.hash_);
    other.finished_ = true;
  }
  return *this;
}

SafetensorsWriter::~SafetensorsWriter() { abandon(); }

void SafetensorsWriter::abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_path_.c_str());
  }
}

Status SafetensorsWriter::fail(Status status) {
  abandon();
  failed_ = true;
  return status;
}

Result<SafetensorsWriter> SafetensorsWriter::create(const std::string& path,
                                                    std::vector<TensorSpec> specs,
                                                    std::map<std::string, std::string> metadata) {
  // ordered_json keeps the insertion order, so the header lists tensors in the order given.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::unordered_set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorSpec& s : specs) {
    if (s.name.empty() || s.name == "__metadata__") {
      return make_error(StatusCode::kInvalidArgument, "'{}': invalid tensor name '{}'", path,
                        s.name);
    }
    if (!names.insert(s.name).second) {
      return make_error(StatusCode::kInvalidArgument, "'{}': tensor '{}' given twice", path,
                        s.name);
    }
    const std::optional<int64_t> numel = checked_numel(s.shape);
    uint64_t nbytes = 0;
    if (!numel ||
        __builtin_mul_overflow(static_cast<uint64_t>(*numel), dtype_size(s.dtype), &nbytes) ||
        __builtin_add_overflow(offset, nbytes, &nbytes)) {
      return make_error(StatusCode::kInvalidArgument,
                        "'{}': tensor '{}' has an invalid shape [{}] (negative or too large)", path,
                        s.name, fmt::join(s.shape, ", "));
    }
    header[s.name] = {
        {"dtype", st_dtype_name(s.dtype)}, {"shape", s.shape}, {"data_offsets", {offset, nbytes}}};
    offset = nbytes;  // nbytes now holds this tensor's end offset
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    // dump() throws on names or metadata that are not valid UTF-8.
    return make_error(StatusCode::kInvalidArgument, "'{}': cannot encode header: {}", path,
                      e.what());
  }
  // Pad with spaces (valid JSON whitespace) like the Hugging Face writer, so the data section
  // starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');

  SafetensorsWriter w;
  w.path_ = path;
  w.tmp_path_ = path + ".tmp";
  w.specs_ = std::move(specs);
  w.hash_.reset(XXH3_createState());
  if (!w.hash_ || XXH3_64bits_reset(w.hash_.get()) != XXH_OK) {
    w.finished_ = true;
    return make_error(StatusCode::kOutOfMemory, "'{}': cannot allocate the checksum state", path);
  }
  w.fd_ = ::open(w.tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w.fd_ < 0) {
    const int err = errno;
    w.finished_ = true;
    return make_error(StatusCode::kIoError,
                      "cannot create '{}' (to write '{}'): {}; check that the directory exists "
                      "and is writable",
                      w.tmp_path_, path, errno_text(err));
  }
  const uint64_t header_len = text.size();
  unsigned char len_bytes[8];
  std::memcpy(len_bytes, &header_len, 8);  // little-endian (asserted above)
  ZT_RETURN_IF_ERROR(w.write_all(len_bytes, 8));
  ZT_RETURN_IF_ERROR(w.write_all(text.data(), text.size()));
  return w;
}

uint64_t SafetensorsWriter::xxh3() const { return hash_ ? XXH3_64bits_digest(hash_.get()) : 0; }

Status SafetensorsWriter::write_all(const void* data, size_t size) {
  const auto* p = static_cast<const char*>(data);
  (void)XXH3_64bits_update(hash_.get(), data, size);
  bytes_written_ += size;
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // write() returning 0 for a non-empty request means no progress is possible (full device).
      const int err = n < 0 ? errno : ENOSPC;
      return fail(make_error(StatusCode::kIoError, "writing '{}' (for '{}'): {}{}", tmp_path_,
                             path_, errno_text(err),
                             err == ENOSPC || err == EDQUOT || err == EFBIG
                                 ? "; free disk space or choose another directory"
                                 : ""));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::ok();
}

Result<const TensorSpec*> SafetensorsWriter::next_spec(std::string_view name) {
  if (failed_) {
    return make_error(StatusCode::kAborted, "writer for '{}' failed earlier; '{}' not written",
                      path_, name);
  }
  if (finished_) {
    return make_error(StatusCode::kInvalidArgument, "writer for '{}' is finished; '{}' not written",
                      path_, name);
  }
  if (next_ >= specs_.size()) {
    return make_error(StatusCode::kInvalidArgument,
                      "'{}': all {} tensors are already written; unexpected tensor '{}'", path_,
                      specs_.size(), name);
  }
  const TensorSpec& spec = specs_[next_];
  if (name != spec.name) {
    return make_error(StatusCode::kInvalidArgument,
                      "'{}': tensors must be written in the order given to create(): expected "
                      "'{}' (#{}), got '{}'",
                      path_, spec.name, next_, name);
  }
  return &spec;
}

Status SafetensorsWriter::write_tensor(std::string_view name, const void* data, DType src_type) {
  ZT_ASSIGN_OR_RETURN(const TensorSpec* next, next_spec(name));
  const TensorSpec& spec = *next;
  const auto numel = static_cast<size_t>(*checked_numel(spec.shape));  // validated in create()
  if (numel > 0 && data == nullptr) {
    return make_error(StatusCode::kInvalidArgument, "'{}': tensor '{}': data is null", path_, name);
  }
  if (src_type == spec.dtype) {
    ZT_RETURN_IF_ERROR(write_all(data, numel * dtype_size(src_type)));
  } else {
    const size_t src_size = dtype_size(src_type);
    const size_t dst_size = dtype_size(spec.dtype);
    std::vector<float> buf(std::min(numel, kConvertChunk));  // float-aligned for any dtype
    const auto* src = static_cast<const std::byte*>(data);
    for (size_t done = 0; done < numel; done += kConvertChunk) {
      const size_t n = std::min(kConvertChunk, numel - done);
      convert(src + done * src_size, src_type, buf.data(), spec.dtype, n);
      ZT_RETURN_IF_ERROR(write_all(buf.data(), n * dst_size));
    }
  }
  ++next_;
  return Status::ok();
}

Status SafetensorsWriter::write_tensor_from(std::string_view name, const Producer& fill,
                                            size_t chunk) {
  ZT_ASSIGN_OR_RETURN(const TensorSpec* spec, next_spec(name));
  const auto numel = static_cast<size_t>(*checked_numel(spec->shape));  // validated in create()
  const size_t esize = dtype_size(spec->dtype);
  chunk = std::max<size_t>(1, std::min(chunk, numel));
  std::vector<float> buf((chunk * esize + sizeof(float) - 1) / sizeof(float));
  for (size_t done = 0; done < numel; done += chunk) {
    const size_t n = std::min(chunk, numel - done);
    if (Status st = fill(done, n, buf.data()); !st.is_ok())
      return fail(st.with_context(fmt::format("'{}': tensor '{}'", path_, name)));
    ZT_RETURN_IF_ERROR(write_all(buf.data(), n * esize));
  }
  ++next_;
  return Status::ok();
}

Status SafetensorsWriter::finish() {
  if (failed_) return make_error(StatusCode::kAborted, "writer for '{}' failed earlier", path_);
  if (finished_) return make_error(StatusCode::kInvalidArgument, "'{}' already finished", path_);
  if (next_ != specs_.size()) {
    return fail(make_error(StatusCode::kInvalidArgument,
                           "'{}': finish() after {} of {} tensors; '{}' and later were never "
                           "written, so the file was discarded",
                           path_, next_, specs_.size(), specs_[next_].name));
  }
  if (::fsync(fd_) != 0) {
    const int err = errno;
    return fail(
        make_error(StatusCode::kIoError, "fsync of '{}' failed: {}", tmp_path_, errno_text(err)));
  }
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_path_.c_str());
    failed_ = true;
    return make_error(StatusCode::kIoError, "closing '{}' failed: {}", tmp_path_, errno_text(err));
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_path_.c_str());
    failed_ = true;
    return make_error(StatusCode::kIoError, "renaming '{}' to '{}' failed: {}", tmp_path_, path_,
                      errno_text(err));
  }
  finished_ = true;
  // The rename is durable only once the directory entry is on disk.
  const std::string dir = dir_of(path_);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || ::fsync(dfd) != 0) {
    const int err = errno;
    if (dfd >= 0) ::close(dfd);
    return make_error(StatusCode::kIoError,
                      "'{}' was written but syncing its directory '{}' failed: {}", path_, dir,
                      errno_text(err));
  }
  ::close(dfd);
  return Status::ok();
}

Result<uint64_t> xxh3_file(const std::string& path, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return make_error(err == ENOENT ? StatusCode::kNotFound : StatusCode::kIoError,
                      "cannot open '{}': {}", path, errno_text(err));
  }
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> st(XXH3_createState(),
                                                                     XXH3_freeState);
  (void)XXH3_64bits_reset(st.get());
  std::vector<char> buf(size_t{4} << 20);
  uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return make_error(StatusCode::kIoError, "reading '{}': {}", path, errno_text(err));
    }
    if (n == 0) break;
    (void)XXH3_64bits_update(st.get(), buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  if (size) *size = total;
  return static_cast<uint64_t>(XXH3_64bits_digest(st.get()));
}

}  // namespace zt
