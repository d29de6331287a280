// A test backend whose memory the host cannot dereference, standing in for GPU memory on a machine
// without one: it proves the runtime reaches backend memory only through the Backend interface.
//
// It wraps the CPU backend. allocate() hands out pointers tagged with bit 62 (kTag), which makes
// them non-canonical on x86-64 (and outside the user address space elsewhere), so any host load or
// store through one faults (SIGSEGV) instead of silently working. Its Ops and OptimizerOps untag
// every pointer (tensor data, tokens, optimizer state) and forward to the CPU implementations, so
// results are bit-identical to the CPU backend's; they also insist that every pointer they are
// given IS tagged — a host pointer handed to a device op is a bug the CUDA backend would crash on
// — and throw (ZT_CHECK) otherwise. copy() untags whichever side is tagged (host <-> device and
// device <-> device copies, like cudaMemcpyDefault); fill_zero() requires a tagged pointer.
//
// host_accessible() is false, make_host_backend() a plain CPU backend. kind() is
// DeviceKind::kCuda — it plays the device — so a JobConfig for it says `backend: cuda`
// (Trainer::init checks that the config names the backend it runs); name() is "opaque".
//
// OpaqueCommunicator wraps another communicator (MPI, local) and untags the tensors of every
// collective before forwarding; like NCCL it accepts only device (tagged) buffers.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/backend/backend.h"
#include "runtime/comm/communicator.h"

namespace zt::testing {

inline constexpr uintptr_t kOpaqueTag = uintptr_t{1} << 62;

inline bool is_tagged(const void* p) { return (reinterpret_cast<uintptr_t>(p) & kOpaqueTag) != 0; }
template <typename T>
T* tag(T* p) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) | kOpaqueTag);
}
template <typename T>
T* untag(T* p) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) & ~kOpaqueTag);
}

std::unique_ptr<Backend> make_opaque_backend();

// Forwards to `inner` (which must outlive it) with untagged tensors; every non-empty tensor must
// be tagged.
std::unique_ptr<Communicator> make_opaque_communicator(Communicator& inner);

}  // namespace zt::testing
