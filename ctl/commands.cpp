#include "ctl/commands.h"

#include <algorithm>
#include <ctime>
#include <functional>
#include <thread>

#include <fmt/format.h>

#include "ctl/format.h"
#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/export.h"
#include "runtime/checkpoint/manifest.h"

namespace zt::ctl {

namespace {

using Clock = std::chrono::steady_clock;
using protocol::CtlRequest;
using protocol::JobState;
using std::chrono::milliseconds;

// What a command's waits consult: whether a signal arrived since the command started.
class Interrupts {
 public:
  explicit Interrupts(const std::atomic<int>* counter)
      : counter_(counter), baseline_(counter ? counter->load() : 0) {}
  bool fired() const { return counter_ != nullptr && counter_->load() != baseline_; }
  std::function<bool()> predicate() const {
    return [this] { return fired(); };
  }

 private:
  const std::atomic<int>* counter_;
  int baseline_;
};

// Sleeps in short slices so that Ctrl-C is answered at once; false when interrupted.
bool sleep_for(milliseconds total, const Interrupts& interrupts) {
  const Clock::time_point end = Clock::now() + total;
  while (Clock::now() < end) {
    if (interrupts.fired()) return false;
    std::this_thread::sleep_for(
        std::min(milliseconds(50), std::chrono::duration_cast<milliseconds>(end - Clock::now())));
  }
  return !interrupts.fired();
}

std::string in_run_dir(const std::string& run_dir) {
  return run_dir.empty() ? std::string() : fmt::format(" (run dir {})", run_dir);
}

// " (coordinator at E, run dir D)": which job a confirmation is about.
std::string job_where(const std::string& endpoint, const std::string& run_dir) {
  return fmt::format(" (coordinator at {}{})", endpoint,
                     run_dir.empty() ? std::string() : ", run dir " + run_dir);
}

// Prints the error and, when the job may simply be over, what events.log says it last did.
int fail(std::ostream& err, const char* command, const Status& status, const std::string& run_dir) {
  if (status.code() == StatusCode::kAborted) {
    err << "ztctl " << command << ": interrupted" << in_run_dir(run_dir) << "\n";
    return 130;
  }
  err << "ztctl " << command << ": error: " << status.message() << "\n";
  if (status.code() == StatusCode::kTimeout || status.code() == StatusCode::kNotFound) {
    const std::string last = last_event(run_dir);
    if (!last.empty()) err << "  last event in " << run_dir << "/events.log: " << last << "\n";
  }
  return 1;
}

std::string clock_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return buf;
}

std::string interval_text(milliseconds ms) {
  if (ms.count() % 1000 == 0) return fmt::format("{} s", ms.count() / 1000);
  return fmt::format("{:.1f} s", static_cast<double>(ms.count()) / 1000.0);
}

}  // namespace

int run_status(const CtlOptions& o, bool json, std::ostream& out, std::ostream& err) {
  const Interrupts interrupts(o.interrupts);
  Result<std::unique_ptr<CtlClient>> client = CtlClient::open(o.run_dir, o.endpoint_flag);
  if (!client.is_ok()) return fail(err, "status", client.status(), o.run_dir);
  Result<protocol::CtlReply> reply =
      (*client)->request(CtlRequest::Type::kStatus, o.reply_timeout, interrupts.predicate());
  if (!reply.is_ok()) return fail(err, "status", reply.status(), o.run_dir);
  const StatusSource source{o.run_dir, (*client)->endpoint()};
  if (json) {
    out << status_json(*reply, source).dump() << "\n";
  } else {
    out << format_status(*reply, source);
  }
  out.flush();
  return reply->ok ? 0 : 1;
}

int run_top(const CtlOptions& o, const TopOptions& top, std::ostream& out, std::ostream& err) {
  const Interrupts interrupts(o.interrupts);
  Result<std::unique_ptr<CtlClient>> client = CtlClient::open(o.run_dir, o.endpoint_flag);
  if (!client.is_ok()) return fail(err, "top", client.status(), o.run_dir);
  const std::string& endpoint = (*client)->endpoint();
  // Only what the job writes from now on tells how it ended; the run dir may hold older runs.
  const uint64_t events_offset = events_log_size(o.run_dir);
  const StatusSource source{o.run_dir, endpoint};
  for (int refreshes = 0;; ++refreshes) {
    Result<protocol::CtlReply> reply =
        (*client)->request(CtlRequest::Type::kStatus, o.reply_timeout, interrupts.predicate());
    if (interrupts.fired()) return 0;
    if (!reply.is_ok()) {
      if (refreshes == 0) return fail(err, "top", reply.status(), o.run_dir);
      // It answered before: the job most likely ended between two refreshes.
      const JobEndEvent end = find_job_end(o.run_dir, events_offset);
      if (end.end == JobEnd::kClean) {
        out << "ztctl top: the job has ended: " << end.line << in_run_dir(o.run_dir) << "\n";
        return 0;
      }
      if (end.end == JobEnd::kFailed) {
        err << "ztctl top: the job has ended: " << end.line << in_run_dir(o.run_dir) << "\n";
        return 1;
      }
      if (reply.status().code() == StatusCode::kNotFound && !o.run_dir.empty()) {
        err << "ztctl top: error: the coordinator at " << endpoint << " is gone, and " << o.run_dir
            << "/events.log records no end of the job: it may have crashed (see its "
            << "output)\n";
        return 1;
      }
      return fail(err, "top", reply.status(), o.run_dir);
    }
    if (top.clear_screen) {
      out << "\x1b[H\x1b[2J";  // cursor home, clear screen: redraw in place
    } else if (refreshes > 0) {
      out << "\n";
    }
    out << fmt::format("ztctl top  {}  every {}; Ctrl-C quits (the job keeps running)\n",
                       clock_now(), interval_text(top.interval));
    out << format_status(*reply, source);
    out.flush();
    if (reply->state == JobState::kFinished) {
      const JobEndEvent end = find_job_end(o.run_dir, events_offset);
      out << "ztctl top: the job has ended: "
          << (end.end == JobEnd::kNone ? fmt::format("finished at step {}", reply->step) : end.line)
          << in_run_dir(o.run_dir) << "\n";
      return 0;
    }
    if (reply->state == JobState::kFailed) {
      err << "ztctl top: the job failed"
          << (reply->message.empty() ? std::string() : ": " + reply->message)
          << in_run_dir(o.run_dir) << "\n";
      return 1;
    }
    if (top.max_refreshes > 0 && refreshes + 1 >= top.max_refreshes) return 0;
    if (!sleep_for(top.interval, interrupts)) return 0;
  }
}

int run_stop(const CtlOptions& o, milliseconds wait_timeout, std::ostream& out, std::ostream& err) {
  const Interrupts interrupts(o.interrupts);
  Result<std::unique_ptr<CtlClient>> client = CtlClient::open(o.run_dir, o.endpoint_flag);
  if (!client.is_ok()) return fail(err, "stop", client.status(), o.run_dir);
  const std::string& endpoint = (*client)->endpoint();
  const uint64_t events_offset = events_log_size(o.run_dir);
  Result<protocol::CtlReply> reply =
      (*client)->request(CtlRequest::Type::kStop, o.reply_timeout, interrupts.predicate());
  if (!reply.is_ok()) return fail(err, "stop", reply.status(), o.run_dir);
  if (!reply->ok) {
    err << "ztctl stop: error: the coordinator at " << endpoint << " refused to stop the job: "
        << (reply->message.empty() ? "(no reason given)" : reply->message) << in_run_dir(o.run_dir)
        << "\n";
    return 1;
  }
  out << "ztctl stop: " << (reply->message.empty() ? "stop requested" : reply->message)
      << job_where(endpoint, o.run_dir) << "\n";
  out.flush();

  // Note [when a stop is done]
  // A reply with a final state ends the wait. After its last reply the coordinator writes the
  // end of the job to events.log and exits, so the usual end is silence; silence counts only
  // together with that line and the coordinator's port closed (or three unanswered polls, for a
  // port we cannot probe), so a coordinator that is merely slow is not taken for a stopped one.
  JobState last_state = reply->state;
  int64_t last_step = reply->step;
  int unanswered = 0;
  bool told_waiting = false;
  const Clock::time_point deadline = Clock::now() + wait_timeout;
  while (Clock::now() < deadline) {
    if (interrupts.fired()) break;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    Result<protocol::CtlReply> status = (*client)->request(
        CtlRequest::Type::kStatus, std::min(left, o.reply_timeout), interrupts.predicate());
    if (status.is_ok()) {
      unanswered = 0;
      last_state = status->state;
      last_step = status->step;
      if (status->state == JobState::kFinished) {
        out << "ztctl stop: the job has ended after step " << status->step << in_run_dir(o.run_dir)
            << "\n";
        return 0;
      }
      if (status->state == JobState::kFailed) {
        err << "ztctl stop: the job failed while stopping: " << status->message
            << in_run_dir(o.run_dir) << "\n";
        return 1;
      }
      if (!told_waiting) {
        out << "ztctl stop: waiting for the job to stop: "
            << protocol::job_state_name(status->state) << " at step "
            << format_progress(status->step, status->total_steps) << "\n";
        out.flush();
        told_waiting = true;
      }
      if (!sleep_for(milliseconds(250), interrupts)) break;
      continue;
    }
    if (status.status().code() == StatusCode::kAborted) break;
    ++unanswered;
    const bool gone = status.status().code() == StatusCode::kNotFound ||
                      probe_endpoint(endpoint) == EndpointProbe::kClosed;
    const JobEndEvent end = find_job_end(o.run_dir, events_offset);
    if (end.end != JobEnd::kNone && (gone || unanswered >= 3)) {
      if (end.end == JobEnd::kClean) {
        out << "ztctl stop: the job has ended: " << end.line << in_run_dir(o.run_dir) << "\n";
        return 0;
      }
      err << "ztctl stop: the job has ended: " << end.line << in_run_dir(o.run_dir) << "\n";
      return 1;
    }
    if (gone) {
      if (o.run_dir.empty()) {
        // Without a run dir there is no log to read; the coordinator took the stop and is gone.
        out << "ztctl stop: the coordinator at " << endpoint << " has exited (no run dir given "
            << "to confirm how the job ended)\n";
        return 0;
      }
      err << "ztctl stop: error: the coordinator at " << endpoint << " is gone, but " << o.run_dir
          << "/events.log records no end of the job: it may have crashed (see its output)\n";
      return 1;
    }
    if (!sleep_for(milliseconds(250), interrupts)) break;
  }
  if (interrupts.fired()) {
    err << "ztctl stop: interrupted while waiting; the job still stops after the step in flight"
        << in_run_dir(o.run_dir) << "\n";
    return 130;
  }
  err << "ztctl stop: error: the job has not ended within " << interval_text(wait_timeout)
      << " (last state " << protocol::job_state_name(last_state) << " at step " << last_step
      << "); it stops after the step in flight: check with `ztctl status"
      << (o.run_dir.empty() ? std::string() : " --run-dir " + o.run_dir) << "`\n";
  return 1;
}

int run_checkpoint(const CtlOptions& o, milliseconds wait_timeout, std::ostream& out,
                   std::ostream& err) {
  const Interrupts interrupts(o.interrupts);
  Result<std::unique_ptr<CtlClient>> client = CtlClient::open(o.run_dir, o.endpoint_flag);
  if (!client.is_ok()) return fail(err, "checkpoint", client.status(), o.run_dir);
  Result<protocol::CtlReply> reply =
      (*client)->request(CtlRequest::Type::kCheckpoint, o.reply_timeout, interrupts.predicate());
  if (!reply.is_ok()) return fail(err, "checkpoint", reply.status(), o.run_dir);
  if (!reply->ok) {
    err << "ztctl checkpoint: error: the coordinator at " << (*client)->endpoint()
        << " did not take a checkpoint: "
        << (reply->message.empty() ? "(no reason given)" : reply->message) << in_run_dir(o.run_dir)
        << "\n";
    return 1;
  }
  out << "ztctl checkpoint: " << (reply->message.empty() ? "checkpoint requested" : reply->message)
      << job_where((*client)->endpoint(), o.run_dir) << "\n";
  if (wait_timeout.count() <= 0) return 0;
  const int64_t before = reply->last_checkpoint_step;
  const Clock::time_point deadline = Clock::now() + wait_timeout;
  while (Clock::now() < deadline) {
    if (!sleep_for(milliseconds(200), interrupts))
      return fail(err, "checkpoint", make_error(StatusCode::kAborted, "interrupted"), o.run_dir);
    Result<protocol::CtlReply> st =
        (*client)->request(CtlRequest::Type::kStatus, o.reply_timeout, interrupts.predicate());
    if (!st.is_ok()) return fail(err, "checkpoint", st.status(), o.run_dir);
    if (st->last_checkpoint_step != before && st->last_checkpoint_step > 0) {
      out << "ztctl checkpoint: committed step " << st->last_checkpoint_step << ": "
          << st->last_checkpoint_dir << "\n";
      return 0;
    }
    if (st->state == JobState::kFailed) {
      err << "ztctl checkpoint: error: the job failed before the checkpoint was committed: "
          << st->message << in_run_dir(o.run_dir) << "\n";
      return 1;
    }
  }
  err << "ztctl checkpoint: error: no checkpoint was committed within "
      << std::chrono::duration_cast<std::chrono::seconds>(wait_timeout).count() << " s"
      << in_run_dir(o.run_dir) << "\n";
  return 1;
}

int run_export(const std::string& checkpoint_dir, const std::string& out_path,
               const std::string& dtype_name, std::ostream& out, std::ostream& err) {
  Result<DType> dtype = parse_dtype(dtype_name);
  if (!dtype.is_ok()) {
    err << "ztctl export: error: --dtype '" << dtype_name << "': use fp32, bf16 or fp16\n";
    return 2;
  }
  Result<ExportStats> st = export_checkpoint(checkpoint_dir, out_path, *dtype);
  if (!st.is_ok()) {
    err << "ztctl export: error: " << st.status().to_string() << "\n";
    return 1;
  }
  out << fmt::format(
      "ztctl export: wrote {} ({} tensors, {} parameters, {}, {}; largest tensor {} in fp32)\n",
      out_path, st->tensors, st->parameters, dtype_name,
      format_mib(static_cast<int64_t>(st->file_bytes)) + " MiB",
      format_mib(st->largest_tensor_bytes) + " MiB");
  return 0;
}

int run_verify(const std::string& checkpoint_dir, const std::string& run_dir, std::ostream& out,
               std::ostream& err) {
  Result<std::string> dir = resolve_resume_dir(run_dir, checkpoint_dir);
  if (!dir.is_ok()) {
    err << "ztctl verify: error: " << dir.status().to_string() << "\n";
    return 1;
  }
  Result<Manifest> m = read_manifest(*dir);
  if (!m.is_ok()) {
    err << "ztctl verify: error: " << m.status().to_string() << "\n";
    return 1;
  }
  if (Status st = verify_checkpoint_files(*dir, *m); !st.is_ok()) {
    err << "ztctl verify: error: " << st.to_string() << "\n";
    return 1;
  }
  uint64_t bytes = 0;
  for (const ShardFileEntry& s : m->shards) bytes += s.size;
  out << fmt::format(
      "ztctl verify: {} is complete: step {}, {} parameters (GPT-2 {}x{}), written by {} ranks at "
      "ZeRO stage {} in {}; {} shard files, {} MiB, every size and xxh3 checksum matches\n",
      *dir, m->step, m->num_parameters, m->model.n_layer, m->model.n_embd, m->world_size,
      m->zero_stage, m->dtype, m->shards.size(), format_mib(static_cast<int64_t>(bytes)));
  return 0;
}

}  // namespace zt::ctl
