// CUDA foundation: the device kernels and libraries link; on a machine with a GPU, the device
// dtype conversion matches the CPU one bit for bit over every 16-bit pattern, and cuBLAS's SGEMM
// matches an fp64 loop. Without a device every test skips, saying why.
#include <cmath>
#include <cstring>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "kernels/cuda/convert.cuh"
#include "runtime/backend/cuda/cuda_device.h"
#include "runtime/core/dtype.h"

namespace zt {
namespace {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto devs = cuda::list_devices();
    if (!devs.is_ok())
      GTEST_SKIP() << "skipped: " << devs.status().message() << " (" << cuda::library_versions()
                   << ")";
  }
};

TEST_F(CudaTest, ConvertMatchesCpuOnEveryPattern) {
  for (DType src_t : {DType::kBF16, DType::kF16}) {
    std::vector<uint16_t> src(65536);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint16_t>(i);
    std::vector<float> want(src.size()), got(src.size());
    convert(src.data(), src_t, want.data(), DType::kF32, src.size());
    void *d_src = nullptr, *d_dst = nullptr;
    ASSERT_EQ(cudaMalloc(&d_src, src.size() * 2), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_dst, src.size() * 4), cudaSuccess);
    cudaMemcpy(d_src, src.data(), src.size() * 2, cudaMemcpyHostToDevice);
    ASSERT_EQ(
        kernels::cuda::launch_convert(d_src, static_cast<int>(src_t), d_dst, 0, src.size(), 0),
        cudaSuccess);
    cudaMemcpy(got.data(), d_dst, got.size() * 4, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < src.size(); ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << i;
      } else {
        ASSERT_EQ(0, std::memcmp(&want[i], &got[i], 4)) << dtype_name(src_t) << " pattern " << i;
      }
    }
    // fp32 -> 16 bits: random values round the same way on both sides.
    std::vector<float> f(65536);
    uint32_t s = 12345;
    for (float& x : f) {
      s = s * 1664525u + 1013904223u;
      x = std::ldexp(static_cast<float>(s >> 8) / 16777216.0f - 0.5f,
                     static_cast<int>(s % 40) - 20);
    }
    std::vector<uint16_t> want16(f.size()), got16(f.size());
    convert(f.data(), DType::kF32, want16.data(), src_t, f.size());
    void* d_f = nullptr;
    ASSERT_EQ(cudaMalloc(&d_f, f.size() * 4), cudaSuccess);
    cudaMemcpy(d_f, f.data(), f.size() * 4, cudaMemcpyHostToDevice);
    ASSERT_EQ(kernels::cuda::launch_convert(d_f, 0, d_src, static_cast<int>(src_t), f.size(), 0),
              cudaSuccess);
    cudaMemcpy(got16.data(), d_src, f.size() * 2, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < f.size(); ++i)
      ASSERT_EQ(want16[i], got16[i]) << dtype_name(src_t) << " value " << f[i];
    cudaFree(d_f);
    cudaFree(d_src);
    cudaFree(d_dst);
  }
}

TEST_F(CudaTest, CublasSgemmMatchesFp64) {
  const int M = 33, N = 17, K = 65;
  std::vector<float> a(M * K), b(K * N), c(M * N);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 37 % 101) - 50) / 50.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 53 % 97) - 48) / 48.0f;
  float *da, *db, *dc;
  cudaMalloc(&da, a.size() * 4);
  cudaMalloc(&db, b.size() * 4);
  cudaMalloc(&dc, c.size() * 4);
  cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float one = 1.0f, zero = 0.0f;
  // Column-major: C (M,N) = A (M,K) B (K,N).
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, da, M, db, K, &zero, dc, M),
            CUBLAS_STATUS_SUCCESS);
  cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double ref = 0;
      for (int k = 0; k < K; ++k) ref += static_cast<double>(a[k * M + i]) * b[j * K + k];
      EXPECT_NEAR(c[j * M + i], ref, 1e-4 * (1 + std::fabs(ref)));
    }
  cublasDestroy(h);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
}

TEST(CudaLibraries, VersionsAreReported) {
  const std::string v = cuda::library_versions();
  EXPECT_NE(v.find("NCCL"), std::string::npos) << v;
}

}  // namespace
}  // namespace zt
