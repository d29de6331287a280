// Whole-file reads and crash-safe whole-file writes for the data tools (tokenizer, corpus
// generator). Messages name the file and the OS error.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>

#include "runtime/core/status.h"

namespace zt::data {

// Reads a whole file into memory. kNotFound when it does not exist, kIoError otherwise.
Result<std::string> read_file(const std::string& path);

// Writes `size` bytes to `path` through a temporary file in the same directory that is flushed to
// disk and then renamed over `path`: a failure (full disk, killed process) never leaves a half
// written `path`, and an existing `path` stays intact until the new one is complete.
Status write_file_atomic(const std::string& path, const void* data, size_t size);

// Writes several parts back to back, with the same guarantee.
struct ByteSpan {
  const void* data;
  size_t size;
};
Status write_file_atomic(const std::string& path, std::initializer_list<ByteSpan> parts);

}  // namespace zt::data
