#include "runtime/data/data_loader.h"

#include <limits>
#include <numeric>
#include <utility>

#include "runtime/core/check.h"
#include "runtime/data/rng.h"

namespace zt {

std::vector<uint32_t> shuffle_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  ZT_CHECK(n >= 0 && n <= std::numeric_limits<uint32_t>::max(), "n = {}", n);
  ZT_CHECK(epoch >= 0, "epoch = {}", epoch);
  std::vector<uint32_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0u);
  // mix64 is a bijection, so for one seed every epoch gets its own stream.
  data::DataRng rng(data::mix64(data::mix64(seed) + static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

DataLoader::DataLoader(TokenFile file, int seq_len, int vocab_size, bool shuffle, uint64_t seed)
    : file_(std::move(file)),
      seq_len_(seq_len),
      vocab_size_(vocab_size),
      shuffle_(shuffle),
      seed_(seed),
      num_sequences_((file_.num_tokens() - 1) / seq_len),
      cache_(std::make_unique<PermutationCache>()) {}

Result<DataLoader> DataLoader::create(TokenFile file, int seq_len, int vocab_size, bool shuffle,
                                      uint64_t seed) {
  if (seq_len <= 0) {
    return make_error(StatusCode::kInvalidArgument, "sequence length must be positive, got {}",
                      seq_len);
  }
  if (file.num_tokens() < static_cast<int64_t>(seq_len) + 1) {
    return make_error(StatusCode::kDataError,
                      "token file '{}' has {} tokens, fewer than block_size + 1 = {} needed for "
                      "one training sequence; use more data or a smaller model.block_size",
                      file.path(), file.num_tokens(), static_cast<int64_t>(seq_len) + 1);
  }
  ZT_RETURN_IF_ERROR(file.check_vocab(vocab_size));
  const int64_t n = (file.num_tokens() - 1) / seq_len;
  if (shuffle && n > std::numeric_limits<uint32_t>::max()) {
    return make_error(StatusCode::kUnsupported,
                      "token file '{}' has {} sequences of {} tokens; shuffling supports at most "
                      "{}; split the data into shards or set data.shuffle: false",
                      file.path(), n, seq_len, std::numeric_limits<uint32_t>::max());
  }
  return DataLoader(std::move(file), seq_len, vocab_size, shuffle, seed);
}

Result<DataLoader> DataLoader::open(const DataConfig& data, const ModelConfig& model) {
  ZT_ASSIGN_OR_RETURN(TokenFile file, TokenFile::open(data.path, data.format));
  return create(std::move(file), model.block_size, model.vocab_size, data.shuffle, data.seed);
}

std::shared_ptr<const std::vector<uint32_t>> DataLoader::permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  for (int i = 0; i < 2; ++i) {
    if (cache_->epoch[i] == epoch) return cache_->perm[i];
  }
  // Drawn under the lock: concurrent callers wanting the same epoch wait instead of each drawing
  // it; a draw is O(n) and happens once per epoch.
  auto perm = std::make_shared<const std::vector<uint32_t>>(
      shuffle_permutation(seed_, epoch, num_sequences_));
  const int slot = cache_->next_slot;
  cache_->epoch[slot] = epoch;
  cache_->perm[slot] = perm;
  cache_->next_slot = 1 - slot;
  return perm;
}

int64_t DataLoader::sequence_at(int64_t k) const {
  ZT_CHECK(k >= 0, "sequence index {} is negative", k);
  if (!shuffle_) return k % num_sequences_;
  const auto perm = permutation(k / num_sequences_);
  return (*perm)[static_cast<size_t>(k % num_sequences_)];
}

void DataLoader::fill_pieces(int64_t first_piece, int count, int len, int32_t* inputs,
                             int32_t* targets) const {
  ZT_CHECK(len > 0 && seq_len_ % len == 0, "piece length {} does not divide the sequence length {}",
           len, seq_len_);
  if (len == seq_len_) return fill(first_piece, count, inputs, targets);
  ZT_CHECK(first_piece >= 0, "first_piece {} is negative", first_piece);
  ZT_CHECK(count >= 0, "count {} is negative", count);
  ZT_CHECK(count == 0 || (inputs != nullptr && targets != nullptr), "null output buffer");
  const int64_t r = seq_len_ / len;
  const uint16_t* tokens = file_.tokens();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t p = first_piece + i;
    // The last target, seq*T + (j+1)*len <= seq*T + T, is in the file (see fill()).
    const uint16_t* src = tokens + sequence_at(p / r) * seq_len_ + (p % r) * len;
    int32_t* in = inputs + i * len;
    int32_t* tg = targets + i * len;
    for (int64_t j = 0; j < len; ++j) {
      in[j] = src[j];
      tg[j] = src[j + 1];
    }
  }
}

void DataLoader::fill(int64_t first_sequence, int count, int32_t* inputs, int32_t* targets) const {
  ZT_CHECK(first_sequence >= 0, "first_sequence {} is negative", first_sequence);
  ZT_CHECK(count >= 0, "count {} is negative", count);
  ZT_CHECK(count == 0 || (inputs != nullptr && targets != nullptr), "null output buffer");
  const uint16_t* tokens = file_.tokens();
  const int64_t t_len = seq_len_;
  std::shared_ptr<const std::vector<uint32_t>> perm;
  int64_t perm_epoch = -1;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = first_sequence + i;
    int64_t seq = k % num_sequences_;
    if (shuffle_) {
      const int64_t epoch = k / num_sequences_;
      if (epoch != perm_epoch) {
        perm = permutation(epoch);
        perm_epoch = epoch;
      }
      seq = (*perm)[static_cast<size_t>(seq)];
    }
    // seq <= n-1, so the last target, token seq*T + T <= n*T <= num_tokens - 1, is in the file.
    const uint16_t* src = tokens + seq * t_len;
    int32_t* in = inputs + i * t_len;
    int32_t* tg = targets + i * t_len;
    for (int64_t j = 0; j < t_len; ++j) {
      in[j] = src[j];
      tg[j] = src[j + 1];
    }
  }
}

}  // namespace zt
