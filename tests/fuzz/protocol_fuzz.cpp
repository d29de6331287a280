// libFuzzer target for the control-protocol decoder (the trust boundary of the coordinator).
//
// Properties checked on every input, besides "does not crash, hang or leak" (the sanitizers'):
//   - a refused frame comes with a message (an empty one would make a useless log line);
//   - a frame decode() accepts re-encodes to a frame that decodes again and re-encodes to the same
//     bytes, i.e. everything accepted is representable and nothing is lost or invented.
// Built with -fsanitize=fuzzer where clang offers it; tests/fuzz/protocol_fuzz_replay.cpp drives
// the same function with generated inputs (and replays crash files) under any compiler.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "protocol/codec.h"

namespace {

// Larger than any input libFuzzer is allowed to make (-max_len), so the size check is not what
// stops the interesting inputs.
constexpr size_t kFuzzMaxFrameBytes = size_t{1} << 20;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "protocol_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace zt::protocol;
  zt::Result<DecodedMessage> decoded = decode(data, size, kFuzzMaxFrameBytes);
  if (!decoded.is_ok()) {
    if (decoded.status().message().empty()) fail("refused without a message", "");
    return 0;
  }
  const std::string once = encode(decoded->body);
  zt::Result<DecodedMessage> again = decode(once, kFuzzMaxFrameBytes);
  if (!again.is_ok()) fail("re-encoded frame does not decode", again.status().message());
  if (encode(again->body) != once) {
    fail("re-encoding is not stable", message_kind_name(decoded->kind()));
  }
  return 0;
}
