#include "ctl/launch.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "ctl/client.h"
#include "protocol/transport.h"

extern char** environ;

namespace zt::ctl {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kPollEvery{50};

std::string errno_text(int err) { return std::strerror(err); }

std::string seconds_text(milliseconds ms) {
  if (ms.count() % 1000 == 0) return fmt::format("{} s", ms.count() / 1000);
  return fmt::format("{:.1f} s", static_cast<double>(ms.count()) / 1000.0);
}

// One child process in a process group of its own (Note [launch supervision]). Not copyable: it
// owns the obligation to reap, and on destruction to end, the process.
class Child {
 public:
  static Result<std::unique_ptr<Child>> spawn(const std::string& name,
                                              const std::vector<std::string>& argv,
                                              const std::vector<std::string>& env,
                                              milliseconds kill_grace);
  ~Child() { terminate(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }
  bool running() const { return running_; }
  int wait_status() const { return wait_status_; }

  // Reaps the child if it has exited; true when it is gone (now or before).
  bool poll() {
    if (!running_) return true;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      running_ = false;
      wait_status_ = r == pid_ ? st : 0;
      exited_at_ = Clock::now();
    }
    return !running_;
  }
  Clock::time_point exited_at() const { return exited_at_; }

  // To the child alone (the coordinator handles its own stop).
  void signal(int sig) const {
    if (running_) ::kill(pid_, sig);
  }
  // To its whole process group: mpirun and any rank still in its group.
  void signal_group(int sig) const {
    // Parent and child both call setpgid, so the group exists; should it not, the child alone.
    if (running_ && ::kill(-pid_, sig) != 0) ::kill(pid_, sig);
  }

  // SIGTERM to the group, SIGKILL after the grace period; returns once the child is reaped.
  void terminate() {
    if (!running_) return;
    signal_group(SIGTERM);
    const Clock::time_point deadline = Clock::now() + kill_grace_;
    while (Clock::now() < deadline) {
      if (poll()) return;
      std::this_thread::sleep_for(kPollEvery);
    }
    signal_group(SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    running_ = false;
    wait_status_ = st;
    exited_at_ = Clock::now();
  }

 private:
  Child() = default;

  std::string name_;
  pid_t pid_ = -1;
  bool running_ = false;
  int wait_status_ = 0;
  Clock::time_point exited_at_;
  milliseconds kill_grace_{10'000};
};

Result<std::unique_ptr<Child>> Child::spawn(const std::string& name,
                                            const std::vector<std::string>& argv,
                                            const std::vector<std::string>& env,
                                            milliseconds kill_grace) {
  // Everything the child needs is built before fork: between fork and exec it only makes
  // async-signal-safe calls.
  std::vector<char*> cargv, cenv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const std::string& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  // The child reports a failed exec through this pipe; a successful exec closes it (O_CLOEXEC).
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    return make_error(StatusCode::kIoError, "cannot start {}: pipe: {}", name, errno_text(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(report[0]);
    ::close(report[1]);
    return make_error(StatusCode::kIoError, "cannot start {}: fork: {}", name, errno_text(err));
  }
  if (pid == 0) {
    ::close(report[0]);
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // ztctl died before prctl took effect
    // ztctl's handlers vanish with exec, but ignored signals and the mask would be inherited.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != STDIN_FILENO) {
      ::dup2(devnull, STDIN_FILENO);
      ::close(devnull);
    }
    ::execve(cargv[0], cargv.data(), cenv.data());
    const int err = errno;
    (void)!::write(report[1], &err, sizeof(err));
    ::_exit(127);
  }
  ::close(report[1]);
  ::setpgid(pid, pid);  // also here, so the group exists before the parent signals it
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n > 0) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return make_error(StatusCode::kIoError, "cannot run {} ({}): {}", name, argv[0],
                      errno_text(child_errno));
  }
  std::unique_ptr<Child> c(new Child());
  c->name_ = name;
  c->pid_ = pid;
  c->running_ = true;
  c->kill_grace_ = kill_grace;
  return c;
}

// Identity of a file, to tell the coordinator's new endpoint file from one an earlier run left.
struct FileId {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileId&) const = default;
};

FileId file_id(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  return {true, st.st_dev, st.st_ino,
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

std::vector<std::string> current_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

bool mentions_oversubscribe(const std::vector<std::string>& args) {
  for (std::string a : args) {
    std::transform(a.begin(), a.end(), a.begin(), [](unsigned char c) { return std::tolower(c); });
    if (a.find("oversubscribe") != std::string::npos) return true;
  }
  return false;
}

std::string read_trimmed(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

// ---- pieces -------------------------------------------------------------------------------------

std::vector<std::string> mpirun_command(const std::string& mpirun, int np,
                                        const std::vector<std::string>& extra_args,
                                        const std::string& worker_bin, const std::string& endpoint,
                                        int slots) {
  std::vector<std::string> cmd = {mpirun, "-np", std::to_string(np)};
  // Open MPI refuses more ranks than slots (cores) unless told; a one-machine job with more
  // workers than cores is what tests and small runs do.
  if (np > slots && !mentions_oversubscribe(extra_args)) cmd.emplace_back("--oversubscribe");
  cmd.insert(cmd.end(), extra_args.begin(), extra_args.end());
  // The key travels in the environment, not on the command line, where `ps` would show it.
  cmd.insert(cmd.end(), {"-x", protocol::kKeyEnv, worker_bin, "--coordinator", endpoint});
  return cmd;
}

std::vector<std::string> worker_environment(const std::vector<std::string>& base,
                                            const std::string& key, bool as_root) {
  const std::string key_prefix = std::string(protocol::kKeyEnv) + "=";
  std::vector<std::string> env;
  bool allow_set = false, confirm_set = false;
  for (const std::string& e : base) {
    if (e.rfind(key_prefix, 0) == 0) continue;  // an older job's key must not win
    if (e.rfind("OMPI_ALLOW_RUN_AS_ROOT=", 0) == 0) allow_set = true;
    if (e.rfind("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=", 0) == 0) confirm_set = true;
    env.push_back(e);
  }
  env.push_back(key_prefix + key);
  // Open MPI refuses to run as root without both; containers commonly run as root.
  if (as_root && !allow_set) env.emplace_back("OMPI_ALLOW_RUN_AS_ROOT=1");
  if (as_root && !confirm_set) env.emplace_back("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1");
  return env;
}

int default_mpi_slots() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) {
    return std::max(1u, std::thread::hardware_concurrency());
  }
  int cpus = 0;
  std::set<std::pair<std::string, std::string>> cores;
  bool topology_known = true;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    ++cpus;
    const std::string dir = fmt::format("/sys/devices/system/cpu/cpu{}/topology/", cpu);
    const std::string package = read_trimmed(dir + "physical_package_id");
    const std::string core = read_trimmed(dir + "core_id");
    if (package.empty() || core.empty()) topology_known = false;
    cores.emplace(package, core);
  }
  const int slots = topology_known ? static_cast<int>(cores.size()) : cpus;
  return std::max(1, slots);
}

std::string executable_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  const std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

Result<std::string> find_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
    return make_error(StatusCode::kNotFound, "{}: {}", name, errno_text(errno));
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    const std::string candidate = dir + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return make_error(StatusCode::kNotFound, "{} not found in PATH", name);
}

std::string describe_wait_status(int st) {
  if (WIFEXITED(st)) return fmt::format("exit {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    return fmt::format("killed by signal {} ({})", WTERMSIG(st), strsignal(WTERMSIG(st)));
  }
  return fmt::format("wait status {}", st);
}

int exit_code_of(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}

// ---- the launch ---------------------------------------------------------------------------------

int run_launch(const LaunchOptions& o, std::ostream& err) {
  auto say = [&err](const std::string& line) {
    err << "ztctl launch: " << line << "\n";
    err.flush();
  };
  auto error = [&err](const std::string& line) {
    err << "ztctl launch: error: " << line << "\n";
    err.flush();
    return 1;
  };
  const std::atomic<int>* const interrupts = o.interrupts;
  const int interrupts_at_start = interrupts ? interrupts->load() : 0;
  auto signals_seen = [&] { return interrupts ? interrupts->load() - interrupts_at_start : 0; };
  auto last_signal = [&] {
    const int sig = o.last_signal ? o.last_signal->load() : 0;
    return sig > 0 ? sig : SIGTERM;
  };

  if (o.np < 1) return error(fmt::format("--np {} : a job needs at least one worker", o.np));
  if (o.run_dir.empty()) return error("--run-dir is required");
  if (::access(o.config.c_str(), R_OK) != 0) {
    return error(fmt::format("cannot read the config {}: {}", o.config, errno_text(errno)));
  }
  const std::string bin_dir = executable_dir();
  const std::string coordinator_bin =
      o.coordinator_bin.empty() ? bin_dir + "/zt-coordinator" : o.coordinator_bin;
  const std::string worker_bin = o.worker_bin.empty() ? bin_dir + "/zt-worker" : o.worker_bin;
  if (::access(coordinator_bin.c_str(), X_OK) != 0) {
    return error(
        fmt::format("no zt-coordinator at {} ({}): build it (ninja -C build "
                    "zt-coordinator) or pass --coordinator-bin PATH",
                    coordinator_bin, errno_text(errno)));
  }
  if (::access(worker_bin.c_str(), X_OK) != 0) {
    return error(
        fmt::format("no zt-worker at {} ({}): build it (ninja -C build zt-worker) or "
                    "pass --worker-bin PATH",
                    worker_bin, errno_text(errno)));
  }
  Result<std::string> mpirun = find_executable(o.mpirun);
  if (!mpirun.is_ok()) {
    return error(
        fmt::format("cannot run mpirun: {}: install Open MPI (tools/setup.sh does) or "
                    "pass --mpirun PATH",
                    mpirun.status().message()));
  }

  // ---- the coordinator, until it has written its address ----
  const std::string endpoint_file = o.run_dir + "/" + protocol::kEndpointFileName;
  const FileId stale_endpoint = file_id(endpoint_file);
  std::vector<std::string> coordinator_argv = {coordinator_bin,     "--config", o.config,
                                               "--run-dir",         o.run_dir,  "--world",
                                               std::to_string(o.np)};
  if (!o.listen.empty()) coordinator_argv.insert(coordinator_argv.end(), {"--listen", o.listen});
  if (o.resume) coordinator_argv.emplace_back("--resume");
  if (!o.resume_from.empty())
    coordinator_argv.insert(coordinator_argv.end(), {"--resume-from", o.resume_from});
  if (o.steps > 0)
    coordinator_argv.insert(coordinator_argv.end(), {"--steps", std::to_string(o.steps)});
  if (o.metrics_port > 0)
    coordinator_argv.insert(coordinator_argv.end(),
                            {"--metrics-port", std::to_string(o.metrics_port)});
  if (o.metrics_port > 0 && !o.metrics_listen.empty())
    coordinator_argv.insert(coordinator_argv.end(), {"--metrics-listen", o.metrics_listen});
  Result<std::unique_ptr<Child>> coordinator =
      Child::spawn("zt-coordinator", coordinator_argv, current_environment(), o.kill_grace);
  if (!coordinator.is_ok()) return error(coordinator.status().message());
  Child& coord = **coordinator;

  protocol::CoordinatorAddress address;
  Status last_read_error;
  const Clock::time_point start_deadline = Clock::now() + o.start_timeout;
  for (;;) {
    if (signals_seen() > 0) {
      say(fmt::format("interrupted before the workers started: stopping zt-coordinator (pid {})",
                      coord.pid()));
      coord.terminate();
      return 130;
    }
    if (coord.poll()) {
      error(fmt::format("zt-coordinator exited ({}) before it wrote {}: see its messages above",
                        describe_wait_status(coord.wait_status()), endpoint_file));
      const int code = exit_code_of(coord.wait_status());
      return code != 0 ? code : 1;
    }
    const FileId now_endpoint = file_id(endpoint_file);
    if (now_endpoint.exists && !(now_endpoint == stale_endpoint)) {
      Result<protocol::CoordinatorAddress> read = protocol::read_endpoint_files(o.run_dir);
      if (read.is_ok()) {
        address = *read;
        break;
      }
      last_read_error = read.status();
    }
    if (Clock::now() >= start_deadline) {
      error(fmt::format("zt-coordinator (pid {}) did not write {} within {}{}; stopping it",
                        coord.pid(), endpoint_file, seconds_text(o.start_timeout),
                        last_read_error.is_ok() ? "" : " (" + last_read_error.message() + ")"));
      coord.terminate();
      return 1;
    }
    std::this_thread::sleep_for(kPollEvery);
  }

  // ---- the workers ----
  const std::vector<std::string> mpirun_argv = mpirun_command(
      *mpirun, o.np, o.mpirun_args, worker_bin, address.endpoint, default_mpi_slots());
  Result<std::unique_ptr<Child>> workers =
      Child::spawn("mpirun", mpirun_argv,
                   worker_environment(current_environment(), address.public_key, ::geteuid() == 0),
                   o.kill_grace);
  if (!workers.is_ok()) {
    error(workers.status().message() + "; stopping zt-coordinator");
    coord.terminate();
    return 1;
  }
  Child& mpi = **workers;
  say(
      fmt::format("coordinator pid {} at {}; {} worker{} under mpirun pid {}; run dir {}. "
                  "Ctrl-C stops the job after the step in flight.",
                  coord.pid(), address.endpoint, o.np, o.np == 1 ? "" : "s", mpi.pid(), o.run_dir));

  // ---- supervision: Note [launch supervision] ----
  int signals_handled = 0;
  bool forced = false;
  bool ended_coordinator = false, ended_workers = false;
  Clock::time_point kill_at = Clock::time_point::max();
  for (;;) {
    coord.poll();
    mpi.poll();
    if (!coord.running() && !mpi.running()) break;
    const int seen = signals_seen();
    if (seen > signals_handled) {
      signals_handled = seen;
      const int sig = last_signal();
      if (seen == 1 && coord.running()) {
        say(
            fmt::format("{}: asking the coordinator to stop the job after the step in flight "
                        "(signal again to end it at once)",
                        sigabbrev_np(sig) ? std::string("SIG") + sigabbrev_np(sig) : "signal"));
        coord.signal(sig);
      } else if (!forced) {
        say("ending the job now: SIGTERM to the coordinator and mpirun");
        forced = true;
        coord.signal_group(SIGTERM);
        mpi.signal_group(SIGTERM);
        kill_at = Clock::now() + o.kill_grace;
      }
    }
    const Clock::time_point now = Clock::now();
    if (!coord.running() && mpi.running() && !ended_workers && now - coord.exited_at() >= o.grace) {
      say(
          fmt::format("the workers are still running {} after the coordinator exited ({}): "
                      "ending them",
                      seconds_text(o.grace), describe_wait_status(coord.wait_status())));
      ended_workers = true;
      mpi.signal_group(SIGTERM);
      kill_at = std::min(kill_at, now + o.kill_grace);
    }
    if (!mpi.running() && coord.running() && !ended_coordinator &&
        now - mpi.exited_at() >= o.grace) {
      say(
          fmt::format("the coordinator is still running {} after mpirun exited ({}): "
                      "ending it",
                      seconds_text(o.grace), describe_wait_status(mpi.wait_status())));
      ended_coordinator = true;
      coord.signal(SIGTERM);
      kill_at = std::min(kill_at, now + o.kill_grace);
    }
    if (now >= kill_at) {
      coord.signal_group(SIGKILL);
      mpi.signal_group(SIGKILL);
      kill_at = Clock::time_point::max();
    }
    std::this_thread::sleep_for(kPollEvery);
  }

  const int coord_status = coord.wait_status();
  const int mpi_status = mpi.wait_status();
  const std::string last = last_event(o.run_dir);
  const std::string outcome = fmt::format(
      "zt-coordinator {}, mpirun {}; run dir {}{}", describe_wait_status(coord_status),
      describe_wait_status(mpi_status), o.run_dir, last.empty() ? "" : "; last event: " + last);
  if (exit_code_of(coord_status) != 0) {
    say("the job failed: " + outcome);
    return exit_code_of(coord_status);
  }
  if (exit_code_of(mpi_status) != 0) {
    say("the coordinator ended the job cleanly but mpirun failed (a worker did not exit "
        "cleanly): " +
        outcome);
    return exit_code_of(mpi_status);
  }
  say("the job has ended: " + outcome);
  return 0;
}

}  // namespace zt::ctl
