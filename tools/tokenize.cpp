// zt-tokenize: byte-level tokenizer (token = byte value, vocab 256) that writes a token file in the
// llm.c format (default) or raw uint16, optionally holding back the tail of the text for
// validation.
//
//   zt-tokenize --input corpus.txt --output corpus.tok [--format llmc|raw_u16]
//               [--val-fraction 0.1 --val-output val.tok]
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "runtime/data/token_file.h"
#include "runtime/data/tokenize.h"

int main(int argc, char** argv) {
  CLI::App app{"Byte-level tokenizer: writes a token file (vocab 256, token = byte value)"};
  zt::TokenizeOptions options;
  std::string format = "llmc";
  app.add_option("--input", options.input, "text file to tokenize")->required();
  app.add_option("--output", options.output, "token file to write (train split)")->required();
  app.add_option("--format", format, "token file format")
      ->check(CLI::IsMember({"llmc", "raw_u16"}));
  app.add_option("--val-fraction", options.val_fraction,
                 "fraction in [0, 1) of the text, taken from its end (at a line start), to "
                 "write to --val-output");
  app.add_option("--val-output", options.val_output, "token file for the validation split");
  CLI11_PARSE(app, argc, argv);

  options.format = zt::parse_token_format(format).value();
  zt::Result<zt::TokenizeSummary> summary = zt::tokenize_file(options);
  if (!summary) {
    std::fprintf(stderr, "zt-tokenize: error: %s\n", summary.status().to_string().c_str());
    return 1;
  }
  std::printf("zt-tokenize: wrote %lld tokens to %s (%s, vocab %d)\n",
              static_cast<long long>(summary->train_tokens), options.output.c_str(), format.c_str(),
              zt::kByteVocabSize);
  if (!options.val_output.empty()) {
    std::printf("zt-tokenize: wrote %lld tokens to %s (%s, vocab %d)\n",
                static_cast<long long>(summary->val_tokens), options.val_output.c_str(),
                format.c_str(), zt::kByteVocabSize);
  }
  return 0;
}
