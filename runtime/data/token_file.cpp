#include "runtime/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/data/file_io.h"

namespace zt {

// Both formats are little-endian on disk and read in place from the mapping.
static_assert(std::endian::native == std::endian::little,
              "token files are read in place and are little-endian");

namespace {

// Closes a descriptor on every return path of open().
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_;
};

}  // namespace

const char* token_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::kLlmc:
      return "llmc";
    case DataFormat::kRawU16:
      return "raw_u16";
  }
  return "unknown";
}

Result<DataFormat> parse_token_format(std::string_view name) {
  if (name == "llmc") return DataFormat::kLlmc;
  if (name == "raw_u16") return DataFormat::kRawU16;
  return make_error(StatusCode::kInvalidArgument,
                    "unknown token file format '{}'; expected llmc or raw_u16", name);
}

TokenFile::TokenFile(std::string path, DataFormat format, void* map, size_t map_bytes,
                     const uint16_t* tokens, int64_t num_tokens)
    : path_(std::move(path)),
      format_(format),
      map_(map),
      map_bytes_(map_bytes),
      tokens_(tokens),
      num_tokens_(num_tokens) {}

TokenFile::TokenFile(TokenFile&& other) noexcept
    : path_(std::move(other.path_)),
      format_(other.format_),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      num_tokens_(std::exchange(other.num_tokens_, 0)) {}

TokenFile& TokenFile::operator=(TokenFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    format_ = other.format_;
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    num_tokens_ = std::exchange(other.num_tokens_, 0);
  }
  return *this;
}

TokenFile::~TokenFile() { unmap(); }

void TokenFile::unmap() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  num_tokens_ = 0;
}

Result<TokenFile> TokenFile::open(const std::string& path, DataFormat format) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return make_error(StatusCode::kNotFound,
                        "token file '{}' does not exist; check data.path (relative paths are "
                        "resolved against the config file's folder)",
                        path);
    }
    return make_error(StatusCode::kIoError, "cannot open token file '{}': {}", path,
                      std::strerror(err));
  }
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return make_error(StatusCode::kIoError, "cannot stat token file '{}': {}", path,
                      std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(StatusCode::kIoError, "token file '{}' is not a regular file", path);
  }
  const auto file_bytes = static_cast<uint64_t>(st.st_size);

  if (format == DataFormat::kLlmc && file_bytes < kLlmcHeaderBytes) {
    return make_error(StatusCode::kDataError,
                      "token file '{}' has {} bytes, less than the {}-byte llm.c header; it is "
                      "truncated, or it is a raw uint16 file (set data.format: raw_u16)",
                      path, file_bytes, kLlmcHeaderBytes);
  }
  if (format == DataFormat::kRawU16 && file_bytes % 2 != 0) {
    return make_error(StatusCode::kDataError,
                      "raw uint16 token file '{}' has an odd size ({} bytes), so it is not a "
                      "whole number of uint16 tokens; it is truncated or in another format",
                      path, file_bytes);
  }
  if (file_bytes == 0) {
    // mmap cannot map zero bytes; an empty raw file is a valid file with no tokens (the loader
    // then says it is too short).
    return TokenFile(path, format, nullptr, 0, nullptr, 0);
  }

  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    const int err = errno;
    return make_error(StatusCode::kIoError, "cannot map token file '{}' ({} bytes): {}", path,
                      file_bytes, std::strerror(err));
  }
  const auto* bytes = static_cast<const unsigned char*>(map);
  // From here on the mapping is owned by `file`, which unmaps it on every error return.
  TokenFile file(path, format, map, file_bytes, nullptr, 0);

  if (format == DataFormat::kRawU16) {
    // A file that carries a complete, consistent llm.c header is almost surely an llm.c file given
    // the wrong format; reading it raw would train on 512 header "tokens" without a word.
    if (file_bytes >= kLlmcHeaderBytes) {
      std::array<int32_t, 3> h{};
      std::memcpy(h.data(), bytes, sizeof(h));
      if (h[0] == kLlmcMagic && h[1] == kLlmcVersion && h[2] >= 0 &&
          kLlmcHeaderBytes + 2 * static_cast<uint64_t>(h[2]) == file_bytes) {
        return make_error(StatusCode::kDataError,
                          "token file '{}' was opened as raw_u16 but has an llm.c header (magic "
                          "{}, {} tokens); set data.format: llmc",
                          path, kLlmcMagic, h[2]);
      }
    }
    file.tokens_ = reinterpret_cast<const uint16_t*>(bytes);
    file.num_tokens_ = static_cast<int64_t>(file_bytes / 2);
    return file;
  }

  std::array<int32_t, kLlmcHeaderInts> header{};
  std::memcpy(header.data(), bytes, kLlmcHeaderBytes);
  if (header[0] != kLlmcMagic) {
    return make_error(
        StatusCode::kDataError,
        "token file '{}' is not an llm.c token file: its header magic is {} (0x{:08x}), "
        "expected {}; if it is a raw uint16 token file (nanoGPT), set data.format: "
        "raw_u16",
        path, header[0], static_cast<uint32_t>(header[0]), kLlmcMagic);
  }
  if (header[1] != kLlmcVersion) {
    return make_error(StatusCode::kDataError,
                      "token file '{}' has llm.c format version {}; only version {} (uint16 "
                      "tokens) is supported; re-create it with zt-tokenize or llm.c's scripts",
                      path, header[1], kLlmcVersion);
  }
  if (header[2] < 0) {
    return make_error(StatusCode::kDataError,
                      "token file '{}' has a negative token count ({}) in its header; the file "
                      "is corrupt",
                      path, header[2]);
  }
  const auto count = static_cast<uint64_t>(header[2]);
  const uint64_t expected_bytes = kLlmcHeaderBytes + 2 * count;
  if (file_bytes < expected_bytes) {
    return make_error(StatusCode::kDataError,
                      "token file '{}' is truncated: its header says {} tokens ({} bytes with the "
                      "header) but the file has {} bytes; re-create or re-download it",
                      path, count, expected_bytes, file_bytes);
  }
  if (file_bytes > expected_bytes) {
    return make_error(StatusCode::kDataError,
                      "token file '{}' has {} bytes, more than the {} its header's token count "
                      "({}) implies; the file is corrupt or was appended to",
                      path, file_bytes, expected_bytes, count);
  }
  file.tokens_ = reinterpret_cast<const uint16_t*>(bytes + kLlmcHeaderBytes);
  file.num_tokens_ = static_cast<int64_t>(count);
  return file;
}

Status TokenFile::check_vocab(int vocab_size) const {
  if (vocab_size <= 0) {
    return make_error(StatusCode::kInvalidArgument, "vocab_size must be positive, got {}",
                      vocab_size);
  }
  if (vocab_size > std::numeric_limits<uint16_t>::max()) return Status::ok();  // all fit
  // A parallel max first: the common case (all valid) costs one pass at memory bandwidth; the
  // position of the culprit is looked up only when there is one.
  const uint16_t* t = tokens_;
  const int64_t n = num_tokens_;
  uint16_t max_token = 0;
#pragma omp parallel for reduction(max : max_token) schedule(static)
  for (int64_t i = 0; i < n; ++i) max_token = std::max(max_token, t[i]);
  if (max_token < vocab_size) return Status::ok();
  const auto limit = static_cast<uint16_t>(vocab_size);
  const uint16_t* bad = std::find_if(t, t + n, [limit](uint16_t v) { return v >= limit; });
  return make_error(StatusCode::kDataError,
                    "token file '{}': the token at position {} is {}, not below vocab_size {}; "
                    "is model.vocab_size right for the tokenizer that wrote this file (GPT-2: "
                    "50257, byte-level: 256)?",
                    path_, bad - t, *bad, vocab_size);
}

Status write_token_file(const std::string& path, std::span<const uint16_t> tokens,
                        DataFormat format) {
  if (format == DataFormat::kRawU16) {
    return data::write_file_atomic(path, tokens.data(), tokens.size_bytes());
  }
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return make_error(StatusCode::kInvalidArgument,
                      "cannot write '{}': {} tokens do not fit an llm.c file (at most {}); split "
                      "the data into shards or use the raw_u16 format",
                      path, tokens.size(), std::numeric_limits<int32_t>::max());
  }
  std::array<int32_t, kLlmcHeaderInts> header{};
  header[0] = kLlmcMagic;
  header[1] = kLlmcVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  return data::write_file_atomic(
      path, {{header.data(), kLlmcHeaderBytes}, {tokens.data(), tokens.size_bytes()}});
}

}  // namespace zt
