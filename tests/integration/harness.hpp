// The integration tests' harness: runs the real sage-busd and other programs of this
// build as child processes on free loopback ports, waits for them with timeouts, and
// stops them. Every child dies with the test process (PR_SET_PDEATHSIG), so a crashed
// test leaves nothing running. Not thread safe: use from the test's main thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "child_process.hpp"
#include "sagebus/admin.pb.h"
#include "sagebus/sagebus.hpp"

namespace sagebus::test {

using namespace std::chrono_literals;

// Paths of this build's programs.
std::string busd_path();
std::string busctl_path();
std::string echo_service_path();
std::string test_peer_path();

using child::free_port;
// A child process whose stdout and stderr go to a log file (child_process.hpp).
using Process = child::ChildProcess;

// A fresh directory under $TMPDIR for one test's logs; removed by the destructor.
class TempDir : public child::TempDir {
 public:
  TempDir() : child::TempDir("sagebus-test") {}
};

// sage-busd on tcp://127.0.0.1:<port>, started by start() or the constructor.
class Broker {
 public:
  explicit Broker(std::vector<std::string> extra_args = {}, bool start_now = true);
  // Waits until it listens; throws on timeout. Again after it stopped: a new process on
  // the same port, with the same arguments (and so the same --store), logging afresh.
  void start();
  int stop();  // SIGTERM; returns the wait status
  const std::string& endpoint() const { return endpoint_; }
  int port() const { return port_; }
  Process& process() { return *process_; }
  // The log of the process started last.
  std::string log() const { return process_ ? process_->log() : std::string(); }

 private:
  TempDir dir_;
  std::vector<std::string> extra_args_;
  int port_;
  std::string endpoint_;
  std::unique_ptr<Process> process_;
  int starts_ = 0;
};

// The result of running a program to completion.
struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
RunResult run(const std::vector<std::string>& argv, std::string_view input = {},
              std::chrono::milliseconds timeout = 20s);

// Options for a client of `broker` (or of `endpoint`) named `name`. Names must differ
// among the live clients of one test: the broker refuses a second with the same name.
ClientOptions at(const Broker& broker, std::string name = "test");
ClientOptions at(const std::string& endpoint, std::string name = "test");

// The sagebus::Error that `fn` throws; Error(Status::ok, "nothing was thrown") if none.
Error error_of(const std::function<void()>& fn);
// error_of(fn).status().
Status status_of(const std::function<void()>& fn);

// Polls `condition` every few milliseconds until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// Everything one subscription's handler was given, in the order it was given.
class Inbox {
 public:
  MessageHandler handler() {
    return [this](const Message& m) {
      std::lock_guard lock(mutex_);
      messages_.push_back(m);
    };
  }
  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return messages_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
};

// An echo instance of service `name` in this process, on its own client: method "echo"
// answers the payload. Registered when constructed (throws if not within 5 s); stopped
// before its client goes.
class EchoInstance {
 public:
  EchoInstance(const std::string& endpoint, const std::string& name);
  // The same on a client with `options` (its name, keys).
  EchoInstance(const ClientOptions& options, const std::string& name);
  ~EchoInstance();
  EchoInstance(const EchoInstance&) = delete;
  EchoInstance& operator=(const EchoInstance&) = delete;

 private:
  Client client_;
  Service service_;
};

// An instance of service `name` in this process, on its own client: its handlers of method
// "wait" block until open() (or the destructor), then answer the payload. Up to
// `max_inflight` run at once. Registered when constructed (throws if not within 5 s).
class GatedService {
 public:
  GatedService(const std::string& endpoint, const std::string& name, std::size_t max_inflight);
  // The same on a client with `options` (its name, keys).
  GatedService(const ClientOptions& options, const std::string& name, std::size_t max_inflight);
  ~GatedService();  // opens, then stops
  GatedService(const GatedService&) = delete;
  GatedService& operator=(const GatedService&) = delete;
  void open();
  Client& client() { return client_; }
  Service& service() { return service_; }

 private:
  std::promise<void> gate_;
  std::shared_future<void> opened_ = gate_.get_future().share();
  std::once_flag once_;
  Client client_;
  Service service_;
};

// The broker's own reports, through the admin service "$broker".
admin::BrokerStatus broker_status(Client& client);
admin::ServiceList broker_services(Client& client);
admin::ClientList broker_clients(Client& client);
admin::TopicList broker_topics(Client& client);
admin::QueueList broker_queues(Client& client);
// Calls in flight on the instances of `service`, summed.
unsigned in_flight(Client& client, const std::string& service);
// Subscriptions the broker holds whose pattern is `pattern`.
unsigned subscriptions_on(Client& client, const std::string& pattern);

// The resident set size of process `pid` (VmRSS in /proc/PID/status), in KiB.
long rss_kib(pid_t pid);

}  // namespace sagebus::test
