// Run-time choice of the instruction set of the CPU optimizer kernels (kernels/optimizer.h).
//
// The kernels carry one variant per level, compiled with function target attributes, so a binary
// built without -march=native (ZT_NATIVE=OFF) still runs the AVX2 or AVX-512 code on a CPU that
// has it. The level is detected once (the best the CPU and OS support) and read by every call.
//   kScalar  plain C++ (the compiler may still vectorise it for the build's baseline ISA)
//   kAvx2    AVX2 + FMA + F16C
//   kAvx512  AVX-512 F, BW, DQ and VL (Skylake-SP, Ice Lake, Zen 4 and later)
// Every level computes each element with the same sequence of correctly rounded operations (fma
// where the formula multiplies and adds, IEEE div and sqrt), so all levels give the same bits.
#pragma once

namespace zt::kernels::cpu {

enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// "scalar", "avx2", "avx512".
const char* simd_level_name(SimdLevel level);

// The best level this CPU (and OS) supports; detected once.
SimdLevel detected_simd_level();

// Whether the CPU can run `level` (kScalar always).
bool simd_level_supported(SimdLevel level);

// The level the kernels use now: detected_simd_level() unless set_simd_level_for_testing chose
// another.
SimdLevel simd_level();

// Forces the kernels onto `level` (tests and benchmarks compare the variants). A level the CPU
// lacks is refused: returns false and changes nothing. Not synchronised with kernels running on
// other threads: set it between calls.
bool set_simd_level_for_testing(SimdLevel level);

}  // namespace zt::kernels::cpu
