// StateStore: the memory and nvme kinds give the same bits for the same stream of updates, random
// access round-trips at any offset, errors name the file, and the nvme kind's resident memory is
// bounded by its buffers.
#include "runtime/offload/state_store.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace zt {
namespace {

// A fresh directory under /tmp (ext4 here, so O_DIRECT works), removed when the object dies. Kept
// local rather than taken from test_util.h, which pulls in the job config.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/zt_store_test_XXXXXX";
    const char* p = mkdtemp(tmpl);
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using Chunks = std::vector<std::pair<int64_t, int64_t>>;  // (begin, count) as fn saw them

// master and grad fp32, out fp32 written only, codes 8-bit read and written, flags 8-bit written
// only: every combination of element size and mask.
std::vector<StoreArray> mixed_arrays() {
  return {{"master", 4}, {"grad", 4}, {"out", 4}, {"codes", 1}, {"flags", 1}};
}
constexpr uint32_t kMixedRead = 0b01011;   // master, grad, codes
constexpr uint32_t kMixedWrite = 0b11101;  // master, out, codes, flags

// Each element is computed from element i of the read arrays only (never from a write-only one),
// so running it chunk by chunk or over the whole range at once gives the same bits.
StateStore::ChunkFn mixed_update(int pass, Chunks* seen) {
  return [pass, seen](int64_t begin, int64_t count, void* const* p) -> Status {
    if (seen) seen->emplace_back(begin, count);
    auto* master = static_cast<float*>(p[0]);
    const auto* grad = static_cast<const float*>(p[1]);
    auto* out = static_cast<float*>(p[2]);
    auto* codes = static_cast<uint8_t*>(p[3]);
    auto* flags = static_cast<uint8_t*>(p[4]);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t g = begin + i;
      master[i] = master[i] * 1.5f + grad[i] * static_cast<float>(codes[i]);
      out[i] = master[i] - static_cast<float>(g);
      codes[i] = static_cast<uint8_t>(codes[i] * 3 + g);
      flags[i] = static_cast<uint8_t>(g * 7 + pass);
    }
    return Status::ok();
  };
}

// The arrays as plain host bytes: the oracle.
struct Reference {
  std::vector<std::vector<uint8_t>> bytes;
  Reference(const std::vector<StoreArray>& arrays, int64_t n) {
    for (const StoreArray& a : arrays) bytes.emplace_back(static_cast<size_t>(n) * a.elem_bytes);
  }
  std::vector<void*> ptrs() {
    std::vector<void*> p;
    for (auto& b : bytes) p.push_back(b.data());
    return p;
  }
};

void fill_random(std::vector<uint8_t>& bytes, size_t elem_bytes, std::mt19937& rng) {
  if (elem_bytes == 4) {  // floats in [-1, 1): no NaN or Inf
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
      const float f = d(rng);
      std::memcpy(&bytes[i], &f, 4);
    }
  } else {
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  }
}

std::vector<uint8_t> dump(StateStore& s, int a) {
  std::vector<uint8_t> out(static_cast<size_t>(s.size()) * s.arrays()[a].elem_bytes);
  const Status st = s.read(a, 0, s.size(), out.data());
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  return out;
}

// The file behind an nvme store: location() is the path, maybe followed by " (buffered: ...)".
std::string file_of(const StateStore& s) {
  const std::string loc = s.location();
  return loc.substr(0, loc.find(" ("));
}

Chunks expected_chunks(int64_t n, int64_t chunk) {
  Chunks c;
  for (int64_t b = 0; b < n; b += chunk) c.emplace_back(b, std::min(chunk, n - b));
  return c;
}

bool dir_is_empty(const std::string& dir) {
  return std::filesystem::is_empty(std::filesystem::path(dir));
}

// ---------------------------------------------------------------------------------------------
// (1) The same updates give the same bits on both kinds, and the oracle's.

struct StreamCase {
  int64_t n;
  int64_t chunk;  // as asked; the store rounds it
  int buffer_count;
};

class StreamEquivalence : public ::testing::TestWithParam<StreamCase> {};

TEST_P(StreamEquivalence, MemoryAndNvmeGiveTheSameBits) {
  const StreamCase c = GetParam();
  TempDir dir;
  auto backend = make_cpu_backend();
  MemoryTracker tracker;
  auto mem =
      StateStore::in_memory(*backend, mixed_arrays(), c.n, c.chunk, MemCategory::kOptimizerStates);
  ASSERT_TRUE(mem.is_ok()) << mem.status().to_string();
  auto disk = StateStore::on_nvme(dir.path(), 0, mixed_arrays(), c.n, c.chunk, c.buffer_count,
                                  tracker, MemCategory::kOptimizerStates);
  ASSERT_TRUE(disk.is_ok()) << disk.status().to_string();
  StateStore& m = **mem;
  StateStore& d = **disk;
  const int64_t chunk = (c.chunk + 4095) / 4096 * 4096;
  const int64_t want_chunk = std::min(chunk, (std::max<int64_t>(c.n, 1) + 4095) / 4096 * 4096);
  EXPECT_EQ(m.chunk(), want_chunk);
  EXPECT_EQ(d.chunk(), want_chunk);
  EXPECT_TRUE(m.resident());
  EXPECT_FALSE(d.resident());
  EXPECT_EQ(d.data(0), nullptr);
  if (c.n > 0) {
    EXPECT_NE(m.data(0), nullptr);
  }
  EXPECT_EQ(m.location(), "memory");
  EXPECT_EQ(m.disk_bytes(), 0);

  // Both start zero-filled.
  for (int a = 0; a < 5; ++a) {
    const std::vector<uint8_t> z = dump(d, a);
    EXPECT_TRUE(std::all_of(z.begin(), z.end(), [](uint8_t b) { return b == 0; })) << a;
  }

  std::mt19937 rng(1234 + static_cast<uint32_t>(c.n));
  Reference ref(mixed_arrays(), c.n);
  for (int a = 0; a < 5; ++a) {
    fill_random(ref.bytes[a], mixed_arrays()[a].elem_bytes, rng);
    ASSERT_TRUE(m.write(a, 0, c.n, ref.bytes[a].data()).is_ok());
    ASSERT_TRUE(d.write(a, 0, c.n, ref.bytes[a].data()).is_ok());
  }

  const Chunks want = expected_chunks(c.n, want_chunk);
  for (int pass = 0; pass < 3; ++pass) {
    Chunks seen_m, seen_d;
    ASSERT_TRUE(m.stream(kMixedRead, kMixedWrite, mixed_update(pass, &seen_m)).is_ok());
    const Status st = d.stream(kMixedRead, kMixedWrite, mixed_update(pass, &seen_d));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    if (c.n > 0) {
      ASSERT_TRUE(mixed_update(pass, nullptr)(0, c.n, ref.ptrs().data()).is_ok());
    }
    EXPECT_EQ(seen_m, want);
    EXPECT_EQ(seen_d, want);
  }
  for (int a = 0; a < 5; ++a) {
    const std::vector<uint8_t> got_m = dump(m, a);
    const std::vector<uint8_t> got_d = dump(d, a);
    EXPECT_TRUE(got_m == got_d) << "array " << mixed_arrays()[a].name << " differs between kinds";
    EXPECT_TRUE(got_d == ref.bytes[a])
        << "array " << mixed_arrays()[a].name << " differs from the reference";
  }

  // A read-only pass sees exactly the stored values; a write-only pass stores what fn leaves.
  const auto check_seen = [&](int64_t begin, int64_t count, void* const* p) -> Status {
    for (int a = 0; a < 5; ++a) {
      const size_t eb = mixed_arrays()[a].elem_bytes;
      if (std::memcmp(p[a], ref.bytes[a].data() + begin * eb, count * eb) != 0) {
        return make_error(StatusCode::kDataError, "array {} differs in chunk at {}", a, begin);
      }
    }
    return Status::ok();
  };
  EXPECT_TRUE(m.stream(0b11111, 0, check_seen).is_ok());
  const Status seen_st = d.stream(0b11111, 0, check_seen);
  EXPECT_TRUE(seen_st.is_ok()) << seen_st.to_string();
  const auto set_flags = [](int64_t begin, int64_t count, void* const* p) -> Status {
    for (int64_t i = 0; i < count; ++i)
      static_cast<uint8_t*>(p[4])[i] = static_cast<uint8_t>((begin + i) % 251);
    return Status::ok();
  };
  ASSERT_TRUE(m.stream(0, 0b10000, set_flags).is_ok());
  ASSERT_TRUE(d.stream(0, 0b10000, set_flags).is_ok());
  for (int64_t i = 0; i < c.n; ++i) ref.bytes[4][i] = static_cast<uint8_t>(i % 251);
  for (int a = 0; a < 5; ++a) {
    EXPECT_TRUE(dump(m, a) == ref.bytes[a]) << a;
    EXPECT_TRUE(dump(d, a) == ref.bytes[a]) << a;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, StreamEquivalence,
                         ::testing::Values(StreamCase{3 * 4096 + 123, 4096, 3},
                                           StreamCase{3 * 4096 + 123, 4096, 5},
                                           StreamCase{8 * 4096, 4096, 3},
                                           StreamCase{8 * 4096, 4096, 5},
                                           StreamCase{20000, 5000, 4},  // chunk rounded to 8192
                                           StreamCase{1, 4096, 3}, StreamCase{0, 4096, 3},
                                           StreamCase{5000, 1 << 20, 3}),  // chunk cut down to 8192
                         [](const ::testing::TestParamInfo<StreamCase>& info) {
                           return "n" + std::to_string(info.param.n) + "_chunk" +
                                  std::to_string(info.param.chunk) + "_buffers" +
                                  std::to_string(info.param.buffer_count);
                         });

// Arrays outside the write mask are never stored back, even if fn scribbles on their buffer.
TEST(NvmeStateStore, OnlyWriteMaskIsStored) {
  TempDir dir;
  MemoryTracker tracker;
  const int64_t n = 3 * 4096 + 5;
  auto s = StateStore::on_nvme(dir.path(), 0, {{"a", 4}, {"b", 1}}, n, 4096, 3, tracker,
                               MemCategory::kOptimizerStates);
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  std::vector<uint8_t> b(n, 7);
  ASSERT_TRUE((*s)->write(1, 0, n, b.data()).is_ok());
  const Status st = (*s)->stream(0b11, 0b01, [](int64_t, int64_t count, void* const* p) -> Status {
    std::memset(p[0], 0x11, count * 4);
    std::memset(p[1], 0x22, count);
    return Status::ok();
  });
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_TRUE(dump(**s, 1) == b);
  EXPECT_TRUE(dump(**s, 0) == std::vector<uint8_t>(n * 4, 0x11));
}

// ---------------------------------------------------------------------------------------------
// (2) Random access at unaligned offsets and lengths.

TEST(StateStore, RandomAccessRoundTripsAndIsSeenByStream) {
  TempDir dir;
  auto backend = make_cpu_backend();
  MemoryTracker tracker;
  const std::vector<StoreArray> arrays = {{"w", 4}, {"q", 1}};
  // 3 buffers of 4096 * 5 bytes: the bounce space (60 KiB) is smaller than array w (81 KiB), so
  // long ranges go through it in several pieces.
  const int64_t n = 5 * 4096 + 333;
  auto mem = StateStore::in_memory(*backend, arrays, n, 4096, MemCategory::kOptimizerStates);
  auto disk = StateStore::on_nvme(dir.path(), 3, arrays, n, 4096, 3, tracker,
                                  MemCategory::kOptimizerStates);
  ASSERT_TRUE(mem.is_ok() && disk.is_ok()) << disk.status().to_string();
  std::vector<StateStore*> stores = {mem->get(), disk->get()};
  Reference ref(arrays, n);
  std::mt19937 rng(77);

  const auto random_range = [&](int64_t* begin, int64_t* count) {
    switch (rng() % 5) {
      case 0:  // short, anywhere
        *begin = rng() % n;
        *count = std::min<int64_t>(n - *begin, rng() % 9);
        break;
      case 1:  // up to the last element
        *count = 1 + rng() % 3000;
        *begin = n - *count;
        break;
      case 2:  // long, crossing pieces of the bounce space
        *begin = rng() % 100;
        *count = n - *begin - rng() % 100;
        break;
      default:
        *begin = rng() % n;
        *count = rng() % (n - *begin + 1);
    }
  };
  for (int op = 0; op < 120; ++op) {
    const int a = static_cast<int>(rng() % 2);
    const size_t eb = arrays[a].elem_bytes;
    int64_t begin = 0, count = 0;
    random_range(&begin, &count);
    std::vector<uint8_t> data(count * eb);
    for (uint8_t& x : data) x = static_cast<uint8_t>(rng());
    if (count > 0) std::memcpy(ref.bytes[a].data() + begin * eb, data.data(), data.size());
    for (StateStore* s : stores) {
      const Status st = s->write(a, begin, count, data.data());
      ASSERT_TRUE(st.is_ok()) << s->location() << ": " << st.to_string();
    }
    random_range(&begin, &count);
    for (StateStore* s : stores) {
      std::vector<uint8_t> got(count * eb + 1, 0xAB);
      const Status st = s->read(a, begin, count, got.data());
      ASSERT_TRUE(st.is_ok()) << s->location() << ": " << st.to_string();
      ASSERT_EQ(std::memcmp(got.data(), ref.bytes[a].data() + begin * eb, count * eb), 0)
          << s->location() << " array " << a << " [" << begin << ", +" << count << ")";
      ASSERT_EQ(got.back(), 0xAB) << "read past the end of the range";
    }
  }
  for (StateStore* s : stores) {
    int64_t checked = 0;
    const Status st = s->stream(0b11, 0, [&](int64_t begin, int64_t count, void* const* p) {
      for (int a = 0; a < 2; ++a) {
        const size_t eb = arrays[a].elem_bytes;
        if (std::memcmp(p[a], ref.bytes[a].data() + begin * eb, count * eb) != 0) {
          return make_error(StatusCode::kDataError, "array {} chunk at {} differs", a, begin);
        }
      }
      checked += count;
      return Status::ok();
    });
    EXPECT_TRUE(st.is_ok()) << s->location() << ": " << st.to_string();
    EXPECT_EQ(checked, n);
  }
  // Out of range is an error, not a crash.
  uint8_t x = 0;
  for (StateStore* s : stores) {
    EXPECT_EQ(s->read(0, n, 1, &x).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s->write(2, 0, 1, &x).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s->read(1, -1, 1, &x).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(
        s->stream(0b100, 0, [](int64_t, int64_t, void* const*) { return Status::ok(); }).code(),
        StatusCode::kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------------------------
// (3) Errors.

TEST(NvmeStateStore, MissingDirectoryIsNamed) {
  TempDir dir;
  MemoryTracker tracker;
  const std::string missing = dir.path() + "/no/such/dir";
  auto s = StateStore::on_nvme(missing, 0, mixed_arrays(), 10000, 4096, 3, tracker,
                               MemCategory::kOptimizerStates);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find(missing), std::string::npos) << s.status().to_string();
  EXPECT_NE(s.status().message().find("does not exist"), std::string::npos);
  EXPECT_EQ(tracker.total_current(), 0);
}

TEST(NvmeStateStore, RegularFileAsDirectoryIsNamed) {
  TempDir dir;
  MemoryTracker tracker;
  const std::string file = dir.path() + "/plain";
  std::ofstream(file) << "x";
  auto s = StateStore::on_nvme(file, 0, mixed_arrays(), 10000, 4096, 3, tracker,
                               MemCategory::kOptimizerStates);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find(file), std::string::npos) << s.status().to_string();
  EXPECT_NE(s.status().message().find("not a directory"), std::string::npos);
}

TEST(NvmeStateStore, BadArgumentsAreRefused) {
  TempDir dir;
  MemoryTracker tracker;
  auto backend = make_cpu_backend();
  const auto code = [](const auto& r) { return r.status().code(); };
  EXPECT_EQ(code(StateStore::on_nvme(dir.path(), 0, mixed_arrays(), 100, 4096, 2, tracker,
                                     MemCategory::kOptimizerStates)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(StateStore::on_nvme(dir.path(), 0, {}, 100, 4096, 3, tracker,
                                     MemCategory::kOptimizerStates)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(StateStore::in_memory(*backend, mixed_arrays(), -1, 4096,
                                       MemCategory::kOptimizerStates)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      code(StateStore::in_memory(*backend, mixed_arrays(), 10, 0, MemCategory::kOptimizerStates)),
      StatusCode::kInvalidArgument);
  EXPECT_TRUE(dir_is_empty(dir.path()));
}

// A small tmpfs mounted for the test (we run as root; skipped where mounting is not allowed).
class SmallTmpfs {
 public:
  explicit SmallTmpfs(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directory(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=1m") == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

TEST(NvmeStateStore, NoSpaceNamesPathAndBytesAndLeavesNoFile) {
  TempDir dir;
  const std::string small = dir.path() + "/small";
  SmallTmpfs fs(small);
  if (!fs.mounted())
    GTEST_SKIP() << "cannot mount a 1 MiB tmpfs at " << small << ": " << fs.error();
  MemoryTracker tracker;
  // 4 MiB of fp32 state on a 1 MiB file system.
  const int64_t n = 1 << 20;
  auto s = StateStore::on_nvme(small, 0, {{"master", 4}}, n, 4096, 3, tracker,
                               MemCategory::kOptimizerStates);
  ASSERT_FALSE(s.is_ok());
  const std::string& msg = s.status().message();
  EXPECT_NE(msg.find(small + "/zerotrain-states-rank0-"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(n * 4)), std::string::npos) << msg;
  EXPECT_TRUE(dir_is_empty(small)) << "the partial state file was left behind";
  EXPECT_EQ(tracker.total_current(), 0);

  // A store that fits works there too, O_DIRECT or buffered (said in location()).
  auto fits = StateStore::on_nvme(small, 1, {{"master", 4}, {"codes", 1}}, 3 * 4096 + 7, 4096, 3,
                                  tracker, MemCategory::kOptimizerStates);
  ASSERT_TRUE(fits.is_ok()) << fits.status().to_string();
  ::testing::Test::RecordProperty("tmpfs_location", (*fits)->location());
  const Status st = (*fits)->stream(0b11, 0b11, [](int64_t begin, int64_t count, void* const* p) {
    for (int64_t i = 0; i < count; ++i) {
      static_cast<float*>(p[0])[i] += static_cast<float>(begin + i);
      static_cast<uint8_t*>(p[1])[i] = static_cast<uint8_t>(i);
    }
    return Status::ok();
  });
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  float v = 0;
  ASSERT_TRUE((*fits)->read(0, 3 * 4096 + 6, 1, &v).is_ok());
  EXPECT_EQ(v, 3 * 4096 + 6);
  fits->reset();
  EXPECT_TRUE(dir_is_empty(small)) << "the state file outlived its store";
}

TEST(NvmeStateStore, TruncatedFileIsAShortReadNamingFileAndOffset) {
  TempDir dir;
  MemoryTracker tracker;
  const int64_t n = 4 * 4096;
  for (const int buffer_count : {3, 5}) {
    auto s = StateStore::on_nvme(dir.path(), 0, {{"master", 4}}, n, 4096, buffer_count, tracker,
                                 MemCategory::kOptimizerStates);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    const std::string path = file_of(**s);
    // Chunk 2 (bytes [32768, 49152)) keeps 100 bytes; chunk 3 is gone.
    ASSERT_EQ(::truncate(path.c_str(), 2 * 16384 + 100), 0) << std::strerror(errno);
    int calls = 0;
    const Status st = (*s)->stream(1, 1, [&](int64_t, int64_t, void* const*) {
      ++calls;
      return Status::ok();
    });
    ASSERT_FALSE(st.is_ok());
    EXPECT_EQ(st.code(), StatusCode::kIoError);
    EXPECT_NE(st.message().find("short read of '" + path + "' at offset 32768: got 100 of 16384"),
              std::string::npos)
        << st.message();
    EXPECT_LE(calls, 2);
    // Random access past the end fails the same way, and the store is still usable before it.
    float x[8] = {};
    const Status rd = (*s)->read(0, 3 * 4096 + 1, 8, x);
    EXPECT_FALSE(rd.is_ok());
    EXPECT_NE(rd.message().find(path), std::string::npos) << rd.message();
    EXPECT_TRUE((*s)->read(0, 5, 8, x).is_ok());

    // Truncated to nothing: the first read already fails.
    ASSERT_EQ(::truncate(path.c_str(), 0), 0);
    const Status st0 =
        (*s)->stream(1, 0, [](int64_t, int64_t, void* const*) { return Status::ok(); });
    EXPECT_NE(st0.message().find("short read of '" + path + "' at offset 0: got 0 of 16384"),
              std::string::npos)
        << st0.message();
    s->reset();
    EXPECT_FALSE(std::filesystem::exists(path));
  }
  EXPECT_EQ(tracker.total_current(), 0);
}

TEST(StateStore, FnErrorStopsStreamingAfterIssuedWrites) {
  TempDir dir;
  auto backend = make_cpu_backend();
  MemoryTracker tracker;
  const int64_t n = 6 * 4096 + 10;
  for (const int buffer_count : {3, 5}) {
    auto mem = StateStore::in_memory(*backend, {{"x", 4}}, n, 4096, MemCategory::kOptimizerStates);
    auto disk = StateStore::on_nvme(dir.path(), buffer_count, {{"x", 4}}, n, 4096, buffer_count,
                                    tracker, MemCategory::kOptimizerStates);
    ASSERT_TRUE(mem.is_ok() && disk.is_ok()) << disk.status().to_string();
    for (StateStore* s : {mem->get(), disk->get()}) {
      int calls = 0;
      const Status st = s->stream(1, 1, [&](int64_t begin, int64_t count, void* const* p) {
        ++calls;
        if (begin == 2 * 4096) return make_error(StatusCode::kAborted, "stop at chunk 2");
        for (int64_t i = 0; i < count; ++i) static_cast<float*>(p[0])[i] = 1.0f;
        return Status::ok();
      });
      EXPECT_EQ(st.code(), StatusCode::kAborted);
      EXPECT_EQ(st.message(), "stop at chunk 2");
      EXPECT_EQ(calls, 3);
      std::vector<float> x(n);
      ASSERT_TRUE(s->read(0, 0, n, x.data()).is_ok());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], i < 2 * 4096 ? 1.0f : 0.0f) << i;

      // An exception from fn leaves the store usable too.
      EXPECT_THROW((void)s->stream(1, 1,
                                   [](int64_t begin, int64_t, void* const*) -> Status {
                                     if (begin > 0) throw std::runtime_error("boom");
                                     return Status::ok();
                                   }),
                   std::runtime_error);
      int64_t total = 0;
      const Status again = s->stream(1, 1, [&](int64_t, int64_t count, void* const*) {
        total += count;
        return Status::ok();
      });
      EXPECT_TRUE(again.is_ok()) << again.to_string();
      EXPECT_EQ(total, n);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (4) Resident memory of the nvme kind is its buffers, whatever n is.

// RssAnon of this process in bytes (private anonymous pages; the page cache is not counted).
int64_t rss_anon_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  return -1;
}

TEST(NvmeStateStore, ResidentMemoryIsBoundedByTheBuffers) {
  if (rss_anon_bytes() < 0) GTEST_SKIP() << "no RssAnon in /proc/self/status";
  TempDir dir;
  MemoryTracker tracker;
  const std::vector<StoreArray> arrays = {{"master", 4}, {"m", 4}, {"v", 4}, {"codes", 1}};
  const int64_t chunk = 4 * 4096;
  const int buffer_count = 4;
  const int64_t buffer_bytes = buffer_count * chunk * 13;  // 832 KiB
  const int64_t n = 64 * chunk;                            // 13 MiB of state: 16x the buffers
  // Allowance beyond the buffers: the ptrs vector, std::function, malloc bookkeeping and the
  // odd page of stack or libc touched for the first time. Far below the state's 13 MiB.
  const int64_t overhead = 1 << 20;

  const int64_t before = rss_anon_bytes();
  {
    auto s = StateStore::on_nvme(dir.path(), 0, arrays, n, chunk, buffer_count, tracker,
                                 MemCategory::kOptimizerStates);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    ::testing::Test::RecordProperty("location", (*s)->location());
    EXPECT_EQ((*s)->resident_bytes(), buffer_bytes);
    EXPECT_EQ((*s)->disk_bytes(), n * 13);
    EXPECT_EQ(tracker.current(MemCategory::kOptimizerStates), buffer_bytes);
    EXPECT_EQ(tracker.total_current(), buffer_bytes);
    int64_t peak = 0;
    for (int pass = 1; pass <= 3; ++pass) {
      const Status st = (*s)->stream(0b1111, 0b1111, [](int64_t, int64_t count, void* const* p) {
        for (int64_t i = 0; i < count; ++i) {
          static_cast<float*>(p[0])[i] += 1.0f;
          static_cast<float*>(p[1])[i] += 2.0f;
          static_cast<float*>(p[2])[i] += 3.0f;
          static_cast<uint8_t*>(p[3])[i] += 4;
        }
        return Status::ok();
      });
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      peak = std::max(peak, rss_anon_bytes());
    }
    ::testing::Test::RecordProperty("rss_anon_growth_bytes", std::to_string(peak - before));
    EXPECT_LE(peak - before, buffer_bytes + overhead)
        << "RssAnon grew by " << (peak - before) << " bytes streaming " << n * 13
        << " bytes of state through " << buffer_bytes << " bytes of buffers";
    float m = 0;
    uint8_t code = 0;
    ASSERT_TRUE((*s)->read(1, n - 1, 1, &m).is_ok());
    ASSERT_TRUE((*s)->read(3, n / 2, 1, &code).is_ok());
    EXPECT_EQ(m, 6.0f);
    EXPECT_EQ(code, 12);
  }
  EXPECT_EQ(tracker.total_current(), 0);
  EXPECT_TRUE(dir_is_empty(dir.path()));
}

}  // namespace
}  // namespace zt
