// Child processes of the benchmark: the servers it measures (sage-busd, nats-server and
// its own ZeroMQ forwarder), each started on free 127.0.0.1 ports with its output in a
// log file, and stopped by the destructor (SIGTERM, then SIGKILL).
//
// Every child also dies with the benchmark: it is started with PR_SET_PDEATHSIG, and
// install_signal_cleanup() makes SIGINT/SIGTERM to the benchmark kill every child still
// running before the benchmark exits. Children must be started from the main thread (the
// death signal fires when the thread that forked exits). Not thread safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sagebus::bench {

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// A fresh directory under $TMPDIR, removed with its contents by the destructor (kept,
// and named on stderr, when SAGEBUS_BENCH_KEEP_LOGS=1).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Child {
 public:
  // Starts argv[0] (a path) with stdout and stderr appended to `log_path`.
  // Throws std::runtime_error when it cannot be started.
  Child(std::vector<std::string> argv, std::string log_path);
  ~Child();  // stop()
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM, then SIGKILL after `grace`. Returns the wait status (or -1).
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(3));
  std::string log() const;
  // Polls the log for `needle` until `timeout`; false when the child exited or time ran out.
  bool wait_for_log(std::string_view needle, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_path_;
};

// SIGINT/SIGTERM: kill every running Child, then exit 130.
void install_signal_cleanup();

// VmRSS of `pid` from /proc/<pid>/status, in KiB (0 if unreadable).
std::uint64_t rss_kib(pid_t pid);

// Raises RLIMIT_NOFILE towards `wanted` (the hard limit too, when privileged).
// Returns the soft limit now in force.
std::uint64_t raise_nofile(std::uint64_t wanted);

// The path of this executable (to start it again as the ZeroMQ forwarder).
std::string self_path();

}  // namespace sagebus::bench
