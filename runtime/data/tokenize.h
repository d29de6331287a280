// Byte-level tokenization for the shipped corpus and small experiments: token = byte value, so the
// vocabulary is 256 (model.vocab_size: 256) and any text round-trips exactly. zt-tokenize is a thin
// command line over tokenize_file().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"

namespace zt {

constexpr int kByteVocabSize = 256;

std::vector<uint16_t> byte_tokenize(std::string_view text);

struct TokenizeOptions {
  std::string input;
  std::string output;
  DataFormat format = DataFormat::kLlmc;
  // When > 0, the tail of the input (about this fraction of its bytes, moved forward to the start
  // of the next line so that no line is cut) goes to val_output instead of output.
  double val_fraction = 0.0;
  std::string val_output;
};

struct TokenizeSummary {
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
};

// Reads options.input, tokenizes it and writes the token file(s). Errors name the file: an
// unreadable input, an unwritable output (nothing is left behind at the output paths: files are
// written to a temporary name and renamed), an empty train split, bad options.
Result<TokenizeSummary> tokenize_file(const TokenizeOptions& options);

}  // namespace zt
