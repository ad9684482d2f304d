// sage-busd with a durable store (--store), for the crash tests: on a fixed loopback
// endpoint and store file, so that it can be killed and started again on both; each start
// logs to a file of its own (sage-busd-<start>.log in the test's directory). Not thread
// safe: use from the test's main thread, which must outlive it (its children die with the
// thread that started them).
#pragma once

#include <sys/types.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

namespace sagebus::test {

class CrashBroker {
 public:
  // `extra` goes after the options set here (heartbeat, liveness, log level...).
  CrashBroker(std::string dir, std::string store, std::vector<std::string> extra = {})
      : dir_(std::move(dir)),
        store_(std::move(store)),
        extra_(std::move(extra)),
        endpoint_("tcp://127.0.0.1:" + std::to_string(free_port())) {}

  // Starts it and waits until it listens (it recovers the store first). With
  // `failpoint` ("POINT:N"), it runs with SAGEBUS_STORE_FAILPOINT set to it (through
  // env(1), which execs it: the pid is the broker's). Throws if it does not listen
  // within `timeout`.
  void start(const std::string& failpoint = {},
             std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::vector<std::string> argv;
    if (!failpoint.empty()) argv = {"/usr/bin/env", "SAGEBUS_STORE_FAILPOINT=" + failpoint};
    const std::vector<std::string> own{busd_path(), "--endpoint", endpoint_,     "--store", store_,
                                       "--http",    "off",        "--log-level", log_level_};
    argv.insert(argv.end(), own.begin(), own.end());
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    process_.reset();  // reaps the previous one
    process_ = std::make_unique<Process>(argv, log_path(++starts_));
    if (!process_->wait_for_log("listening on " + endpoint_, timeout))
      throw std::runtime_error("sage-busd (start " + std::to_string(starts_) +
                               ") did not listen on " + endpoint_ + "; its log:\n" +
                               process_->log());
    pid_.store(process_->pid());
  }

  // SIGKILL; returns the wait status (-1 if it did not end within 5 s).
  int kill() {
    pid_.store(0);
    if (!process_) return -1;
    process_->signal(SIGKILL);
    return process_->wait_exit(std::chrono::seconds(5));
  }
  // Waits up to `timeout` for it to exit by itself; returns its wait status, or -1.
  int wait_exit(std::chrono::milliseconds timeout) {
    const int status = process_ ? process_->wait_exit(timeout) : -1;
    if (status != -1) pid_.store(0);
    return status;
  }
  // SIGTERM (SIGKILL after 10 s); returns the wait status.
  int stop() {
    pid_.store(0);
    return process_ ? process_->stop(std::chrono::seconds(10)) : -1;
  }

  void set_log_level(std::string level) { log_level_ = std::move(level); }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& store() const { return store_; }
  pid_t pid() const { return pid_.load(); }
  int starts() const { return starts_; }
  std::string log_path(int start) const {
    return dir_ + "/sage-busd-" + std::to_string(start) + ".log";
  }
  // The log of the current (last) start.
  std::string log() const { return process_ ? process_->log() : std::string(); }

 private:
  std::string dir_;
  std::string store_;
  std::vector<std::string> extra_;
  std::string endpoint_;
  std::string log_level_ = "info";
  int starts_ = 0;
  std::unique_ptr<Process> process_;
  std::atomic<pid_t> pid_{0};
};

// Options for a client of `endpoint` named `name` that reconnects quickly after the
// broker restarts (its default backoff grows to 2 s).
inline ClientOptions quick_client(const std::string& endpoint, std::string name) {
  ClientOptions options = at(endpoint, std::move(name));
  options.reconnect_min = std::chrono::milliseconds(20);
  options.reconnect_max = std::chrono::milliseconds(100);
  return options;
}

}  // namespace sagebus::test
