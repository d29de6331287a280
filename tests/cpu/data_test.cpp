// Data pipeline: token file formats and their errors, the DESIGN.md sequence layout, shuffling,
// the byte tokenizer and the corpus generator.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/data/corpus_gen.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/file_io.h"
#include "runtime/data/rng.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenize.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "zt_data_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static void write_bytes(const std::string& p, const std::vector<char>& bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good()) << p;
  }
  static std::vector<char> read_bytes(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }

  // The llm.c layout built by hand, independently of write_token_file.
  static std::vector<char> llmc_bytes(const std::vector<uint16_t>& tokens, int32_t magic = 20240520,
                                      int32_t version = 1,
                                      std::optional<int32_t> count = std::nullopt) {
    std::vector<int32_t> header(256, 0);
    header[0] = magic;
    header[1] = version;
    header[2] = count.value_or(static_cast<int32_t>(tokens.size()));
    std::vector<char> out(1024 + 2 * tokens.size());
    std::memcpy(out.data(), header.data(), 1024);
    if (!tokens.empty()) std::memcpy(out.data() + 1024, tokens.data(), 2 * tokens.size());
    return out;
  }
  static std::vector<char> raw_bytes(const std::vector<uint16_t>& tokens) {
    std::vector<char> out(2 * tokens.size());
    if (!tokens.empty()) std::memcpy(out.data(), tokens.data(), out.size());
    return out;
  }

  static std::vector<uint16_t> random_tokens(size_t n, uint64_t seed, uint32_t vocab = 65536) {
    data::DataRng rng(seed);
    std::vector<uint16_t> t(n);
    for (auto& v : t) v = static_cast<uint16_t>(rng.below(vocab));
    return t;
  }

  // Expects a failed open with `code` whose message names the file and contains each of `parts`.
  template <typename R>
  static void expect_error(const R& result, StatusCode code, const std::string& file,
                           std::initializer_list<std::string> parts) {
    ASSERT_FALSE(result.is_ok());
    const std::string msg = result.status().message();
    EXPECT_EQ(result.status().code(), code) << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << "message does not name the file: " << msg;
    for (const std::string& part : parts) {
      EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
    }
  }

  fs::path dir_;
};

// ---- token files
// ---------------------------------------------------------------------------------

TEST_F(DataTest, LlmcRoundTrip) {
  const std::vector<uint16_t> tokens = random_tokens(1001, 7);
  const std::string p = path("a.tok");
  ASSERT_TRUE(write_token_file(p, tokens, DataFormat::kLlmc).is_ok());
  EXPECT_EQ(read_bytes(p), llmc_bytes(tokens));  // exactly the llm.c layout
  Result<TokenFile> f = TokenFile::open(p, DataFormat::kLlmc);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->num_tokens(), 1001);
  EXPECT_EQ(f->path(), p);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), f->tokens()));
}

TEST_F(DataTest, RawRoundTrip) {
  const std::vector<uint16_t> tokens = random_tokens(777, 8);
  const std::string p = path("a.bin");
  ASSERT_TRUE(write_token_file(p, tokens, DataFormat::kRawU16).is_ok());
  EXPECT_EQ(read_bytes(p), raw_bytes(tokens));
  Result<TokenFile> f = TokenFile::open(p, DataFormat::kRawU16);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->num_tokens(), 777);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), f->tokens()));
}

TEST_F(DataTest, HandWrittenFilesOpen) {
  const std::vector<uint16_t> tokens = {5, 0, 65535, 3};
  write_bytes(path("l.tok"), llmc_bytes(tokens));
  write_bytes(path("r.bin"), raw_bytes(tokens));
  Result<TokenFile> l = TokenFile::open(path("l.tok"), DataFormat::kLlmc);
  Result<TokenFile> r = TokenFile::open(path("r.bin"), DataFormat::kRawU16);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(std::vector<uint16_t>(l->tokens(), l->tokens() + 4), tokens);
  EXPECT_EQ(std::vector<uint16_t>(r->tokens(), r->tokens() + 4), tokens);
}

TEST_F(DataTest, EmptyFilesOpen) {
  write_bytes(path("l.tok"), llmc_bytes({}));
  write_bytes(path("r.bin"), {});
  Result<TokenFile> l = TokenFile::open(path("l.tok"), DataFormat::kLlmc);
  Result<TokenFile> r = TokenFile::open(path("r.bin"), DataFormat::kRawU16);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(l->num_tokens(), 0);
  EXPECT_EQ(r->num_tokens(), 0);
}

TEST_F(DataTest, MoveKeepsTheMapping) {
  const std::vector<uint16_t> tokens = random_tokens(100, 9);
  ASSERT_TRUE(write_token_file(path("a.tok"), tokens, DataFormat::kLlmc).is_ok());
  ASSERT_TRUE(write_token_file(path("b.tok"), {tokens.data(), 10}, DataFormat::kLlmc).is_ok());
  Result<TokenFile> a = TokenFile::open(path("a.tok"), DataFormat::kLlmc);
  ASSERT_TRUE(a.is_ok());
  TokenFile moved(std::move(*a));
  EXPECT_EQ(a->num_tokens(), 0);
  EXPECT_EQ(a->tokens(), nullptr);
  Result<TokenFile> b = TokenFile::open(path("b.tok"), DataFormat::kLlmc);
  ASSERT_TRUE(b.is_ok());
  *b = std::move(moved);  // unmaps b's old mapping
  EXPECT_EQ(b->num_tokens(), 100);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), b->tokens()));
}

TEST_F(DataTest, MissingFile) {
  const std::string p = path("nope.tok");
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kNotFound, p, {"does not exist"});
  expect_error(TokenFile::open(p, DataFormat::kRawU16), StatusCode::kNotFound, p, {});
}

TEST_F(DataTest, DirectoryIsNotATokenFile) {
  expect_error(TokenFile::open(dir_.string(), DataFormat::kLlmc), StatusCode::kIoError,
               dir_.string(), {"not a regular file"});
}

TEST_F(DataTest, UnreadableFile) {
  const std::string p = path("locked.tok");
  write_bytes(p, llmc_bytes({1, 2, 3}));
  // A path through a regular file fails for everyone, root included.
  const std::string through = p + "/x.tok";
  expect_error(TokenFile::open(through, DataFormat::kLlmc), StatusCode::kIoError, through,
               {"cannot open", "Not a directory"});
  if (::geteuid() == 0) GTEST_SKIP() << "root reads files whatever their mode";
  ASSERT_EQ(::chmod(p.c_str(), 0), 0);
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kIoError, p,
               {"cannot open", "Permission denied"});
}

TEST_F(DataTest, BadMagicSuggestsRaw) {
  const std::string p = path("bad.tok");
  write_bytes(p, llmc_bytes({1, 2, 3}, /*magic=*/12345));
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kDataError, p,
               {"magic is 12345", "20240520", "raw_u16"});
  // A raw nanoGPT file read as llm.c: the "magic" is its first two tokens.
  const std::string raw = path("nanogpt.bin");
  write_bytes(raw, raw_bytes(random_tokens(2000, 3, 50257)));
  expect_error(TokenFile::open(raw, DataFormat::kLlmc), StatusCode::kDataError, raw, {"raw_u16"});
}

TEST_F(DataTest, UnsupportedVersion) {
  const std::string p = path("v2.tok");
  write_bytes(p, llmc_bytes({1, 2, 3}, 20240520, /*version=*/2));
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kDataError, p,
               {"version 2", "only version 1"});
}

TEST_F(DataTest, TruncatedLlmc) {
  const std::string p = path("short.tok");
  std::vector<char> bytes = llmc_bytes(random_tokens(100, 4));
  bytes.resize(bytes.size() - 10);  // a copy cut short
  write_bytes(p, bytes);
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kDataError, p,
               {"truncated", "100 tokens"});
}

TEST_F(DataTest, LlmcLongerThanItsCount) {
  const std::string p = path("long.tok");
  write_bytes(p, llmc_bytes(random_tokens(100, 4), 20240520, 1, /*count=*/90));
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kDataError, p, {"corrupt"});
}

TEST_F(DataTest, LlmcSmallerThanHeader) {
  const std::string p = path("tiny.tok");
  write_bytes(p, std::vector<char>(100, 'x'));
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kDataError, p,
               {"100 bytes", "header", "raw_u16"});
}

TEST_F(DataTest, NegativeCount) {
  const std::string p = path("neg.tok");
  write_bytes(p, llmc_bytes({1, 2}, 20240520, 1, /*count=*/-5));
  expect_error(TokenFile::open(p, DataFormat::kLlmc), StatusCode::kDataError, p, {"negative"});
}

TEST_F(DataTest, RawOddSize) {
  const std::string p = path("odd.bin");
  std::vector<char> bytes = raw_bytes({1, 2, 3});
  bytes.push_back(0);
  write_bytes(p, bytes);
  expect_error(TokenFile::open(p, DataFormat::kRawU16), StatusCode::kDataError, p,
               {"odd size", "7 bytes"});
}

TEST_F(DataTest, LlmcFileOpenedAsRaw) {
  const std::string p = path("l.tok");
  write_bytes(p, llmc_bytes(random_tokens(50, 5)));
  expect_error(TokenFile::open(p, DataFormat::kRawU16), StatusCode::kDataError, p,
               {"data.format: llmc"});
}

TEST_F(DataTest, TooFewTokensForOneSequence) {
  const std::string p = path("few.tok");
  write_bytes(p, llmc_bytes({1, 2, 3, 4, 5, 6, 7, 8}));
  Result<TokenFile> f = TokenFile::open(p, DataFormat::kLlmc);
  ASSERT_TRUE(f.is_ok());
  expect_error(DataLoader::create(std::move(*f), /*seq_len=*/8, 256, false, 0),
               StatusCode::kDataError, p, {"8 tokens", "fewer than block_size + 1 = 9"});
  // Exactly T + 1 tokens is one sequence.
  Result<TokenFile> g = TokenFile::open(p, DataFormat::kLlmc);
  ASSERT_TRUE(g.is_ok());
  Result<DataLoader> ok = DataLoader::create(std::move(*g), 7, 256, false, 0);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->num_sequences(), 1);
}

TEST_F(DataTest, TokenOutsideVocab) {
  std::vector<uint16_t> tokens(5000, 17);
  tokens[3210] = 300;
  tokens[4000] = 999;  // only the first offender is named
  const std::string p = path("vocab.bin");
  write_bytes(p, raw_bytes(tokens));
  Result<TokenFile> f = TokenFile::open(p, DataFormat::kRawU16);
  ASSERT_TRUE(f.is_ok());
  EXPECT_TRUE(f->check_vocab(1000).is_ok());
  expect_error(DataLoader::create(std::move(*f), 16, /*vocab_size=*/256, false, 0),
               StatusCode::kDataError, p, {"position 3210", "is 300", "vocab_size 256"});
}

TEST_F(DataTest, OpenFromConfig) {
  const std::vector<uint16_t> tokens = random_tokens(300, 6, 256);
  ASSERT_TRUE(write_token_file(path("c.bin"), tokens, DataFormat::kRawU16).is_ok());
  DataConfig data;
  data.path = path("c.bin");
  data.format = DataFormat::kRawU16;
  ModelConfig model;
  model.block_size = 10;
  model.vocab_size = 256;
  Result<DataLoader> loader = DataLoader::open(data, model);
  ASSERT_TRUE(loader.is_ok()) << loader.status().to_string();
  EXPECT_EQ(loader->num_sequences(), 29);
  data.format = DataFormat::kLlmc;
  expect_error(DataLoader::open(data, model), StatusCode::kDataError, data.path, {"raw_u16"});
}

TEST_F(DataTest, FormatNames) {
  EXPECT_STREQ(token_format_name(DataFormat::kLlmc), "llmc");
  EXPECT_STREQ(token_format_name(DataFormat::kRawU16), "raw_u16");
  EXPECT_EQ(*parse_token_format("llmc"), DataFormat::kLlmc);
  EXPECT_EQ(*parse_token_format("raw_u16"), DataFormat::kRawU16);
  EXPECT_FALSE(parse_token_format("bin").is_ok());
}

// ---- sequence layout (DESIGN.md)
// -----------------------------------------------------------------

struct LoaderCase {
  int64_t num_tokens;
  int seq_len;
  DataFormat format;
};

class LayoutTest : public DataTest, public ::testing::WithParamInterface<LoaderCase> {};

// Sequence k is tokens [k*T, k*T+T] of the raw array, k modulo (ntokens-1)/T: computed here
// straight from the token vector the file was written from.
TEST_P(LayoutTest, SequencesMatchTheRawTokens) {
  const LoaderCase c = GetParam();
  const std::vector<uint16_t> tokens = random_tokens(static_cast<size_t>(c.num_tokens), 11, 50257);
  const std::string p = path("layout.tok");
  ASSERT_TRUE(write_token_file(p, tokens, c.format).is_ok());
  Result<TokenFile> f = TokenFile::open(p, c.format);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  Result<DataLoader> loader = DataLoader::create(std::move(*f), c.seq_len, 50257, false, 0);
  ASSERT_TRUE(loader.is_ok()) << loader.status().to_string();
  const int64_t t_len = c.seq_len;
  const int64_t n = (c.num_tokens - 1) / t_len;
  ASSERT_EQ(loader->num_sequences(), n);

  // Several batches, including ones that wrap past the end more than once.
  for (int64_t first : {int64_t{0}, int64_t{1}, n - 1, n, 2 * n - 2, 5 * n + 3}) {
    if (first < 0) continue;
    const int count = 5;
    std::vector<int32_t> in(static_cast<size_t>(count * t_len), -1);
    std::vector<int32_t> tg(in.size(), -1);
    loader->fill(first, count, in.data(), tg.data());
    for (int i = 0; i < count; ++i) {
      const int64_t seq = (first + i) % n;
      EXPECT_EQ(loader->sequence_at(first + i), seq);
      for (int64_t j = 0; j < t_len; ++j) {
        const size_t o = static_cast<size_t>(i * t_len + j);
        ASSERT_EQ(in[o], tokens[static_cast<size_t>(seq * t_len + j)])
            << first << " " << i << " " << j;
        ASSERT_EQ(tg[o], tokens[static_cast<size_t>(seq * t_len + j + 1)]) << first << " " << i;
        if (j + 1 < t_len) {
          ASSERT_EQ(tg[o], in[o + 1]);  // targets are the inputs shifted by one
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LayoutTest,
    ::testing::Values(LoaderCase{1000, 7, DataFormat::kLlmc},  // 142 sequences, 5 tokens spare
                      LoaderCase{1000, 7, DataFormat::kRawU16},
                      LoaderCase{7 * 33 + 1, 7,
                                 DataFormat::kLlmc},          // the last target is the last token
                      LoaderCase{2, 1, DataFormat::kRawU16},  // one sequence of one token
                      LoaderCase{4097, 64, DataFormat::kLlmc}));

// Step s trains on global sequences s*G ... s*G+G-1, however they are split over ranks and
// micro-batches.
TEST_F(DataTest, StepSplitDoesNotChangeTheData) {
  const std::vector<uint16_t> tokens = random_tokens(5000, 12, 256);
  ASSERT_TRUE(write_token_file(path("s.tok"), tokens, DataFormat::kLlmc).is_ok());
  for (bool shuffle : {false, true}) {
    Result<TokenFile> f = TokenFile::open(path("s.tok"), DataFormat::kLlmc);
    ASSERT_TRUE(f.is_ok());
    Result<DataLoader> loader = DataLoader::create(std::move(*f), 16, 256, shuffle, 42);
    ASSERT_TRUE(loader.is_ok());
    const int t_len = 16, world = 2, accum = 3, micro = 4, global = world * accum * micro;
    for (int64_t step : {0, 1, 13, 40}) {  // 312 sequences: step 13 crosses an epoch
      std::vector<int32_t> in_all(static_cast<size_t>(global * t_len));
      std::vector<int32_t> tg_all(in_all.size());
      loader->fill(step * global, global, in_all.data(), tg_all.data());
      std::vector<int32_t> in_split(in_all.size()), tg_split(in_all.size());
      for (int a = 0; a < accum; ++a) {
        for (int r = 0; r < world; ++r) {
          const int64_t offset = (static_cast<int64_t>(a) * world + r) * micro;
          loader->fill(step * global + offset, micro, in_split.data() + offset * t_len,
                       tg_split.data() + offset * t_len);
        }
      }
      EXPECT_EQ(in_split, in_all) << "step " << step << " shuffle " << shuffle;
      EXPECT_EQ(tg_split, tg_all) << "step " << step << " shuffle " << shuffle;
    }
  }
}

// Note [sequence-length warm-up]: pieces of T/r tokens read the step's tokens cut shorter, checked
// against the raw token array (the file's sequences by hand), with and without shuffling.
TEST_F(DataTest, PiecesAreTheSequencesCutShorter) {
  const std::vector<uint16_t> tokens = random_tokens(5000, 7, 256);
  ASSERT_TRUE(write_token_file(path("p.tok"), tokens, DataFormat::kLlmc).is_ok());
  for (bool shuffle : {false, true}) {
    Result<TokenFile> f = TokenFile::open(path("p.tok"), DataFormat::kLlmc);
    ASSERT_TRUE(f.is_ok());
    Result<DataLoader> loader = DataLoader::create(std::move(*f), 16, 256, shuffle, 9);
    ASSERT_TRUE(loader.is_ok());
    for (int len : {8, 4, 2, 1}) {
      const int r = 16 / len;
      for (int64_t k : {0, 5, 311, 312, 700}) {  // 312 sequences: 312 starts the second epoch
        std::vector<int32_t> in(static_cast<size_t>(3 * 16)), tg(in.size());
        loader->fill_pieces(k * r, 3 * r, len, in.data(), tg.data());
        for (int64_t i = 0; i < 3; ++i) {
          const int64_t seq = loader->sequence_at(k + i);
          for (int64_t j = 0; j < 16; ++j) {
            const size_t at = static_cast<size_t>(i * 16 + j);
            ASSERT_EQ(in[at], tokens[static_cast<size_t>(seq * 16 + j)])
                << "len " << len << " k " << k << " shuffle " << shuffle;
            ASSERT_EQ(tg[at], tokens[static_cast<size_t>(seq * 16 + j + 1)]);
          }
        }
      }
    }
    // A piece starting mid-sequence: piece 3 of length 4 is tokens [12, 16] of sequence 0's.
    std::vector<int32_t> in(4), tg(4);
    loader->fill_pieces(3, 1, 4, in.data(), tg.data());
    const int64_t seq0 = loader->sequence_at(0);
    EXPECT_EQ(in[0], tokens[static_cast<size_t>(seq0 * 16 + 12)]);
    EXPECT_EQ(tg[3], tokens[static_cast<size_t>(seq0 * 16 + 16)]);
  }
}

// ---- shuffling
// -----------------------------------------------------------------------------------

Result<DataLoader> shuffled_loader(const std::string& p, uint64_t seed) {
  ZT_ASSIGN_OR_RETURN(TokenFile f, TokenFile::open(p, DataFormat::kRawU16));
  return DataLoader::create(std::move(f), 5, 1000, true, seed);
}

std::vector<int64_t> epoch_order(const DataLoader& loader, int64_t epoch) {
  std::vector<int64_t> order;
  const int64_t n = loader.num_sequences();
  for (int64_t k = epoch * n; k < (epoch + 1) * n; ++k) order.push_back(loader.sequence_at(k));
  return order;
}

TEST_F(DataTest, ShuffleIsAPermutationPerEpoch) {
  const std::vector<uint16_t> tokens = random_tokens(1001, 13, 1000);
  ASSERT_TRUE(write_token_file(path("sh.bin"), tokens, DataFormat::kRawU16).is_ok());
  Result<DataLoader> a = shuffled_loader(path("sh.bin"), 1234);
  Result<DataLoader> b = shuffled_loader(path("sh.bin"), 1234);
  Result<DataLoader> c = shuffled_loader(path("sh.bin"), 1235);
  ASSERT_TRUE(a.is_ok() && b.is_ok() && c.is_ok());
  const int64_t n = a->num_sequences();
  ASSERT_EQ(n, 200);
  std::vector<int64_t> identity(static_cast<size_t>(n));
  std::iota(identity.begin(), identity.end(), 0);

  std::vector<std::vector<int64_t>> epochs;
  for (int64_t e = 0; e < 4; ++e) {
    std::vector<int64_t> order = epoch_order(*a, e);
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity) << "epoch " << e << " does not visit every sequence once";
    EXPECT_NE(order, identity) << "epoch " << e << " is not shuffled";
    EXPECT_EQ(order, epoch_order(*b, e)) << "same seed, different order in epoch " << e;
    EXPECT_NE(order, epoch_order(*c, e)) << "another seed, same order in epoch " << e;
    for (const auto& previous : epochs) EXPECT_NE(order, previous) << "epoch " << e << " repeats";
    epochs.push_back(order);
  }
  // Reading the epochs out of order (a resumed job, another rank) changes nothing.
  EXPECT_EQ(epoch_order(*b, 3), epochs[3]);
  EXPECT_EQ(epoch_order(*b, 0), epochs[0]);
  EXPECT_EQ(epoch_order(*b, 2), epochs[2]);

  // fill() reads the mapped sequences.
  std::vector<int32_t> in(5 * 7), tg(5 * 7);
  a->fill(n - 3, 7, in.data(), tg.data());  // straddles epochs 0 and 1
  for (int i = 0; i < 7; ++i) {
    const int64_t seq = a->sequence_at(n - 3 + i);
    for (int j = 0; j < 5; ++j) {
      EXPECT_EQ(in[static_cast<size_t>(i * 5 + j)], tokens[static_cast<size_t>(seq * 5 + j)]);
      EXPECT_EQ(tg[static_cast<size_t>(i * 5 + j)], tokens[static_cast<size_t>(seq * 5 + j + 1)]);
    }
  }
}

// The visiting order is part of a run: it must not change between builds or platforms, or a resumed
// job would train on other data. These values pin the algorithm (SplitMix64 + Lemire +
// Fisher-Yates).
TEST_F(DataTest, ShuffleIsPinned) {
  EXPECT_EQ(shuffle_permutation(1, 0, 10), (std::vector<uint32_t>{5, 6, 1, 8, 7, 4, 3, 9, 0, 2}));
  EXPECT_EQ(shuffle_permutation(1, 1, 10), (std::vector<uint32_t>{7, 8, 1, 0, 4, 2, 9, 6, 5, 3}));
  EXPECT_TRUE(shuffle_permutation(5, 0, 0).empty());
  EXPECT_EQ(shuffle_permutation(5, 0, 1), std::vector<uint32_t>{0});
}

TEST(DataRngTest, SplitMix64ReferenceValues) {
  // First outputs of SplitMix64 from state 0, as published with the algorithm.
  data::DataRng rng(0);
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(rng.next(), 0x06C45D188009454Full);
}

TEST(DataRngTest, MulWideMatchesInt128) {
  __extension__ using u128 = unsigned __int128;
  data::DataRng rng(99);
  const uint64_t kMax = ~uint64_t{0};
  std::vector<uint64_t> values = {0, 1, 2, 0xFFFFFFFFu, uint64_t{1} << 32, kMax, kMax - 1};
  for (int i = 0; i < 1000; ++i) values.push_back(rng.next());
  for (uint64_t a : values) {
    for (uint64_t b : {values[static_cast<size_t>(a % values.size())], kMax, uint64_t{3}}) {
      uint64_t high = 0;
      const uint64_t low = data::DataRng::mul_wide(a, b, &high);
      const u128 expect = static_cast<u128>(a) * b;
      ASSERT_EQ(low, static_cast<uint64_t>(expect)) << a << " * " << b;
      ASSERT_EQ(high, static_cast<uint64_t>(expect >> 64)) << a << " * " << b;
    }
  }
}

TEST(DataRngTest, BelowStaysInRangeAndCoversIt) {
  data::DataRng rng(5);
  std::vector<int> hits(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const uint64_t v = rng.below(7);
    ASSERT_LT(v, 7u);
    ++hits[v];
  }
  for (int h : hits) {
    EXPECT_GT(h, 850);  // expected 1000 each; 850 is over 4 standard deviations away
    EXPECT_LT(h, 1150);
  }
  EXPECT_EQ(rng.below(1), 0u);
  EXPECT_LT(rng.below(~0ull), ~0ull);
}

// ---- tokenizer
// -----------------------------------------------------------------------------------

TEST_F(DataTest, TokenizeRoundTrip) {
  std::string text = "Hello, world!\nA second line.\n";
  for (int b = 0; b < 256; ++b) text.push_back(static_cast<char>(b));  // every byte value
  ASSERT_TRUE(data::write_file_atomic(path("in.txt"), text.data(), text.size()).is_ok());
  for (DataFormat format : {DataFormat::kLlmc, DataFormat::kRawU16}) {
    TokenizeOptions opt;
    opt.input = path("in.txt");
    opt.output = path("out.tok");
    opt.format = format;
    Result<TokenizeSummary> s = tokenize_file(opt);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    EXPECT_EQ(s->train_tokens, static_cast<int64_t>(text.size()));
    Result<TokenFile> f = TokenFile::open(opt.output, format);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    ASSERT_EQ(f->num_tokens(), static_cast<int64_t>(text.size()));
    std::string back;
    for (int64_t i = 0; i < f->num_tokens(); ++i) back.push_back(static_cast<char>(f->tokens()[i]));
    EXPECT_EQ(back, text);
    EXPECT_TRUE(f->check_vocab(kByteVocabSize).is_ok());
  }
}

TEST_F(DataTest, TokenizeValidationSplit) {
  const std::string text = generate_corpus(3, 20000);
  ASSERT_TRUE(data::write_file_atomic(path("in.txt"), text.data(), text.size()).is_ok());
  TokenizeOptions opt;
  opt.input = path("in.txt");
  opt.output = path("train.tok");
  opt.val_fraction = 0.1;
  opt.val_output = path("val.tok");
  Result<TokenizeSummary> s = tokenize_file(opt);
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  Result<TokenFile> train = TokenFile::open(opt.output, DataFormat::kLlmc);
  Result<TokenFile> val = TokenFile::open(opt.val_output, DataFormat::kLlmc);
  ASSERT_TRUE(train.is_ok() && val.is_ok());
  EXPECT_EQ(train->num_tokens(), s->train_tokens);
  EXPECT_EQ(val->num_tokens(), s->val_tokens);
  std::string joined;
  for (uint16_t t : train->span()) joined.push_back(static_cast<char>(t));
  EXPECT_EQ(joined.back(), '\n');  // the split falls at the start of a line
  for (uint16_t t : val->span()) joined.push_back(static_cast<char>(t));
  EXPECT_EQ(joined, text);
  EXPECT_NEAR(static_cast<double>(s->val_tokens) / static_cast<double>(text.size()), 0.1, 0.02);
}

TEST_F(DataTest, TokenizeErrors) {
  TokenizeOptions opt;
  opt.input = path("missing.txt");
  opt.output = path("out.tok");
  expect_error(tokenize_file(opt), StatusCode::kNotFound, opt.input, {});
  EXPECT_FALSE(fs::exists(opt.output));

  ASSERT_TRUE(data::write_file_atomic(path("in.txt"), "abc\ndef\nghi\njkl\n", 16).is_ok());
  opt.input = path("in.txt");
  opt.output = path("no_such_dir/out.tok");
  expect_error(tokenize_file(opt), StatusCode::kIoError, opt.output, {"cannot write"});

  opt.output = path("out.tok");
  opt.val_fraction = 0.5;  // no val_output
  EXPECT_EQ(tokenize_file(opt).status().code(), StatusCode::kInvalidArgument);
  opt.val_output = path("no_such_dir/val.tok");
  expect_error(tokenize_file(opt), StatusCode::kIoError, opt.val_output, {"cannot write"});
  EXPECT_FALSE(fs::exists(opt.output)) << "a train file without its validation file was left";

  opt.val_fraction = 0;
  opt.val_output.clear();
  ASSERT_TRUE(data::write_file_atomic(path("empty.txt"), "", 0).is_ok());
  opt.input = path("empty.txt");
  expect_error(tokenize_file(opt), StatusCode::kDataError, opt.input, {"empty"});

  // Only the files the test wrote are left: no temporary files behind.
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"in.txt", "empty.txt"}));
}

TEST_F(DataTest, FailedWriteKeepsTheOldFile) {
  const std::string p = path("keep.tok");
  ASSERT_TRUE(write_token_file(p, std::vector<uint16_t>{1, 2, 3}, DataFormat::kLlmc).is_ok());
  const std::vector<char> before = read_bytes(p);
  // A directory where the temporary file would go makes the write fail, even for root.
  const std::string tmp = p + ".tmp." + std::to_string(::getpid());
  ASSERT_TRUE(fs::create_directory(tmp));
  const Status st = write_token_file(p, std::vector<uint16_t>{4, 5}, DataFormat::kLlmc);
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find(p), std::string::npos) << st.message();
  EXPECT_EQ(read_bytes(p), before);
}

// The tool itself, when it has been built (the whole-tree build builds it before ctest runs).
TEST_F(DataTest, TokenizeBinary) {
  const std::string exe = ZT_BINARY_DIR "/bin/zt-tokenize";
  if (!fs::exists(exe)) GTEST_SKIP() << exe << " is not built";
  ASSERT_TRUE(data::write_file_atomic(path("in.txt"), "xyz\nabc\n", 8).is_ok());
  const std::string cmd = exe + " --input " + path("in.txt") + " --output " + path("o.bin") +
                          " --format raw_u16 > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Result<TokenFile> f = TokenFile::open(path("o.bin"), DataFormat::kRawU16);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->num_tokens(), 8);
  EXPECT_EQ(f->tokens()[0], 'x');
  const std::string bad = exe + " --input " + path("none.txt") + " --output " + path("o2.tok") +
                          " 2> " + path("err.txt");
  EXPECT_NE(std::system(bad.c_str()), 0);
  const std::vector<char> err = read_bytes(path("err.txt"));
  EXPECT_NE(std::string(err.begin(), err.end()).find(path("none.txt")), std::string::npos);
}

// ---- corpus generator
// ----------------------------------------------------------------------------

TEST(CorpusTest, DeterministicAndExactSize) {
  for (size_t bytes : {size_t{1}, size_t{2}, size_t{100}, size_t{4097}, size_t{65536}}) {
    const std::string a = generate_corpus(1, bytes);
    EXPECT_EQ(a.size(), bytes);
    EXPECT_EQ(a, generate_corpus(1, bytes));
    EXPECT_EQ(a.back(), '\n');
  }
  EXPECT_TRUE(generate_corpus(1, 0).empty());
  const std::string a = generate_corpus(1, 50000);
  const std::string b = generate_corpus(2, 50000);
  EXPECT_NE(a, b);
  // A shorter corpus is the start of a longer one.
  const std::string shorter = generate_corpus(1, 1000);
  EXPECT_EQ(shorter.substr(0, 999), a.substr(0, 999));
}

TEST(CorpusTest, PrintableAsciiWithStructure) {
  const std::string text = generate_corpus(7, 200000);
  for (char ch : text) {
    ASSERT_TRUE(ch == '\n' || (ch >= 32 && ch < 127)) << static_cast<int>(ch);
  }
  EXPECT_EQ(text.rfind("Chapter One: ", 0), 0u);
  for (const char* piece : {"Chapter Two: ", "\n\n", "\" said ", "Dear ", "Your friend,\n",
                            " plus ", " = ", ": one, two, three", "There are seven days"}) {
    EXPECT_NE(text.find(piece), std::string::npos) << piece;
  }
  // The text is far from uniform bytes: few distinct byte values.
  std::set<char> distinct(text.begin(), text.end());
  EXPECT_LT(distinct.size(), 80u);
}

TEST(CorpusTest, NumberWords) {
  EXPECT_EQ(number_words(0), "zero");
  EXPECT_EQ(number_words(7), "seven");
  EXPECT_EQ(number_words(13), "thirteen");
  EXPECT_EQ(number_words(20), "twenty");
  EXPECT_EQ(number_words(42), "forty-two");
  EXPECT_EQ(number_words(100), "one hundred");
  EXPECT_EQ(number_words(306), "three hundred and six");
  EXPECT_EQ(number_words(999), "nine hundred and ninety-nine");
  EXPECT_EQ(number_words(2010), "two thousand and ten");
  EXPECT_EQ(number_words(12345), "twelve thousand three hundred and forty-five");
  EXPECT_THROW(number_words(1000000), CheckError);
}

// tools/data/corpus.txt is generated, not hand-edited: it must still be what the generator makes,
// so that the demo's data and the generator cannot drift apart.
TEST(CorpusTest, ShippedCorpusMatchesTheGenerator) {
  const std::string shipped_path = ZT_SOURCE_DIR "/tools/data/corpus.txt";
  Result<std::string> shipped = data::read_file(shipped_path);
  ASSERT_TRUE(shipped.is_ok()) << shipped.status().to_string();
  EXPECT_EQ(shipped->size(), size_t{1} << 20);
  EXPECT_TRUE(*shipped == generate_corpus(1, shipped->size()))
      << shipped_path << " differs from zt-gen-corpus --seed 1 --bytes " << shipped->size()
      << "; regenerate it with: build/bin/zt-gen-corpus --output tools/data/corpus.txt --bytes "
      << shipped->size() << " --seed 1";
}

}  // namespace
}  // namespace zt
