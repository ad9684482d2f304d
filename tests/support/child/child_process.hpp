// Child processes on this machine, as the integration tests and sage-bus-bench both run
// them: sage-busd and other programs on free 127.0.0.1 ports, each with its output in a
// log file, stopped by their destructor (SIGCONT + SIGTERM, then SIGKILL).
//
// Every child dies with its parent: it is started with PR_SET_PDEATHSIG (so start
// children from a thread that outlives them — the signal fires when the forking thread
// exits), and kill_all_children() — async-signal-safe — kills every child still
// running, for a parent's own SIGINT/SIGTERM handler. Not thread safe otherwise.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sagebus::child {

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// A fresh directory $TMPDIR/<prefix>-XXXXXX, removed with its contents by the
// destructor — or, with `keep`, left in place and named on stderr.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix, bool keep = false);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool keep_;
};

class ChildProcess {
 public:
  // Starts argv[0] (a path) with stdout and stderr appended to `log_path`, stdin from
  // /dev/null. Throws std::runtime_error when it cannot be started.
  ChildProcess(std::vector<std::string> argv, std::string log_path);
  ~ChildProcess();  // stop()
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `sig`. SIGSTOP returns once the child is stopped, all its threads (throws
  // std::runtime_error after 5 s): until then, some of them may still run.
  void signal(int sig);
  // Waits up to `timeout` for the child to exit; returns its wait status, or -1.
  int wait_exit(std::chrono::milliseconds timeout);
  // SIGCONT (a stopped child cannot act on SIGTERM) and SIGTERM, then SIGKILL if it has
  // not exited within `grace`. Returns the wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  std::string log() const;
  // Polls the log for `needle` until `timeout`; false when time ran out or the child
  // exited without writing it.
  bool wait_for_log(std::string_view needle, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_path_;
};

// SIGKILLs every ChildProcess still running. Async-signal-safe.
void kill_all_children() noexcept;

// VmRSS of `pid` from /proc/<pid>/status, in KiB; 0 if unreadable.
std::uint64_t rss_kib(pid_t pid);

}  // namespace sagebus::child
