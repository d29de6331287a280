// DataLoader: turns a TokenFile into training sequences, addressed by a global sequence index.
//
// Note [sequence addressing]
// DESIGN.md fixes the layout: with sequence length T and n = (num_tokens - 1) / T whole sequences,
// sequence k holds tokens [k*T, k*T + T]: the first T are the inputs, the last T (shifted by one)
// the targets, and k is taken modulo n. With data.shuffle: false, optimizer step s (0-based) trains
// on the global sequences s*G ... s*G + G - 1, G the global batch in sequences. With shuffle, the
// global index k is first mapped through a permutation of the n sequences: epoch e = k / n visits
// sequence perm_e[k % n], perm_e a uniform permutation drawn from (seed, e) — every sequence
// exactly once per epoch, a fresh order each epoch, and the same order on every machine (see Note
// [portable randomness] in rng.h).
//
// The loader holds no cursor: what step s reads is a pure function of s, so resuming from a
// checkpoint at step s, or on a different number of workers, reads exactly the same data. How the
// G sequences of a step are split is the caller's choice; e.g. rank r of W, with micro-batch B and
// gradient_accumulation_steps A (G = W*A*B), in accumulation micro-step a, may take
//   fill(s*G + (a*W + r)*B, B, inputs, targets)
// — any split that covers s*G ... s*G+G-1 once gives the same step (DESIGN.md: the math of a step
// must not depend on it).
//
// Note [sequence-length warm-up]
// With data.seq_len_schedule a step may train on sequences of len = T / r tokens (r an integer).
// Piece p of length len is the j-th len-token slice of global sequence k, k = p / r, j = p % r:
// tokens [seq*T + j*len, seq*T + j*len + len] of the file sequence seq that k maps to. A step of
// G sequences at T covers pieces s*G*r ... (s+1)*G*r - 1 at len: exactly the same tokens, in the
// same order, cut shorter, so the warm-up changes neither which data a step sees nor where the
// data stands after it (a resume at any step reads the same tokens).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/data/token_file.h"

namespace zt {

class DataLoader {
 public:
  // Takes ownership of `file`. Errors (naming the file): fewer than seq_len + 1 tokens (not one
  // whole sequence), a token >= vocab_size (the file is scanned once here), more than 2^32 - 1
  // sequences with shuffle.
  static Result<DataLoader> create(TokenFile file, int seq_len, int vocab_size, bool shuffle,
                                   uint64_t seed);

  // Opens data.path in data.format with T = model.block_size and model.vocab_size.
  static Result<DataLoader> open(const DataConfig& data, const ModelConfig& model);

  DataLoader(DataLoader&&) noexcept = default;
  DataLoader& operator=(DataLoader&&) noexcept = default;

  // Writes `count` sequences, global indices first_sequence ... first_sequence + count - 1 (mapped
  // through the shuffle when enabled): inputs and targets each receive count * T int32 token ids,
  // row-major (count, T). first_sequence >= 0; any value is valid (it wraps). Thread-safe.
  void fill(int64_t first_sequence, int count, int32_t* inputs, int32_t* targets) const;

  // Note [sequence-length warm-up]: `count` pieces of `len` tokens (len divides seq_len()), global
  // piece indices first_piece ... first_piece + count - 1; inputs and targets each receive
  // count * len ids, row-major (count, len). fill_pieces(k * r, r * c, T / r, ...) reads the same
  // tokens as fill(k, c, ...). Thread-safe.
  void fill_pieces(int64_t first_piece, int count, int len, int32_t* inputs,
                   int32_t* targets) const;

  // Which sequence of the file (0 ... n-1) the global index k reads; k >= 0.
  int64_t sequence_at(int64_t k) const;

  int64_t num_sequences() const { return num_sequences_; }
  int seq_len() const { return seq_len_; }
  int vocab_size() const { return vocab_size_; }
  bool shuffle() const { return shuffle_; }
  uint64_t seed() const { return seed_; }
  const TokenFile& file() const { return file_; }

 private:
  // The permutations of the (at most two) epochs used last: a step can straddle an epoch boundary,
  // and ranks walk through an epoch together, so two cached epochs mean each one is drawn once.
  struct PermutationCache {
    std::mutex mu;
    std::array<int64_t, 2> epoch{-1, -1};
    std::array<std::shared_ptr<const std::vector<uint32_t>>, 2> perm;
    int next_slot = 0;
  };

  DataLoader(TokenFile file, int seq_len, int vocab_size, bool shuffle, uint64_t seed);
  std::shared_ptr<const std::vector<uint32_t>> permutation(int64_t epoch) const;

  TokenFile file_;
  int seq_len_ = 0;
  int vocab_size_ = 0;
  bool shuffle_ = false;
  uint64_t seed_ = 0;
  int64_t num_sequences_ = 0;
  std::unique_ptr<PermutationCache> cache_;  // behind a pointer so the loader stays movable
};

// The permutation of epoch `epoch` of n sequences for `seed`: a Fisher–Yates shuffle driven by a
// DataRng seeded from (seed, epoch). Exposed for tests and tools; n < 2^32.
std::vector<uint32_t> shuffle_permutation(uint64_t seed, int64_t epoch, int64_t n);

}  // namespace zt
