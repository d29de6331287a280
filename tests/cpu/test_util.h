// Helpers shared by the CPU tests: temporary directories, token files, small job configs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"

namespace zt::testing {

// A fresh directory under /tmp, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/zt_test_XXXXXX";
    const char* p = mkdtemp(tmpl);
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes an llm.c token file (header: magic 20240520, version 1, count; then uint16 tokens).
inline void write_llmc_tokens(const std::string& path, const std::vector<uint16_t>& tokens) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  int32_t header[256] = {};
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<int32_t>(tokens.size());
  std::fwrite(header, sizeof(header), 1, f);
  std::fwrite(tokens.data(), 2, tokens.size(), f);
  std::fclose(f);
}

// Tokens with learnable structure: a repeating pattern with a little pseudo-random noise.
inline std::vector<uint16_t> patterned_tokens(size_t n, int vocab, uint32_t seed = 1) {
  std::vector<uint16_t> t(n);
  uint32_t s = seed;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    const bool noise = (s >> 28) == 0;
    t[i] = static_cast<uint16_t>(noise ? (s >> 8) % static_cast<uint32_t>(vocab)
                                       : (i * 7 + i / 5) % static_cast<size_t>(vocab));
  }
  return t;
}

// `n` tokens repeating one pseudo-random pattern of `period` tokens: every sequence of length
// `period` is the same, so every split of a batch sees the same gradient up to its share (what
// fp16 overflow tests need, see zero_equivalence_test's note).
inline std::vector<uint16_t> periodic_tokens(size_t n, int period, int vocab) {
  std::vector<uint16_t> pattern(static_cast<size_t>(period));
  uint32_t s = 2654435761u;
  for (uint16_t& t : pattern) {
    s = s * 1664525u + 1013904223u;
    t = static_cast<uint16_t>((s >> 10) % static_cast<uint32_t>(vocab));
  }
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = pattern[i % pattern.size()];
  return out;
}

// A small GPT-2 job on `data_path`: fp32, AdamW, no schedule, one worker.
inline JobConfig small_job(const std::string& data_path, int n_layer = 3, int n_embd = 32,
                           int n_head = 2, int block = 16, int vocab = 64, int micro = 2,
                           int accumulation = 2) {
  JobConfig c;
  c.model.vocab_size = vocab;
  c.model.block_size = block;
  c.model.n_layer = n_layer;
  c.model.n_head = n_head;
  c.model.n_embd = n_embd;
  c.model.seed = 1234;
  c.data.path = data_path;
  c.train_micro_batch_size_per_gpu = micro;
  c.gradient_accumulation_steps = accumulation;
  c.train_batch_size = static_cast<int64_t>(micro) * accumulation;
  c.train.steps = 10;
  c.optimizer.lr = 3e-3f;
  c.gradient_clipping = 1.0;
  return c;
}

}  // namespace zt::testing
