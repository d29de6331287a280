#include "runtime/data/tokenize.h"

#include <cmath>
#include <span>

#include "runtime/data/file_io.h"
#include "runtime/data/token_file.h"

namespace zt {

std::vector<uint16_t> byte_tokenize(std::string_view text) {
  std::vector<uint16_t> tokens(text.size());
  for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  return tokens;
}

Result<TokenizeSummary> tokenize_file(const TokenizeOptions& options) {
  if (options.input.empty() || options.output.empty()) {
    return make_error(StatusCode::kInvalidArgument, "tokenize: an input and an output are needed");
  }
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return make_error(StatusCode::kInvalidArgument,
                      "tokenize: the validation fraction must be in [0, 1), got {}",
                      options.val_fraction);
  }
  const bool split = options.val_fraction > 0.0;
  if (split && options.val_output.empty()) {
    return make_error(StatusCode::kInvalidArgument,
                      "tokenize: a validation fraction of {} needs a validation output file",
                      options.val_fraction);
  }
  if (!split && !options.val_output.empty()) {
    return make_error(StatusCode::kInvalidArgument,
                      "tokenize: validation output '{}' given without a validation fraction > 0",
                      options.val_output);
  }
  if (split && (options.val_output == options.output || options.val_output == options.input)) {
    return make_error(StatusCode::kInvalidArgument,
                      "tokenize: the validation output '{}' must differ from the input and output",
                      options.val_output);
  }
  if (options.output == options.input) {
    return make_error(StatusCode::kInvalidArgument,
                      "tokenize: the output '{}' would overwrite the input", options.output);
  }

  Result<std::string> text = data::read_file(options.input);
  if (!text) return text.status().with_context("tokenize: reading the input");
  const std::string_view all(*text);

  size_t cut = all.size();
  if (split) {
    cut = static_cast<size_t>(
        std::floor(static_cast<double>(all.size()) * (1.0 - options.val_fraction)));
    const size_t newline = all.find('\n', cut == 0 ? 0 : cut - 1);
    if (newline != std::string_view::npos) cut = newline + 1;
  }
  if (cut == 0) {
    return make_error(StatusCode::kDataError,
                      "tokenize: input '{}' is empty; nothing to write to '{}'", options.input,
                      options.output);
  }
  if (split && cut == all.size()) {
    return make_error(StatusCode::kDataError,
                      "tokenize: input '{}' ({} bytes) is too small to hold back a validation "
                      "fraction of {}",
                      options.input, all.size(), options.val_fraction);
  }

  const std::vector<uint16_t> train = byte_tokenize(all.substr(0, cut));
  const std::vector<uint16_t> val = byte_tokenize(all.substr(cut));
  // The validation file first: the train file, which jobs read, appears only when both are written.
  if (split) ZT_RETURN_IF_ERROR(write_token_file(options.val_output, val, options.format));
  ZT_RETURN_IF_ERROR(write_token_file(options.output, train, options.format));
  TokenizeSummary summary;
  summary.train_tokens = static_cast<int64_t>(train.size());
  summary.val_tokens = split ? static_cast<int64_t>(val.size()) : 0;
  return summary;
}

}  // namespace zt
