// A rank's shard of a checkpoint: taking it out of the ZeRO engine (a snapshot in host memory, so
// training can go on while it is written), writing it as a safetensors file, and loading a
// checkpoint's shards back into an engine of any world size and stage (Note [checkpoint format] in
// manifest.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/core/status.h"
#include "runtime/zero/zero_engine.h"

namespace zt {

// The tensors a rank writes: every ranged checkpoint state (master weights first, then the
// optimizer's; Note [optimizer state]) of each of its pieces where the state applies, then the
// whole states of the parameters whose first element it holds. A copy (taken so training can go on
// while it is written) owns the values in `data`, charged to the workspace category; a view (for a
// synchronous write) points into the engine where a state is plain fp32 in memory and is valid only
// until the next optimizer step (states held otherwise — NVMe, 8-bit — are copied even then).
struct SnapshotTensor {
  std::string name;  // "<state>/<parameter>"
  int64_t count = 0;
  const float* src = nullptr;
  // Instead of src: reads elements [offset, offset + count) from the engine while the file is
  // written (state on NVMe: copying it to memory first would defeat the offload).
  std::function<Status(int64_t offset, int64_t count, float* out)> read;
};
struct ShardSnapshot {
  int rank = 0;
  int world_size = 0;
  int64_t step = 0;
  std::vector<ParamRange> pieces;
  std::vector<SnapshotTensor> tensors;
  Buffer data;
  // Some tensors are read from the engine as they are written: the write must finish before the
  // next optimizer step (the checkpoint is synchronous).
  bool reads_engine = false;
};

// This rank's checkpoint tensors from `engine`: copied (`copy`) into a buffer of `backend`, which
// must be host memory (Backend::host_accessible()), into `reuse` when it is large
// enough (with the state on NVMe the ranged states are read while writing instead: reads_engine) —
// the previous snapshot's buffer: a fresh one costs a page fault per 4 KiB, several times the copy
// itself — or as a view.
Result<ShardSnapshot> snapshot_shard(ZeroEngine& engine, Backend& backend, int64_t step, bool copy,
                                     Buffer reuse = {});

struct WrittenShard {
  std::string file;  // name inside the checkpoint directory
  uint64_t size = 0;
  uint64_t xxh3 = 0;
  double write_ms = 0.0;
};

// Writes the snapshot as DIR/rank_RRRRR.safetensors (through a .tmp name, fsynced, renamed) and
// returns its size and XXH3-64, computed while writing.
Result<WrittenShard> write_shard(const ShardSnapshot& snapshot, const std::string& dir);

// Tensor `state`/`param` of a shard file, which must be F32 [count] as the manifest says. Errors
// name the file and the tensor.
Result<const TensorInfo*> find_state_tensor(const SafetensorsReader& reader,
                                            const std::string& state, const std::string& param,
                                            int64_t count);

// Fills every optimizer state `engine` holds from the checkpoint in `dir` described by `m`,
// reading from each shard file only the ranges this rank now holds (the files are memory-mapped),
// then refreshes the working weights. Works across world sizes and stages. Errors name the file
// and tensor: a missing file, a size that differs from the manifest, a missing or misshapen
// tensor, a range no shard covers. Collective (the refresh).
Status load_shards(const std::string& dir, const Manifest& m, ZeroEngine& engine);

}  // namespace zt
