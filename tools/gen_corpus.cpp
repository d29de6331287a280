// zt-gen-corpus: writes the procedural English-like training corpus (see
// runtime/data/corpus_gen.h). The shipped tools/data/corpus.txt is `zt-gen-corpus --output
// tools/data/corpus.txt --bytes 1048576
// --seed 1`; data_test checks that it still matches the generator.
#include <cstdint>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "runtime/data/corpus_gen.h"
#include "runtime/data/file_io.h"

int main(int argc, char** argv) {
  CLI::App app{"Generate an English-like text corpus with learnable structure"};
  std::string output;
  uint64_t bytes = 1 << 20;
  uint64_t seed = 1;
  app.add_option("--output", output, "text file to write")->required();
  app.add_option("--bytes", bytes, "exact size of the output in bytes")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  app.add_option("--seed", seed, "seed; the same seed gives the same text");
  CLI11_PARSE(app, argc, argv);

  const std::string text = zt::generate_corpus(seed, static_cast<size_t>(bytes));
  const zt::Status st = zt::data::write_file_atomic(output, text.data(), text.size());
  if (!st) {
    std::fprintf(stderr, "zt-gen-corpus: error: %s\n", st.to_string().c_str());
    return 1;
  }
  std::printf("zt-gen-corpus: wrote %zu bytes to %s (seed %llu)\n", text.size(), output.c_str(),
              static_cast<unsigned long long>(seed));
  return 0;
}
