// Thread count of the CPU kernels: OpenMP regions and OpenBLAS (the OpenMP build, which shares
// OpenMP's pool) together.
#pragma once

namespace zt::kernels::cpu {

void set_num_threads(int n);
int num_threads();

}  // namespace zt::kernels::cpu
