#include "runtime/checkpoint/commit.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace zt {

namespace fs = std::filesystem;

namespace {

std::string err_text(int e) { return std::strerror(e); }

// Writes `text` to `path` durably: create, write, fsync, close. No rename (callers do that).
Status write_file_synced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    return make_error(StatusCode::kIoError, "cannot create '{}': {}", path, err_text(e));
  }
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(path.c_str());
      return make_error(StatusCode::kIoError, "writing '{}': {}{}", path, err_text(e),
                        e == ENOSPC ? "; free disk space" : "");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return make_error(StatusCode::kIoError, "fsync of '{}': {}", path, err_text(e));
  }
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(path.c_str());
    return make_error(StatusCode::kIoError, "closing '{}': {}", path, err_text(e));
  }
  return Status::ok();
}

Status rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int e = errno;
    return make_error(StatusCode::kIoError, "renaming '{}' to '{}': {}", from, to, err_text(e));
  }
  return Status::ok();
}

// step_NNNNNNNN as checkpoint_dir_name writes it (8 digits, more past 99,999,999) -> the step;
// -1 otherwise.
int64_t step_of_name(const std::string& name) {
  if (name.size() < 13 || name.size() > 23 || name.rfind("step_", 0) != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return checkpoint_dir_name(v) == name ? v : -1;  // only the canonical spelling
}

}  // namespace

std::string checkpoints_root(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

std::string checkpoint_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::string staging_dir(const std::string& root, int64_t step) {
  return (fs::path(root) / (checkpoint_dir_name(step) + ".tmp")).string();
}

Status fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return make_error(StatusCode::kIoError, "cannot open directory '{}': {}", dir, err_text(e));
  }
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (rc != 0)
    return make_error(StatusCode::kIoError, "fsync of directory '{}': {}", dir, err_text(e));
  return Status::ok();
}

Status prepare_staging_dir(const std::string& root, int64_t step) {
  std::error_code ec;
  const std::string dir = staging_dir(root, step);
  const bool had_root = fs::is_directory(root, ec);
  fs::create_directories(dir, ec);
  if (ec && !fs::is_directory(dir, ec))
    return make_error(StatusCode::kIoError,
                      "cannot create checkpoint directory '{}': {}; check that the run directory "
                      "is writable (and shared by every worker's machine)",
                      dir, ec.message());
  // A new checkpoints/ must itself be durable in the run directory before anything is committed
  // into it.
  if (!had_root) ZT_RETURN_IF_ERROR(fsync_dir(fs::path(root).parent_path().string()));
  return Status::ok();
}

Result<CommitResult> commit_checkpoint(const std::string& root, const Manifest& manifest,
                                       int keep_last) {
  CommitResult out;
  const std::string staged = staging_dir(root, manifest.step);
  const std::string final_dir = (fs::path(root) / checkpoint_dir_name(manifest.step)).string();
  std::error_code ec;
  if (!fs::is_directory(staged, ec))
    return make_error(StatusCode::kNotFound,
                      "staging directory '{}' is missing: the ranks' shard files are not there",
                      staged);
  for (const ShardFileEntry& s : manifest.shards) {
    const auto size = fs::file_size(fs::path(staged) / s.file, ec);
    if (ec || size != s.size)
      return make_error(StatusCode::kDataError,
                        "checkpoint step {}: '{}' of rank {} is {} but the rank reported {} bytes; "
                        "not committing",
                        manifest.step, (fs::path(staged) / s.file).string(), s.rank,
                        ec ? "missing" : fmt::format("{} bytes", size), s.size);
  }
  // 2. The manifest makes the directory a checkpoint.
  const std::string manifest_path = (fs::path(staged) / "manifest.json").string();
  ZT_RETURN_IF_ERROR(write_file_synced(manifest_path, manifest_to_json(manifest)));
  ZT_RETURN_IF_ERROR(fsync_dir(staged));
  // 3. Publish the directory. When an older checkpoint of the same step is there (`latest` may
  // name it), the two are swapped in one atomic exchange — at no moment is the name missing — and
  // the old one, now under the staging name, is then moved aside.
  if (fs::exists(final_dir, ec)) {
    if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      const int e = errno;
      return make_error(StatusCode::kIoError, "exchanging '{}' with the existing '{}': {}", staged,
                        final_dir, err_text(e));
    }
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    out.replaced = fmt::format("{}.replaced-{}", final_dir, now);
    ZT_RETURN_IF_ERROR(rename_path(staged, out.replaced));
  } else {
    ZT_RETURN_IF_ERROR(rename_path(staged, final_dir));
  }
  ZT_RETURN_IF_ERROR(fsync_dir(root));
  out.dir = final_dir;
  // 4. Point `latest` at it.
  const std::string latest_tmp = (fs::path(root) / "latest.tmp").string();
  ZT_RETURN_IF_ERROR(write_file_synced(latest_tmp, checkpoint_dir_name(manifest.step) + "\n"));
  ZT_RETURN_IF_ERROR(rename_path(latest_tmp, (fs::path(root) / "latest").string()));
  ZT_RETURN_IF_ERROR(fsync_dir(root));
  // 5. Retention: oldest first, never the one just committed (which `latest` names). Superseded
  // copies (step_N.replaced-*) are older versions of a kept step: they go too.
  if (keep_last > 0) {
    std::vector<fs::path> superseded;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      const size_t dot = name.find(".replaced-");
      if (dot != std::string::npos && step_of_name(name.substr(0, dot)) >= 0)
        superseded.push_back(it->path());
    }
    ec.clear();
    for (const fs::path& p : superseded) {
      fs::remove_all(p, ec);
      if (!ec) out.removed.push_back(p.string());
    }
    std::vector<int64_t> steps = list_checkpoints(root);
    steps.erase(std::remove(steps.begin(), steps.end(), manifest.step), steps.end());
    const size_t keep_others = static_cast<size_t>(keep_last - 1);
    for (size_t i = 0; i + keep_others < steps.size(); ++i) {
      const fs::path victim = fs::path(root) / checkpoint_dir_name(steps[i]);
      // Remove the manifest first: a crash midway leaves an incomplete directory, never a
      // checkpoint with missing shards.
      fs::remove(victim / "manifest.json", ec);
      if (ec) continue;  // cannot remove: keep it whole
      // Durable before any shard goes: never a manifest left naming deleted shards.
      if (!fsync_dir(victim.string()).is_ok()) continue;
      fs::remove_all(victim, ec);
      out.removed.push_back(victim.string());
    }
  }
  return out;
}

std::vector<int64_t> list_checkpoints(const std::string& root) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const int64_t s = step_of_name(it->path().filename().string());
    std::error_code mec;
    if (s >= 0 && fs::exists(it->path() / "manifest.json", mec)) steps.push_back(s);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::vector<std::string> remove_crash_leftovers(const std::string& root) {
  std::vector<std::string> removed;
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool staging = name.size() > 4 && name.ends_with(".tmp") &&
                         step_of_name(name.substr(0, name.size() - 4)) >= 0;
    // A committed directory always has its manifest; one without is a removal by retention that
    // a crash interrupted (the manifest goes first).
    std::error_code mec;
    const bool half_removed =
        step_of_name(name) >= 0 && !fs::exists(it->path() / "manifest.json", mec) && !mec;
    if (staging || half_removed) stale.push_back(it->path());
  }
  for (const fs::path& p : stale) {
    fs::remove_all(p, ec);
    if (!ec) removed.push_back(p.filename().string());
  }
  return removed;
}

Result<std::string> latest_checkpoint(const std::string& root) {
  const std::string latest = (fs::path(root) / "latest").string();
  std::ifstream in(latest);
  if (!in)
    return make_error(StatusCode::kNotFound, "no checkpoint to resume from: '{}' does not exist",
                      latest);
  std::string name;
  std::getline(in, name);
  if (step_of_name(name) < 0)
    return make_error(StatusCode::kDataError, "'{}' holds '{}', not a checkpoint name", latest,
                      name);
  const std::string dir = (fs::path(root) / name).string();
  if (!fs::is_directory(dir))
    return make_error(StatusCode::kNotFound, "'{}' names '{}', which does not exist", latest, dir);
  return dir;
}

Result<std::string> resolve_resume_dir(const std::string& run_dir, const std::string& resume_from) {
  if (!resume_from.empty()) {
    if (!fs::is_directory(resume_from))
      return make_error(StatusCode::kNotFound, "--resume-from '{}': no such directory",
                        resume_from);
    return fs::absolute(resume_from).lexically_normal().string();
  }
  ZT_ASSIGN_OR_RETURN(std::string dir, latest_checkpoint(checkpoints_root(run_dir)));
  return fs::absolute(dir).lexically_normal().string();
}

}  // namespace zt
