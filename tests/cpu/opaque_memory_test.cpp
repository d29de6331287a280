// The opaque test backend (tests/support/opaque_backend.h) has teeth: its memory faults when the
// host dereferences it, its ops refuse host pointers, and yet it computes exactly what the CPU
// backend does. A one-rank training run on it matches the CPU backend bit for bit (the MPI test
// tests/mpi/opaque_backend_test.cpp covers ZeRO stages, offload and optimizers), and a config
// naming another backend than the worker runs is refused.
#include "tests/support/opaque_backend.h"

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/backend/backend.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

using testing::TempDir;

TEST(OpaqueBackendDeathTest, HostReadThroughBackendMemoryFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto be = testing::make_opaque_backend();
  Buffer buf = be->allocate(64, MemCategory::kWorkspace).value();
  EXPECT_DEATH(
      {
        volatile float x = *static_cast<volatile float*>(buf.data());
        (void)x;
      },
      "");
  EXPECT_DEATH(*static_cast<volatile float*>(buf.data()) = 1.0f, "");
}

TEST(OpaqueBackendTest, CopiesRoundTripAndOpsMatchTheCpuBackend) {
  auto be = testing::make_opaque_backend();
  EXPECT_FALSE(be->host_accessible());
  EXPECT_TRUE(make_cpu_backend()->host_accessible());
  EXPECT_TRUE(be->make_host_backend()->host_accessible());
  const std::vector<float> host = {1.5f, -2.25f, 3.0f, 1e-3f};
  Buffer a = be->allocate(16, MemCategory::kWorkspace).value();
  Buffer b = be->allocate(16, MemCategory::kWorkspace).value();
  Buffer h = be->allocate(8, MemCategory::kWorkspace).value();
  EXPECT_TRUE(testing::is_tagged(a.data()));
  be->copy(a.data(), host.data(), 16);
  be->copy(b.data(), a.data(), 16);  // device to device
  std::vector<float> back(4);
  be->copy(back.data(), b.data(), 16);
  EXPECT_EQ(back, host);
  // convert runs on device memory and gives the CPU backend's bits.
  be->ops().convert(h.as(DType::kBF16, {4}), a.as(DType::kF32, {4}));
  std::vector<bf16> got(4), want(4);
  be->copy(got.data(), h.data(), 8);
  convert(host.data(), DType::kF32, want.data(), DType::kBF16, 4);
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), 8));
  EXPECT_EQ(be->ops().sum_squares(a.as(DType::kF32, {4})),
            make_cpu_backend()->ops().sum_squares(
                Tensor(const_cast<float*>(host.data()), DType::kF32, {4})));
}

TEST(OpaqueBackendTest, OpsRefuseHostPointers) {
  auto be = testing::make_opaque_backend();
  std::vector<float> host(4, 1.0f), host2(4);
  Buffer a = be->allocate(16, MemCategory::kWorkspace).value();
  const Tensor h(host.data(), DType::kF32, {4});
  EXPECT_THROW(be->ops().convert(a.as(DType::kF32, {4}), h), CheckError);
  EXPECT_THROW(be->ops().sum_squares(h), CheckError);
  const AdamWArgs args{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0.1f, 0.001f, 1.0f};
  float* dev = static_cast<float*>(a.data());
  EXPECT_THROW(be->optimizer_ops().adamw(dev, dev, dev, host2.data(), DType::kF32, 4, args),
               CheckError);
}

class OpaqueTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.file("tokens.bin");
    testing::write_llmc_tokens(data_, testing::patterned_tokens(4096, 64));
  }
  TempDir dir_;
  std::string data_;
};

// One rank (a local communicator): the losses, norms and master weights of a few steps equal the
// CPU backend's, bit for bit, at stage 0 in bf16 with AdamW.
TEST_F(OpaqueTrainerTest, OneRankMatchesTheCpuBackend) {
  JobConfig cfg = testing::small_job(data_);
  cfg.bf16.enabled = true;
  auto cpu = make_cpu_backend();
  auto cpu_t = Trainer::create(cfg, *cpu);
  ASSERT_TRUE(cpu_t.is_ok()) << cpu_t.status().to_string();
  cfg.backend = BackendKind::kCuda;  // the opaque backend plays the device
  auto opq = testing::make_opaque_backend();
  auto opq_t = Trainer::create(cfg, *opq);
  ASSERT_TRUE(opq_t.is_ok()) << opq_t.status().to_string();
  for (int s = 0; s < 3; ++s) {
    auto a = (*cpu_t)->step();
    auto b = (*opq_t)->step();
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    EXPECT_EQ(a->loss, b->loss) << "step " << s + 1;
    EXPECT_EQ(a->grad_norm, b->grad_norm) << "step " << s + 1;
  }
  // Forward only (the evaluation path) reads its losses back the same way.
  EXPECT_EQ((*cpu_t)->evaluate(5).value(), (*opq_t)->evaluate(5).value());
  const std::vector<float> wa = (*cpu_t)->master_weights().value();
  const std::vector<float> wb = (*opq_t)->master_weights().value();
  ASSERT_EQ(wa.size(), wb.size());
  EXPECT_EQ(0, std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float)));
}

TEST_F(OpaqueTrainerTest, ConfigMustNameTheBackendTheWorkerRuns) {
  JobConfig cfg = testing::small_job(data_);
  auto opq = testing::make_opaque_backend();
  auto r = Trainer::create(cfg, *opq);  // backend: cpu, but the worker runs a device backend
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().to_string().find("config says backend: cpu but this worker runs the cuda"),
            std::string::npos)
      << r.status().to_string();
  cfg.backend = BackendKind::kCuda;
  auto cpu = make_cpu_backend();
  auto r2 = Trainer::create(cfg, *cpu);
  ASSERT_FALSE(r2.is_ok());
  EXPECT_NE(r2.status().to_string().find("config says backend: cuda but this worker runs the cpu"),
            std::string::npos)
      << r2.status().to_string();
}

}  // namespace
}  // namespace zt
