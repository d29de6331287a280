#include "coordinator/checkpoint_committer.h"

#include <fmt/format.h>

namespace zt {

CheckpointCommitter::CheckpointCommitter(std::string root, int keep_last,
                                         std::function<void(const std::string&)> log)
    : root_(std::move(root)), keep_last_(keep_last), log_(std::move(log)) {
  thread_ = std::thread([this] { run(); });
}

CheckpointCommitter::~CheckpointCommitter() {
  {
    std::lock_guard<std::mutex> g(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CheckpointCommitter::submit(Manifest manifest, std::string summary) {
  {
    std::lock_guard<std::mutex> g(mu_);
    queue_.push_back({std::move(manifest), std::move(summary)});
  }
  cv_.notify_all();
}

std::vector<CheckpointCommitter::Done> CheckpointCommitter::take_done() {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<Done> out;
  out.swap(done_);
  return out;
}

bool CheckpointCommitter::idle() {
  std::lock_guard<std::mutex> g(mu_);
  return queue_.empty() && !busy_;
}

void CheckpointCommitter::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closing, and everything queued is committed
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    const int64_t step = job.manifest.step;
    Done d;
    d.step = step;
    // An exception must not escape this thread (std::terminate): it fails the commit instead.
    Result<CommitResult> c = make_error(StatusCode::kInternal, "commit did not run");
    try {
      c = commit_checkpoint(root_, job.manifest, keep_last_);
    } catch (const std::exception& e) {
      c = make_error(StatusCode::kIoError, "{}", e.what());
    }
    if (c.is_ok()) {
      d.dir = c->dir;
      if (!c->replaced.empty())
        log_(fmt::format("an older checkpoint of step {} was moved to {}", step, c->replaced));
      log_(fmt::format("checkpoint step {} committed: {} ({})", step, c->dir, job.summary));
      for (const std::string& gone : c->removed)
        log_("checkpoint removed (checkpoint.keep_last): " + gone);
    } else {
      d.status = c.status().with_context(fmt::format("committing checkpoint step {}", step));
    }
    std::lock_guard<std::mutex> g(mu_);
    done_.push_back(std::move(d));
    busy_ = false;
  }
}

}  // namespace zt
