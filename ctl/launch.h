// `ztctl launch`: a whole job on this machine — the coordinator, then `mpirun -np N zt-worker`
// pointed at it — supervised until both have exited.
//
// Note [launch supervision]
// - Each child runs in its own process group with stdin from /dev/null, so a Ctrl-C typed at the
//   terminal reaches ztctl only (not mpirun and the workers behind it, which would abort the job
//   mid-step) and no child stops on a background read of the terminal.
// - The first SIGINT/SIGTERM is forwarded to the coordinator only: it stops the job after the step
//   in flight, the workers exit by themselves and mpirun then exits 0. A second one ends the job
//   at once (SIGTERM to both process groups, SIGKILL after a grace period).
// - Nothing outlives ztctl: the children get SIGTERM when ztctl dies (PR_SET_PDEATHSIG), and every
//   error path terminates them (SIGTERM, then SIGKILL after a grace period).
// - When one side exits and the other does not follow within `grace` (a worker that hangs, a
//   coordinator that has not noticed its workers died), the other side is terminated too.
// - The exit code is the coordinator's (the job's state lives there): 0 when the job finished or
//   was stopped, else non-zero; non-zero too when mpirun failed while the coordinator claims
//   success; 128+N for a child killed by signal N.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace zt::ctl {

struct LaunchOptions {
  std::string config;   // --config: passed to the coordinator, which validates it
  std::string run_dir;  // --run-dir
  int np = 0;           // number of workers (mpirun -np, coordinator --world)
  std::string listen;   // --listen for the coordinator; empty: its default (loopback, free port)
  bool resume = false;      // --resume: continue from the run directory's latest checkpoint
  std::string resume_from;  // --resume-from DIR
  int64_t steps = 0;        // --steps: override train.steps (0: the config's)
  // --metrics-port and --metrics-listen for the coordinator (0: no metrics endpoint; empty: its
  // default address).
  int metrics_port = 0;
  std::string metrics_listen;
  std::string coordinator_bin;           // empty: zt-coordinator next to the ztctl executable
  std::string worker_bin;                // empty: zt-worker next to the ztctl executable
  std::string mpirun = "mpirun";         // a path, or a name looked up in PATH
  std::vector<std::string> mpirun_args;  // extra arguments, placed before the worker command
  std::chrono::milliseconds start_timeout{60'000};  // for the coordinator's endpoint file
  std::chrono::milliseconds grace{60'000};          // Note [launch supervision]; above the default
                                                    // 30 s heartbeat timeout of the coordinator
  std::chrono::milliseconds kill_grace{10'000};     // from SIGTERM to SIGKILL
  // Signals received by ztctl: a counter and the last signal number (ztctl's handler sets both).
  const std::atomic<int>* interrupts = nullptr;
  const std::atomic<int>* last_signal = nullptr;
};

// Runs the job; returns ztctl's exit code. Progress and errors go to `err` (the children's own
// output goes straight to ztctl's stdout/stderr).
int run_launch(const LaunchOptions& options, std::ostream& err);

// ---- pieces, exposed for tests ------------------------------------------------------------------

// The mpirun command line: mpirun -np N [--oversubscribe] [extra args] -x ZT_COORDINATOR_KEY
// WORKER --coordinator ENDPOINT. --oversubscribe is added when N exceeds `slots` and the extra
// arguments do not already say how to oversubscribe.
std::vector<std::string> mpirun_command(const std::string& mpirun, int np,
                                        const std::vector<std::string>& extra_args,
                                        const std::string& worker_bin, const std::string& endpoint,
                                        int slots);

// The environment of mpirun: `base` (NAME=VALUE strings) with ZT_COORDINATOR_KEY=key, and, when
// running as root, OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1 unless the caller set them.
std::vector<std::string> worker_environment(const std::vector<std::string>& base,
                                            const std::string& key, bool as_root);

// How many MPI slots Open MPI gives this machine by default: physical cores this process may run
// on (hyperthreads of one core count once). At least 1.
int default_mpi_slots();

// The directory holding the running executable (/proc/self/exe); empty if unknown.
std::string executable_dir();

// `name` when it contains a slash and is executable, else the first executable `name` in $PATH.
Result<std::string> find_executable(const std::string& name);

// "exit 3", "killed by signal 9 (Killed)" for a waitpid status; and the shell-style exit code
// (the exit status, or 128+signal).
std::string describe_wait_status(int wait_status);
int exit_code_of(int wait_status);

}  // namespace zt::ctl
