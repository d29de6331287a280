// optimizer_kernel_dump: runs one CPU optimizer kernel (kernels/optimizer.h) for several steps on
// inputs read from a file and writes every step's weights and state, for
// tests/e2e/optimizer_torch_check.py to compare with torch.optim (e2e.optimizer_torch).
//
//   optimizer_kernel_dump adamw IN OUT n steps lr beta1 beta2 eps weight_decay grad_scale
//   optimizer_kernel_dump sgd   IN OUT n steps lr momentum dampening weight_decay nesterov(0|1)
//                               grad_scale
//
// IN holds little-endian fp32: the initial weights (n), then the fp32 gradients of every step
// (steps x n). The moments start at zero (AdamW) and the momentum buffer is set on the first step
// (SGD), as in torch. OUT receives, per step, the weights (n) and then the state: AdamW m and v,
// SGD the momentum buffer (when momentum != 0). AdamW's bias corrections are 1 - beta^step,
// computed in fp64 as torch does and passed as fp32.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/optimizer.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: optimizer_kernel_dump adamw IN OUT n steps lr beta1 beta2 eps weight_decay "
               "grad_scale\n"
               "       optimizer_kernel_dump sgd IN OUT n steps lr momentum dampening "
               "weight_decay nesterov(0|1) grad_scale\n");
  return 2;
}

bool read_all(const std::string& path, std::vector<float>& out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  const size_t got = std::fread(out.data(), sizeof(float), out.size(), f);
  const bool at_end = std::fgetc(f) == EOF;
  std::fclose(f);
  return got == out.size() && at_end;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) return usage();
  const std::string opt = argv[1], in_path = argv[2], out_path = argv[3];
  const size_t n = std::strtoull(argv[4], nullptr, 10);
  const int steps = std::atoi(argv[5]);
  if ((opt == "adamw" && argc != 12) || (opt == "sgd" && argc != 12) ||
      (opt != "adamw" && opt != "sgd") || n == 0 || steps <= 0) {
    return usage();
  }
  auto arg = [&](int i) { return std::strtof(argv[i], nullptr); };

  std::vector<float> in(n * static_cast<size_t>(steps + 1));
  if (!read_all(in_path, in)) {
    std::fprintf(stderr, "optimizer_kernel_dump: %s: cannot read exactly %zu fp32 values\n",
                 in_path.c_str(), in.size());
    return 1;
  }
  FILE* out = std::fopen(out_path.c_str(), "wb");
  if (!out) {
    std::fprintf(stderr, "optimizer_kernel_dump: cannot create %s\n", out_path.c_str());
    return 1;
  }
  std::vector<float> master(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n));
  std::vector<float> s1(n, 0.0f), s2(n, 0.0f);
  auto write = [&](const std::vector<float>& v) {
    return std::fwrite(v.data(), sizeof(float), n, out) == n;
  };
  bool ok = true;
  for (int step = 1; step <= steps; ++step) {
    const float* grad = in.data() + n * static_cast<size_t>(step);
    if (opt == "adamw") {
      const float lr = arg(6), beta1 = arg(7), beta2 = arg(8), eps = arg(9), wd = arg(10);
      const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), step));
      const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), step));
      zt::kernels::cpu::adamw_update(master.data(), s1.data(), s2.data(), grad, n, lr, beta1, beta2,
                                     eps, wd, bc1, bc2, arg(11));
      ok = ok && write(master) && write(s1) && write(s2);
    } else {
      const float lr = arg(6), momentum = arg(7), dampening = arg(8), wd = arg(9);
      const bool nesterov = std::atoi(argv[10]) != 0;
      zt::kernels::cpu::sgd_update(master.data(), momentum != 0.0f ? s1.data() : nullptr, grad, n,
                                   lr, momentum, dampening, wd, nesterov, step == 1, arg(11));
      ok = ok && write(master);
      if (momentum != 0.0f) ok = ok && write(s1);
    }
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok) {
    std::fprintf(stderr, "optimizer_kernel_dump: writing %s failed\n", out_path.c_str());
    return 1;
  }
  return 0;
}
