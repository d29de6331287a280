// The CPU backend: host memory, a synchronous compute stream, kernels from kernels/cpu (OpenMP,
// OpenBLAS). Kernel scratch comes from one growing workspace buffer charged to kWorkspace.
#pragma once

#include <memory>

#include "runtime/backend/backend.h"

namespace zt {

class CpuOps;

// The CPU implementation of OptimizerOps (cpu_optimizer_ops.cpp); stateless, over host memory.
std::unique_ptr<OptimizerOps> make_cpu_optimizer_ops();

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  ~CpuBackend() override;

  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }
  bool host_accessible() const override { return true; }
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void synchronize() override {}  // the CPU stream is synchronous
  Ops& ops() override;
  OptimizerOps& optimizer_ops() override { return *optimizer_ops_; }

  // Scratch of at least `bytes`, valid until the next call (ops run one at a time).
  void* workspace(size_t bytes);

 protected:
  void* raw_alloc(size_t bytes) override;
  void raw_free(void* p, size_t bytes) override;

 private:
  std::unique_ptr<CpuOps> ops_;
  std::unique_ptr<OptimizerOps> optimizer_ops_;
  Buffer workspace_;
};

}  // namespace zt
