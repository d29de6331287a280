// Stub <cuda_pipeline.h> for the CUDA emulator (tests/emu): everything it declares comes from
// cuda_emu.h.
#pragma once

#include "tests/emu/cuda_emu.h"
