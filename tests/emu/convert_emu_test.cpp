// kernels/cuda/convert.cu on the CPU emulator (cuda_emu.h): launch_convert between every pair of
// fp32/bf16/fp16, bit for bit against the conversions of kernels/half.h (round to nearest even,
// overflow to Inf, denormals, NaN kept NaN), aligned and unaligned; the kernel is a template whose
// arguments are deduced at the launch (the emulator's launch_deduced path).
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/convert.cuh"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;

class ConvertEmuTest : public EmuTest {};

TEST_F(ConvertEmuTest, EveryPairBitExact) {
  const std::vector<float> special = {
      0.0f,   -0.0f, 1.0f,     -1.5f,     65504.0f, 65520.0f,    1e-8f,        6e-8f,
      -3e-5f, 1e38f, INFINITY, -INFINITY, NAN,      1.00390625f, 1.001953125f, 3.14159265f};
  for (int src_dt : kAllDtypes) {
    for (int dst_dt : kAllDtypes) {
      for (size_t n : {size_t{1}, size_t{1000}}) {
        for (size_t off : {size_t{0}, size_t{1}}) {
          Rng rng(n + 10 * src_dt + dst_dt);
          Buf src(src_dt, n, off), dst(dst_dt, n, 1 - off);
          src.fill_uniform(rng, -100.0, 100.0);
          for (size_t i = 0; i < n && i < special.size(); ++i) src.set(i * 7 % n, special[i]);
          ASSERT_EQ(kc::launch_convert(src.data(), src_dt, dst.data(), dst_dt, n, nullptr),
                    cudaSuccess);
          const std::string tag = std::string(dt_name(src_dt)) + " -> " + dt_name(dst_dt) + " n " +
                                  std::to_string(n) + " offset " + std::to_string(off);
          for (size_t i = 0; i < n; ++i) {
            const float v = src.get(i), got = dst.get(i), want = round_to(dst_dt, v);
            if (std::isnan(want)) {
              EXPECT_TRUE(std::isnan(got)) << tag << " element " << i;
            } else {
              EXPECT_EQ(std::memcmp(&got, &want, 4), 0)
                  << tag << " element " << i << ": " << v << " -> " << got << ", want " << want;
            }
          }
          EXPECT_TRUE(dst.guards_intact()) << tag;
        }
      }
    }
  }
  EXPECT_EQ(kc::launch_convert(nullptr, 3, nullptr, 0, 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(kc::launch_convert(nullptr, 0, nullptr, 0, 0, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace zt::emu_test
