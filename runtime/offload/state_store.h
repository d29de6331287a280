// StateStore: where a rank's optimizer state lives — the fp32 master weights and the optimizer's
// per-element arrays (AdamW's m and v, 8-bit codes, momentum, ...) over the `n` elements of the
// rank's owned range (its ZeRO shard; everything at stage 0) — and how the optimizer step reaches
// it. Two kinds, chosen by zero_optimization.offload_optimizer.device:
//   memory (none / cpu): arrays in the backend's memory (host memory for cpu offload), charged to
//     one MemCategory; chunks are views.
//   nvme: arrays in one file per rank under nvme_path; the step streams them through `buffer_count`
//     fixed-size host buffers with io_uring — while chunk i is updated, chunk i+1 is read and
//     chunk i-1 written — so resident memory is bounded by the buffers, whatever n is.
//
// Note [state chunks]: both kinds cut [0, n) into the same chunks, [k*chunk, (k+1)*chunk) with the
// last one shorter, and stream them in order, so a computation over the chunks gives the same bits
// on either kind. chunk is a multiple of 4096 elements (O_DIRECT alignment for 1-byte arrays,
// and a multiple of the 8-bit quantisation block, so no block is ever split). A chunk larger than
// n is cut down to n rounded up to kChunkAlign (one chunk either way, smaller nvme buffers).
//
// Memory: the chunk pointers stream() hands out are in the store's memory — the backend's for the
// memory kind (device memory the host may not dereference: Backend::host_accessible()), host
// buffers for nvme. read() and write() take host memory and copy through the backend.
//
// A store is used by one thread at a time: stream(), read() and write() must not overlap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"
#include "runtime/memory/memory_tracker.h"

namespace zt {

struct StoreArray {
  std::string name;   // "master", "exp_avg", ... (for errors and the file layout)
  size_t elem_bytes;  // 4 (fp32) or 1 (8-bit codes)
  // In-memory kind: charge this array to another category than the store's (fp32 training at
  // stage 0: the master weights are the working weights, accounted as parameters).
  std::optional<MemCategory> category = std::nullopt;
};

class StateStore {
 public:
  static constexpr int64_t kChunkAlign = 4096;  // elements

  virtual ~StateStore() = default;

  // In the backend's memory, zero-filled, charged to `category`. `chunk` is rounded up to
  // kChunkAlign.
  static Result<std::unique_ptr<StateStore>> in_memory(Backend& backend,
                                                       std::vector<StoreArray> arrays, int64_t n,
                                                       int64_t chunk, MemCategory category);
  // In a new file `dir`/zerotrain-<what>-rank<rank>-<pid>.bin (created, sized and zero-filled;
  // removed when the store is destroyed), streamed through `buffer_count` (>= 3) buffers of one
  // chunk of every array each, charged to `tracker` under `category`. O_DIRECT where the
  // filesystem allows it (tmpfs does not: then buffered I/O). Errors name the path: a missing or
  // unwritable directory, no space for the file; kUnsupported where io_uring is disabled.
  // buffer_count is 3 to 1024; reads run buffer_count - 2 chunks ahead of fn (Note [nvme stream
  // pipeline] in nvme_store.cpp). The file holds every array padded to whole chunks (Note [nvme
  // state file layout]), so disk_bytes() can exceed n * sum(elem_bytes) by up to one chunk each.
  static Result<std::unique_ptr<StateStore>> on_nvme(const std::string& dir, int rank,
                                                     std::vector<StoreArray> arrays, int64_t n,
                                                     int64_t chunk, int buffer_count,
                                                     MemoryTracker& tracker, MemCategory category,
                                                     std::string_view what = "states");

  int64_t size() const { return n_; }
  int64_t chunk() const { return chunk_; }
  int64_t num_chunks() const { return (n_ + chunk_ - 1) / chunk_; }
  const std::vector<StoreArray>& arrays() const { return arrays_; }
  virtual bool resident() const = 0;  // memory kind: data() pointers are valid

  // Streams every chunk, in order, through fn(begin, count, ptrs): ptrs[a] points at element
  // `begin` of array a (count elements). Arrays in `read` (bit a = array a) hold their stored
  // values; the others' contents are unspecified on entry. Arrays in `write` are stored back after
  // fn returns (the others must not be modified). fn may return an error: streaming stops, writes
  // already issued complete, and the error is returned. I/O errors (short read, no space) name the
  // file and offset.
  using ChunkFn = std::function<Status(int64_t begin, int64_t count, void* const* ptrs)>;
  virtual Status stream(uint32_t read, uint32_t write, const ChunkFn& fn) = 0;

  // Random access (checkpoints, initialisation): elements [begin, begin + count) of array a. A
  // range outside [0, n) or a bad array index is kInvalidArgument.
  virtual Status read(int a, int64_t begin, int64_t count, void* out) = 0;
  virtual Status write(int a, int64_t begin, int64_t count, const void* in) = 0;

  // The whole array (memory kind only; nullptr on nvme).
  virtual void* data(int a) = 0;

  // Bytes resident in memory for this store (memory kind: the arrays; nvme: the buffers), and
  // bytes held on disk (nvme: the file; memory: 0).
  virtual int64_t resident_bytes() const = 0;
  virtual int64_t disk_bytes() const = 0;
  // Where the state lives, for logs and ztctl status: "memory" or the file's path, followed by
  // " (buffered: O_DIRECT unsupported)" where the file system refused O_DIRECT.
  virtual std::string location() const = 0;

 protected:
  StateStore(std::vector<StoreArray> arrays, int64_t n, int64_t chunk)
      : arrays_(std::move(arrays)), n_(n), chunk_(chunk) {}
  // Validates the factories' arguments (1 to 32 arrays of 1 to 64-byte elements, n >= 0,
  // chunk >= 1) and returns the chunk both kinds use (Note [state chunks]).
  static Result<int64_t> checked_chunk(const std::vector<StoreArray>& arrays, int64_t n,
                                       int64_t chunk);
  // kInvalidArgument unless the masks name only existing arrays.
  Status check_masks(uint32_t read, uint32_t write) const;
  // kInvalidArgument unless array a exists and [begin, begin + count) lies in [0, n).
  Status check_range(const char* op, int a, int64_t begin, int64_t count) const;
  std::vector<StoreArray> arrays_;
  int64_t n_;
  int64_t chunk_;
};

}  // namespace zt
