// Drives LLVMFuzzerTestOneInput (protocol_fuzz.cpp) without libFuzzer, so any compiler can run a
// deterministic "fuzz" pass in the test suite, and crash files found by libFuzzer can be replayed
// under a debugger.
//
//   protocol_fuzz_replay [--iterations N] [--seed S]   generated inputs (default 100000, seed 1)
//   protocol_fuzz_replay FILE|DIR...                    replay files (libFuzzer corpora, crashes)
//   protocol_fuzz_replay --write-seeds DIR              one valid frame per message kind and more,
//                                                       as a libFuzzer seed corpus
//
// Generated inputs: every prefix of one frame per message kind, then a mix of valid frames (which
// must decode to the message that was encoded), mutated frames and random bytes. A property
// violation aborts inside LLVMFuzzerTestOneInput; exit status 1 for a valid frame that does not
// round-trip.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "protocol/codec.h"
#include "tests/fuzz/message_gen.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;
using zt::protocol::decode;
using zt::protocol::encode;
using zt::protocol::kNumMessageKinds;
using zt::protocol::Message;
using zt::protocol::MessageKind;
using zt::protocol::testing::MessageGen;

void run_one(const std::string& bytes) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

bool replay_path(const fs::path& p, size_t* count) {
  if (fs::is_directory(p)) {
    for (const auto& entry : fs::directory_iterator(p)) {
      if (entry.is_regular_file() && !replay_path(entry.path(), count)) return false;
    }
    return true;
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "protocol_fuzz_replay: cannot read %s\n", p.c_str());
    return false;
  }
  run_one(std::string(std::istreambuf_iterator<char>(in), {}));
  ++*count;
  return true;
}

int write_seeds(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MessageGen gen(12345);
  int n = 0;
  for (size_t k = 0; k < kNumMessageKinds; ++k) {
    for (int variant = 0; variant < 4; ++variant) {
      const std::string frame = encode(gen.of_kind(static_cast<MessageKind>(k)));
      std::ofstream out(dir / ("seed_" + std::to_string(k) + "_" + std::to_string(variant)),
                        std::ios::binary);
      out.write(frame.data(), static_cast<std::streamsize>(frame.size()));
      if (!out) {
        std::fprintf(stderr, "protocol_fuzz_replay: cannot write seeds into %s\n", dir.c_str());
        return 1;
      }
      ++n;
    }
  }
  std::printf("protocol_fuzz_replay: wrote %d seeds to %s\n", n, dir.c_str());
  return 0;
}

int generate(uint64_t iterations, uint64_t seed) {
  MessageGen gen(seed);
  uint64_t accepted = 0, refused = 0;
  auto feed = [&](const std::string& bytes) {
    run_one(bytes);  // aborts on a property violation
    (decode(bytes, size_t{1} << 20).is_ok() ? accepted : refused) += 1;
  };
  // Every prefix of a frame of each kind: the decoder's bounds checks at every cut.
  for (size_t k = 0; k < kNumMessageKinds; ++k) {
    const std::string frame = encode(gen.of_kind(static_cast<MessageKind>(k)));
    for (size_t n = 0; n < frame.size(); ++n) feed(frame.substr(0, n));
  }
  for (uint64_t i = 0; i < iterations; ++i) {
    switch (i % 4) {
      case 0: {  // valid: must come back as it went in
        const Message m = gen.any();
        const std::string frame = encode(m);
        auto d = decode(frame);
        if (!d.is_ok() || !(d->body == m)) {
          std::fprintf(stderr, "protocol_fuzz_replay: valid %s frame (iteration %llu) %s\n",
                       zt::protocol::message_kind_name(zt::protocol::kind_of(m)),
                       static_cast<unsigned long long>(i),
                       d.is_ok() ? "decoded to a different message" : d.status().message().c_str());
          return 1;
        }
        feed(frame);
        break;
      }
      case 1:
      case 2:
        feed(gen.mutate(encode(gen.any())));
        break;
      default:
        feed(gen.random_frame());
        break;
    }
  }
  std::printf(
      "protocol_fuzz_replay: %llu inputs (seed %llu): %llu decoded, %llu refused, "
      "no crash\n",
      static_cast<unsigned long long>(accepted + refused), static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(refused));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 100000, seed = 1;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--iterations" || a == "--seed" || a == "--write-seeds") && i + 1 >= argc) {
      std::fprintf(stderr, "protocol_fuzz_replay: %s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--iterations") {
      iterations = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--seed") {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--write-seeds") {
      return write_seeds(argv[++i]);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr,
                   "usage: protocol_fuzz_replay [--iterations N] [--seed S] | FILE|DIR... | "
                   "--write-seeds DIR\n");
      return 2;
    } else {
      paths.push_back(a);
    }
  }
  if (paths.empty()) return generate(iterations, seed);
  size_t count = 0;
  for (const auto& p : paths) {
    if (!replay_path(p, &count)) return 1;
  }
  std::printf("protocol_fuzz_replay: replayed %zu inputs, no crash\n", count);
  return 0;
}
