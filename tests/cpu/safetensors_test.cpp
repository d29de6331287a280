// Tests of runtime/checkpoint/safetensors.{h,cpp}: round trips in every dtype, metadata, every
// malformed-file error the reader promises, writer order and failure handling (unwritable path,
// full disk, abandoned writes), and a cross-check with PyTorch in both directions when
// /usr/bin/python3 has torch.
#include "runtime/checkpoint/safetensors.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace zt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Deterministic test values: rational, so C++ and Python compute the same fp32 bits with plain
// IEEE double arithmetic (integer part exact, one division, one multiply, one rounding to fp32).
float test_value(int64_t i, double scale) {
  const auto k = static_cast<double>((i * 7919) % 2003 - 1001);
  return static_cast<float>(k / 311.0 * scale);
}

std::vector<float> test_values(int64_t n, double scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = test_value(i, scale);
  return v;
}

// The fp32 value `x` becomes after being stored as `t`.
float stored(float x, DType t) {
  switch (t) {
    case DType::kBF16:
      return to_f32(to_bf16(x));
    case DType::kF16:
      return to_f32(to_fp16(x));
    case DType::kF32:
      break;
  }
  return x;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file built by hand, so tests can break it in specific ways.
std::string raw_file(const std::string& header, const std::string& data,
                     std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(header.size());
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "zt_safetensors_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  // Opens a hand-made file and expects a kDataError whose message names the file and `needle`.
  void expect_open_error(const std::string& bytes, const std::string& needle) {
    const std::string p = path("bad.safetensors");
    write_file(p, bytes);
    Result<SafetensorsReader> r = SafetensorsReader::open(p);
    ASSERT_FALSE(r.is_ok()) << "opened a file that should be rejected (" << needle << ")";
    EXPECT_EQ(r.status().code(), StatusCode::kDataError) << r.status().to_string();
    EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(needle), std::string::npos)
        << "message lacks '" << needle << "': " << r.status().message();
  }

  std::string dir_;
};

struct Case {
  TensorSpec spec;
  DType src_type;  // the dtype handed to write_tensor
  double scale;
};

// A mix of every dtype, conversions on write (fp32 source into bf16/fp16, bf16 source into fp16),
// a scalar, an empty tensor and a tensor bigger than the writer's conversion chunk.
std::vector<Case> mixed_cases() {
  return {
      {{"alpha", DType::kF32, {3, 5}}, DType::kF32, 1.0},
      {{"h.0.attn.c_attn.weight", DType::kBF16, {4, 33}}, DType::kF32, 1.0},
      {{"h.0.attn.c_attn.bias", DType::kF16, {7}}, DType::kF32, 1e-5},
      {{"scalar", DType::kF32, {}}, DType::kF32, 2.0},
      {{"empty", DType::kBF16, {0, 4}}, DType::kF32, 1.0},
      {{"from_bf16", DType::kF16, {2, 9}}, DType::kBF16, 3.0},
      {{"from_f16", DType::kF32, {11}}, DType::kF16, 0.5},
      {{"big", DType::kBF16, {600'001}}, DType::kF32, 7.0},
      {{"same_bf16", DType::kBF16, {5}}, DType::kBF16, 1.0},
  };
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Source data for a case in its src_type, plus the fp32 values that source holds.
struct SourceData {
  std::vector<unsigned char> bytes;
  std::vector<float> values;
};
SourceData source_for(const Case& c) {
  SourceData s;
  const int64_t n = numel_of(c.spec.shape);
  s.values = test_values(n, c.scale);
  for (float& v : s.values) v = stored(v, c.src_type);
  s.bytes.resize(static_cast<size_t>(n) * dtype_size(c.src_type));
  convert(s.values.data(), DType::kF32, s.bytes.data(), c.src_type, static_cast<size_t>(n));
  return s;
}

Status write_cases(const std::string& p, const std::vector<Case>& cases,
                   std::map<std::string, std::string> metadata = {}) {
  std::vector<TensorSpec> specs;
  for (const Case& c : cases) specs.push_back(c.spec);
  ZT_ASSIGN_OR_RETURN(SafetensorsWriter w, SafetensorsWriter::create(p, specs, metadata));
  for (const Case& c : cases) {
    const SourceData s = source_for(c);
    ZT_RETURN_IF_ERROR(w.write_tensor(c.spec.name, s.bytes.data(), c.src_type));
  }
  return w.finish();
}

TEST_F(SafetensorsTest, RoundTripAllDTypesWithConversionOnWriteAndRead) {
  const std::string p = path("model.safetensors");
  const std::vector<Case> cases = mixed_cases();
  ASSERT_TRUE(write_cases(p, cases).is_ok());
  EXPECT_FALSE(fs::exists(p + ".tmp"));

  // Layout as Hugging Face writes it: header padded with spaces to 8 bytes, data packed in order.
  const std::string bytes = read_file(p);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  const std::string header = bytes.substr(8, header_len);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));
  size_t expected_data = 0;
  size_t last_pos = 0;
  for (const Case& c : cases) {
    expected_data += static_cast<size_t>(numel_of(c.spec.shape)) * dtype_size(c.spec.dtype);
    const size_t pos = header.find("\"" + c.spec.name + "\"");
    ASSERT_NE(pos, std::string::npos) << c.spec.name;
    EXPECT_GT(pos, last_pos) << "header must list tensors in the order given: " << c.spec.name;
    last_pos = pos;
  }
  EXPECT_EQ(bytes.size(), 8 + header_len + expected_data);

  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  std::vector<std::string> want_names;
  for (const Case& c : cases) want_names.push_back(c.spec.name);
  // Data order; "empty" shares its offset with its successor and sorts first (shorter range).
  EXPECT_EQ(r->names(), want_names);
  EXPECT_TRUE(r->metadata().empty());

  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec.name);
    const TensorInfo* info = r->find(c.spec.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->name, c.spec.name);
    ASSERT_TRUE(info->dtype.has_value());
    EXPECT_EQ(*info->dtype, c.spec.dtype);
    EXPECT_EQ(info->dtype_name, c.spec.dtype == DType::kF32    ? "F32"
                                : c.spec.dtype == DType::kBF16 ? "BF16"
                                                               : "F16");
    EXPECT_EQ(info->shape, c.spec.shape);
    const int64_t n = numel_of(c.spec.shape);
    EXPECT_EQ(info->numel, n);
    EXPECT_EQ(info->bytes.size(), static_cast<size_t>(n) * dtype_size(c.spec.dtype));

    const SourceData s = source_for(c);
    // Read in every dtype: the file dtype bit-exactly, the others converted on read.
    for (const DType dst : {DType::kF32, DType::kBF16, DType::kF16}) {
      std::vector<unsigned char> out(static_cast<size_t>(n) * dtype_size(dst) + 1);
      ASSERT_TRUE(r->read_as(c.spec.name, dst, out.data(), static_cast<size_t>(n)).is_ok());
      std::vector<float> got(static_cast<size_t>(n));
      convert(out.data(), dst, got.data(), DType::kF32, static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const float want = stored(stored(s.values[i], c.spec.dtype), dst);
        ASSERT_EQ(got[i], want) << "element " << i << " read as " << dtype_name(dst);
      }
    }
  }
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  const std::string p = path("meta.safetensors");
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"step", "1200"}, {"note", "quotes \" and \\ and ünïcode"}};
  ASSERT_TRUE(write_cases(p, {{{"x", DType::kF32, {2}}, DType::kF32, 1.0}}, meta).is_ok());
  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->metadata(), meta);
  EXPECT_EQ(r->names(), std::vector<std::string>{"x"});
}

TEST_F(SafetensorsTest, ReaderAndWriterAreMovable) {
  const std::string p = path("move.safetensors");
  Result<SafetensorsWriter> w0 =
      SafetensorsWriter::create(p, {{"a", DType::kF32, {2}}, {"b", DType::kF16, {1}}});
  ASSERT_TRUE(w0.is_ok()) << w0.status().to_string();
  SafetensorsWriter w = std::move(*w0);
  const float a[2] = {1.5f, -2.0f};
  ASSERT_TRUE(w.write_tensor("a", a, DType::kF32).is_ok());
  SafetensorsWriter w2 = std::move(w);
  const float b = 3.0f;
  ASSERT_TRUE(w2.write_tensor("b", &b, DType::kF32).is_ok());
  ASSERT_TRUE(w2.finish().is_ok());

  Result<SafetensorsReader> r0 = SafetensorsReader::open(p);
  ASSERT_TRUE(r0.is_ok());
  const TensorInfo* before = r0->find("a");
  SafetensorsReader r = std::move(*r0);
  EXPECT_EQ(r.find("a"), before) << "TensorInfo pointers must survive a move";
  float out[2];
  ASSERT_TRUE(r.read_as("a", DType::kF32, out, 2).is_ok());
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -2.0f);
}

// The format does not align tensor data; a F32 tensor after a 1-element BF16 one starts at
// offset 2. Also a header that is not padded to 8 bytes, and a header listing tensors out of data
// order.
TEST_F(SafetensorsTest, ReadsUnalignedDataAndUnpaddedHeader) {
  const std::vector<float> f = test_values(1000, 1.0);
  std::string data(2 + 4 * f.size(), '\0');
  const uint16_t one_bf16 = to_bf16(1.0f).bits;
  std::memcpy(data.data(), &one_bf16, 2);
  std::memcpy(data.data() + 2, f.data(), 4 * f.size());
  const std::string header =
      fmt::format(R"({{"late":{{"dtype":"F32","shape":[{}],"data_offsets":[2,{}]}},)"
                  R"("early":{{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}}})",
                  f.size(), 2 + 4 * f.size());
  const std::string p = path("unaligned.safetensors");
  write_file(p, raw_file(header + " ", data));  // odd header length
  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->names(), (std::vector<std::string>{"early", "late"}));
  for (const DType dst : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<unsigned char> out(f.size() * dtype_size(dst));
    ASSERT_TRUE(r->read_as("late", dst, out.data(), f.size()).is_ok());
    std::vector<float> got(f.size());
    convert(out.data(), dst, got.data(), DType::kF32, f.size());
    for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(got[i], stored(f[i], dst)) << i;
  }
}

// ------------------------------------------------------------------------------------------------
// Reader errors

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  const std::string p = path("nope.safetensors");
  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status().message();
}

TEST_F(SafetensorsTest, TruncatedFiles) {
  expect_open_error("", "truncated");
  expect_open_error(std::string("\x10\x00\x00", 3), "truncated");
  // A good file cut inside the data: the tensor whose bytes are gone is named.
  const std::string good = path("good.safetensors");
  ASSERT_TRUE(write_cases(good, {{{"a", DType::kF32, {4}}, DType::kF32, 1.0},
                                 {{"b", DType::kF32, {4}}, DType::kF32, 1.0}})
                  .is_ok());
  const std::string bytes = read_file(good);
  expect_open_error(bytes.substr(0, bytes.size() - 3), "tensor 'b'");
  // Cut inside the header.
  expect_open_error(bytes.substr(0, 20), "header length");
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  expect_open_error(raw_file("{}", "", 1000), "header length 1000 runs past the end");
  expect_open_error(raw_file("{}", "", ~uint64_t{0}), "runs past the end");
}

TEST_F(SafetensorsTest, BadJson) {
  expect_open_error(raw_file(R"({"a": {"dtype": "F32",)", ""), "not valid JSON");
  expect_open_error(raw_file("", ""), "not valid JSON");
  expect_open_error(raw_file("[1, 2]", ""), "not an object");
  expect_open_error(raw_file(R"({"a": 5})", ""), "tensor 'a'");
  expect_open_error(raw_file(R"({"__metadata__": {"k": 5}})", ""), "__metadata__");
  expect_open_error(raw_file(R"({"__metadata__": [1]})", ""), "__metadata__");
}

TEST_F(SafetensorsTest, MalformedEntries) {
  const std::string data(16, '\0');
  expect_open_error(raw_file(R"({"w":{"shape":[4],"data_offsets":[0,16]}})", data), "dtype");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,16]}})", data), "shape");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data),
                    "tensor 'w'");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[4.5],"data_offsets":[0,16]}})", data),
                    "tensor 'w'");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[4]}})", data), "data_offsets");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", data),
                    "data_offsets");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", data),
                    "begin > end");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],)"
                             R"("data_offsets":[0,16]}})",
                             data),
                    "overflows");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                             R"("w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                             data),
                    "tensor 'w' is listed twice");
}

TEST_F(SafetensorsTest, OffsetsOutOfBounds) {
  expect_open_error(
      raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", std::string(16, '\0')),
      "tensor 'w': data_offsets [8, 24] run past the end of the data section (16");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             std::string(16, '\0')),
                    "tensor 'b' (bytes [4, 12)) overlaps tensor 'a'");
  // A tensor inside another one, listed first in the header.
  expect_open_error(raw_file(R"({"in":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
                             R"("out":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                             std::string(16, '\0')),
                    "overlaps");
  // Identical ranges.
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                             std::string(8, '\0')),
                    "overlaps");
}

TEST_F(SafetensorsTest, SizeMismatch) {
  expect_open_error(raw_file(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})",
                             std::string(24, '\0')),
                    "tensor 'w': data_offsets [0, 24] span 24 bytes but dtype BF16 with shape "
                    "[2, 3] needs 12");
}

TEST_F(SafetensorsTest, UnknownDType) {
  expect_open_error(
      raw_file(R"({"w":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "tensor 'w': unknown dtype 'F12'");
}

TEST_F(SafetensorsTest, NonFloatDTypesAreListedButNotReadAsFloat) {
  const int64_t ids[3] = {7, -1, 1LL << 40};
  const std::string header = R"({"ids":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},)"
                             R"("mask":{"dtype":"U8","shape":[2,2],"data_offsets":[24,28]}})";
  std::string data(reinterpret_cast<const char*>(ids), 24);
  data += std::string("\x01\x00\x00\x01", 4);
  const std::string p = path("ints.safetensors");
  write_file(p, raw_file(header, data));
  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const TensorInfo* info = r->find("ids");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dtype_name, "I64");
  EXPECT_FALSE(info->dtype.has_value());
  EXPECT_EQ(info->numel, 3);
  ASSERT_EQ(info->bytes.size(), 24u);
  EXPECT_EQ(std::memcmp(info->bytes.data(), ids, 24), 0);
  float out[3];
  const Status st = r->read_as("ids", DType::kF32, out, 3);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("tensor 'ids'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("I64"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(p), std::string::npos) << st.message();
}

TEST_F(SafetensorsTest, MissingTensorAndWrongCount) {
  const std::string p = path("m.safetensors");
  ASSERT_TRUE(write_cases(p, {{{"w", DType::kF16, {2, 3}}, DType::kF32, 1.0}}).is_ok());
  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->find("nope"), nullptr);
  float out[6];
  Status st = r->read_as("nope", DType::kF32, out, 6);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("'nope'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(p), std::string::npos) << st.message();
  st = r->read_as("w", DType::kF32, out, 5);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tensor 'w' has 6 elements (shape [2, 3])"), std::string::npos)
      << st.message();
}

// ------------------------------------------------------------------------------------------------
// Writer errors

TEST_F(SafetensorsTest, WriteOutOfOrderIsRejectedAndWriterStaysUsable) {
  const std::string p = path("order.safetensors");
  Result<SafetensorsWriter> w =
      SafetensorsWriter::create(p, {{"first", DType::kF32, {1}}, {"second", DType::kF32, {1}}});
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  const float x = 1.0f;
  Status st = w->write_tensor("second", &x, DType::kF32);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("expected 'first'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("got 'second'"), std::string::npos) << st.message();
  st = w->write_tensor("bogus", &x, DType::kF32);
  EXPECT_FALSE(st.is_ok());
  ASSERT_TRUE(w->write_tensor("first", &x, DType::kF32).is_ok());
  ASSERT_TRUE(w->write_tensor("second", &x, DType::kF32).is_ok());
  st = w->write_tensor("third", &x, DType::kF32);
  EXPECT_NE(st.message().find("already written"), std::string::npos) << st.message();
  ASSERT_TRUE(w->finish().is_ok());
  EXPECT_TRUE(SafetensorsReader::open(p).is_ok());
}

TEST_F(SafetensorsTest, BadSpecsAreRejected) {
  const std::string p = path("specs.safetensors");
  Result<SafetensorsWriter> w =
      SafetensorsWriter::create(p, {{"a", DType::kF32, {1}}, {"a", DType::kF32, {2}}});
  ASSERT_FALSE(w.is_ok());
  EXPECT_NE(w.status().message().find("'a' given twice"), std::string::npos);
  w = SafetensorsWriter::create(p, {{"neg", DType::kF32, {2, -1}}});
  ASSERT_FALSE(w.is_ok());
  EXPECT_NE(w.status().message().find("'neg'"), std::string::npos);
  w = SafetensorsWriter::create(p, {{"__metadata__", DType::kF32, {1}}});
  ASSERT_FALSE(w.is_ok());
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(SafetensorsTest, FinishBeforeAllTensorsDiscardsAndKeepsOldFile) {
  const std::string p = path("keep.safetensors");
  write_file(p, "previous checkpoint");
  Result<SafetensorsWriter> w =
      SafetensorsWriter::create(p, {{"a", DType::kF32, {1}}, {"b", DType::kF32, {1}}});
  ASSERT_TRUE(w.is_ok());
  const float x = 1.0f;
  ASSERT_TRUE(w->write_tensor("a", &x, DType::kF32).is_ok());
  EXPECT_TRUE(fs::exists(p + ".tmp"));
  const Status st = w->finish();
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("'b'"), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_EQ(read_file(p), "previous checkpoint");
}

TEST_F(SafetensorsTest, AbandonedWriterRemovesTmpAndKeepsOldFile) {
  const std::string p = path("abandon.safetensors");
  write_file(p, "previous checkpoint");
  {
    Result<SafetensorsWriter> w = SafetensorsWriter::create(p, {{"a", DType::kF32, {1}}});
    ASSERT_TRUE(w.is_ok());
    EXPECT_TRUE(fs::exists(p + ".tmp"));
  }  // destroyed without finish(), as when an exception unwinds a checkpoint save
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_EQ(read_file(p), "previous checkpoint");
}

TEST_F(SafetensorsTest, UnwritableDirectoryIsAClearError) {
  const std::string file = path("regular_file");
  write_file(file, "x");
  const std::string p = file + "/model.safetensors";  // a path under a regular file
  Result<SafetensorsWriter> w = SafetensorsWriter::create(p, {{"a", DType::kF32, {1}}});
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kIoError);
  EXPECT_NE(w.status().message().find(p), std::string::npos) << w.status().message();
  EXPECT_NE(w.status().message().find("Not a directory"), std::string::npos)
      << w.status().message();

  const std::string missing = path("no/such/dir/model.safetensors");
  w = SafetensorsWriter::create(missing, {{"a", DType::kF32, {1}}});
  ASSERT_FALSE(w.is_ok());
  EXPECT_NE(w.status().message().find(missing), std::string::npos) << w.status().message();
}

// A full disk, simulated with RLIMIT_FSIZE: with SIGXFSZ ignored, a write past the limit fails with
// EFBIG like it would with ENOSPC. The writer must report the path, remove the .tmp and refuse
// further work.
TEST_F(SafetensorsTest, FullDiskIsAClearErrorAndLeavesNothing) {
  const std::string p = path("full.safetensors");
  const std::vector<float> big = test_values(64 * 1024, 1.0);  // 256 KiB
  Result<SafetensorsWriter> w = SafetensorsWriter::create(
      p, {{"small", DType::kF32, {4}}, {"big", DType::kF32, {static_cast<int64_t>(big.size())}}});
  ASSERT_TRUE(w.is_ok());
  ASSERT_TRUE(w->write_tensor("small", big.data(), DType::kF32).is_ok());

  struct rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small_limit = old_limit;
  small_limit.rlim_cur = 64 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  const Status st = w->write_tensor("big", big.data(), DType::kF32);
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find(p + ".tmp"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("free disk space"), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_FALSE(fs::exists(p));
  EXPECT_EQ(w->finish().code(), StatusCode::kAborted);
  EXPECT_FALSE(fs::exists(p));
}

// ------------------------------------------------------------------------------------------------
// Cross-check with PyTorch (torch 1.13 has no safetensors package: Python parses the header with
// json/struct and interprets the bytes with torch.frombuffer).

constexpr const char* kPython = "/usr/bin/python3";

bool have_torch() {
  static const bool have =
      std::system(fmt::format("{} -c 'import torch' >/dev/null 2>&1", kPython).c_str()) == 0;
  return have;
}

// The cases shared with Python: name, dtype, shape, scale. Values are test_value(i, scale).
struct PyCase {
  const char* name;
  DType dtype;
  std::vector<int64_t> shape;
  double scale;
};
std::vector<PyCase> py_cases() {
  return {
      {"alpha", DType::kF32, {3, 5}, 1.0},
      {"h.0.mlp.c_fc.weight", DType::kBF16, {4, 33}, 1.0},
      {"tiny_f16", DType::kF16, {7, 9}, 1e-5},    // fp16 denormals
      {"huge_f16", DType::kF16, {2, 50}, 3e4},    // beyond 65504: Inf
      {"huge_bf16", DType::kBF16, {3, 3}, 1e38},  // near the top of bf16
      {"scalar", DType::kF32, {}, 2.0},
      {"fine_bf16", DType::kBF16, {257}, 1.0 / 3},  // values needing rounding
  };
}

const char* st_name(DType t) {
  return t == DType::kF32 ? "F32" : t == DType::kBF16 ? "BF16" : "F16";
}

std::string py_cases_json() {
  json j = json::array();
  for (const PyCase& c : py_cases()) j.push_back({c.name, st_name(c.dtype), c.shape, c.scale});
  return j.dump();
}

// Shared Python helpers: the reference values, computed like test_value(), and dtype names.
constexpr const char* kPyCommon = R"PY(
import json, struct, sys, torch
DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
INT = {"F32": torch.int32, "BF16": torch.int16, "F16": torch.int16}
def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n
def ref(n, scale):
    k = torch.tensor([float((i * 7919) % 2003 - 1001) for i in range(n)], dtype=torch.float64)
    return (k / 311.0 * scale).to(torch.float32)
cases = json.load(open(sys.argv[2]))
)PY";

constexpr const char* kPyVerify = R"PY(
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
assert n % 8 == 0, f"header length {n} not a multiple of 8"
header = json.loads(raw[8:8 + n].decode("utf-8"))
data = raw[8 + n:]
meta = header.pop("__metadata__")
assert meta == {"format": "pt", "producer": "zerotrain"}, meta
assert list(header) == [c[0] for c in cases], f"order {list(header)}"
pos = 0
for name, dt, shape, scale in cases:
    e = header[name]
    assert e["dtype"] == dt and e["shape"] == shape, (name, e)
    b, end = e["data_offsets"]
    assert b == pos, f"{name}: offset {b}, expected {pos} (tightly packed)"
    pos = end
    got = torch.frombuffer(bytearray(data[b:end]), dtype=DT[dt]).reshape(shape)
    want = ref(numel(shape), scale).to(DT[dt]).reshape(shape)
    if not torch.equal(got.view(INT[dt]), want.view(INT[dt])):
        bad = (got.view(INT[dt]) != want.view(INT[dt])).reshape(-1).nonzero()[:5].reshape(-1)
        sys.exit(f"{name}: bits differ at {bad.tolist()}: got {got.reshape(-1)[bad].tolist()} "
                 f"want {want.reshape(-1)[bad].tolist()}")
assert pos == len(data), f"data section {len(data)} bytes, tensors end at {pos}"
print("python verified", len(cases), "tensors")
)PY";

constexpr const char* kPyWrite = R"PY(
blobs, entries, pos = [], {}, 0
for name, dt, shape, scale in cases:
    t = ref(numel(shape), scale).to(DT[dt]).reshape(shape)
    b = bytes(t.reshape(-1).view(torch.uint8).tolist())
    entries[name] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + len(b)]}
    blobs.append(b)
    pos += len(b)
ids = torch.tensor([1, 2, 3, -4], dtype=torch.int64)
b = bytes(ids.view(torch.uint8).tolist())
entries["ids"] = {"dtype": "I64", "shape": [4], "data_offsets": [pos, pos + len(b)]}
blobs.append(b)
# Header entries in reverse data order and unpadded, to exercise the reader's generality.
header = {"__metadata__": {"source": "torch " + torch.__version__}}
for name in reversed(list(entries)):
    header[name] = entries[name]
h = json.dumps(header).encode("utf-8")
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
print("python wrote", sys.argv[1])
)PY";

// Runs a Python script; returns its exit status and leaves stdout+stderr in *output.
int run_python(const std::string& dir, const std::string& body, const std::string& file,
               std::string* output) {
  const std::string script = dir + "/check.py";
  const std::string cases = dir + "/cases.json";
  const std::string log = dir + "/python.log";
  write_file(script, std::string(kPyCommon) + body);
  write_file(cases, py_cases_json());
  const int rc = std::system(
      fmt::format("{} '{}' '{}' '{}' >'{}' 2>&1", kPython, script, file, cases, log).c_str());
  *output = read_file(log);
  return rc;
}

TEST_F(SafetensorsTest, PyTorchReadsOurFile) {
  if (!have_torch()) {
    GTEST_SKIP() << kPython << " cannot import torch; install python3-torch to cross-check";
  }
  const std::string p = path("ours.safetensors");
  std::vector<TensorSpec> specs;
  for (const PyCase& c : py_cases()) specs.push_back({c.name, c.dtype, c.shape});
  Result<SafetensorsWriter> w =
      SafetensorsWriter::create(p, specs, {{"format", "pt"}, {"producer", "zerotrain"}});
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  for (const PyCase& c : py_cases()) {
    const std::vector<float> v = test_values(numel_of(c.shape), c.scale);
    ASSERT_TRUE(w->write_tensor(c.name, v.data(), DType::kF32).is_ok());  // converts on write
  }
  ASSERT_TRUE(w->finish().is_ok());
  std::string out;
  EXPECT_EQ(run_python(dir_, kPyVerify, p, &out), 0) << out;
}

TEST_F(SafetensorsTest, WeReadPyTorchFile) {
  if (!have_torch()) {
    GTEST_SKIP() << kPython << " cannot import torch; install python3-torch to cross-check";
  }
  const std::string p = path("theirs.safetensors");
  std::string out;
  ASSERT_EQ(run_python(dir_, kPyWrite, p, &out), 0) << out;
  Result<SafetensorsReader> r = SafetensorsReader::open(p);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->metadata().count("source"), 1u);
  std::vector<std::string> want_names;
  for (const PyCase& c : py_cases()) want_names.push_back(c.name);
  want_names.push_back("ids");
  EXPECT_EQ(r->names(), want_names);  // data order, not header order
  for (const PyCase& c : py_cases()) {
    SCOPED_TRACE(c.name);
    const TensorInfo* info = r->find(c.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, c.dtype);
    EXPECT_EQ(info->shape, c.shape);
    const std::vector<float> v = test_values(numel_of(c.shape), c.scale);
    std::vector<float> got(v.size());
    ASSERT_TRUE(r->read_as(c.name, DType::kF32, got.data(), got.size()).is_ok());
    for (size_t i = 0; i < v.size(); ++i) {
      // torch's rounding to bf16/fp16 must be ours, bit for bit.
      ASSERT_EQ(f32_bits(got[i]), f32_bits(stored(v[i], c.dtype)))
          << "element " << i << ": torch " << got[i] << ", ours " << stored(v[i], c.dtype);
    }
  }
  const TensorInfo* ids = r->find("ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype_name, "I64");
  int64_t vals[4];
  ASSERT_EQ(ids->bytes.size(), sizeof(vals));
  std::memcpy(vals, ids->bytes.data(), sizeof(vals));
  EXPECT_EQ(vals[0], 1);
  EXPECT_EQ(vals[3], -4);
  float f[4];
  EXPECT_EQ(r->read_as("ids", DType::kF32, f, 4).code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace zt
