// TokenFile: a read-only memory map of a file of uint16 token ids, in one of the two formats of
// DESIGN.md ("Model and data formats"):
//   llmc     256 int32 header (magic 20240520, version 1, token count, the rest zero), then the
//            uint16 tokens; the format of Karpathy's llm.c.
//   raw_u16  the whole file is uint16 tokens; the format of nanoGPT's train.bin / val.bin.
// Both are little-endian. open() checks the framing (magic, version, size against the count) and
// reports any problem naming the file and what to do; token values are checked by check_vocab().
// The data stays in the page cache, shared by every process that maps the same file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"

namespace zt {

constexpr int32_t kLlmcMagic = 20240520;
constexpr int32_t kLlmcVersion = 1;
constexpr size_t kLlmcHeaderInts = 256;
constexpr size_t kLlmcHeaderBytes = kLlmcHeaderInts * sizeof(int32_t);

// "llmc" / "raw_u16", the spellings of data.format in a config and of zt-tokenize --format.
const char* token_format_name(DataFormat format);
Result<DataFormat> parse_token_format(std::string_view name);

class TokenFile {
 public:
  // Maps `path` read-only and checks its framing for `format`. Errors (naming the file): kNotFound
  // when missing, kIoError when unreadable, kDataError for a bad magic, an unsupported version, a
  // size that disagrees with the header's count, or an odd size for raw_u16.
  static Result<TokenFile> open(const std::string& path, DataFormat format);

  TokenFile(TokenFile&& other) noexcept;
  TokenFile& operator=(TokenFile&& other) noexcept;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  ~TokenFile();  // unmaps

  // Valid while this object lives (moves keep the same mapping).
  const uint16_t* tokens() const { return tokens_; }
  int64_t num_tokens() const { return num_tokens_; }
  std::span<const uint16_t> span() const { return {tokens_, static_cast<size_t>(num_tokens_)}; }
  const std::string& path() const { return path_; }
  DataFormat format() const { return format_; }

  // Scans every token once (in parallel; about memory bandwidth) and returns kDataError naming the
  // file, the position and the value of the first token >= vocab_size.
  Status check_vocab(int vocab_size) const;

 private:
  TokenFile(std::string path, DataFormat format, void* map, size_t map_bytes,
            const uint16_t* tokens, int64_t num_tokens);
  void unmap();

  std::string path_;
  DataFormat format_ = DataFormat::kLlmc;
  void* map_ = nullptr;  // owned mapping; null for an empty file
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  int64_t num_tokens_ = 0;
};

// Writes `tokens` as a token file of `format`, crash-safely (temporary file, then rename), so a
// failure never leaves a half file at `path`. llmc holds at most INT32_MAX tokens (its header count
// is an int32); larger token streams must be split into shards.
Status write_token_file(const std::string& path, std::span<const uint16_t> tokens,
                        DataFormat format);

}  // namespace zt
