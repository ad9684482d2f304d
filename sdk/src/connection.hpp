// detail::Connection: the engine behind one sagebus::Client.
//
// It owns the client's I/O thread, and the I/O thread owns the DEALER socket, its
// monitor and every table of calls and registrations; other threads never touch them.
// User threads hand work over through a mutex-guarded command list and an eventfd that
// wakes the I/O thread. Completions (Done) run on the I/O thread and must be quick:
// they fulfil a promise or post to the callback thread.
//
// Connection states (as gRPC's): connecting (since start or since a loss, until the
// first connect attempt fails), ready (welcomed by the broker), failing (an attempt
// failed; retrying with backoff). Calls without wait_for_ready wait while connecting and
// fail UNAVAILABLE while failing; calls with it wait until ready or their deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "sagebus/client.hpp"

namespace sagebus::detail {

class ServiceCore;
using Clock = std::chrono::steady_clock;
// Called exactly once per call, on the I/O thread.
using Done = std::function<void(Reply)>;

// Runs posted functions in order on one thread of its own.
class CallbackThread {
 public:
  CallbackThread();
  ~CallbackThread();  // runs what is queued, then joins
  void post(std::function<void()> fn);

 private:
  void run_();
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

struct CallSpec {
  std::string service;
  std::string method;
  std::string payload;
  CallOptions options;
};

class Connection {
 public:
  explicit Connection(ClientOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts a call; `done` runs exactly once with its outcome. Never blocks.
  void start_call(CallSpec spec, Done done);
  // Adds `core` to the services this connection registers (now, and after every
  // WELCOME), and routes its calls to it.
  void add_service(std::shared_ptr<ServiceCore> core);
  // Sends UNREGISTER; the core hears the broker's answer through on_unregistered().
  void unregister_service(const std::string& name);
  // Forgets the service: requests for it are answered UNAVAILABLE from now on.
  void remove_service(const std::string& name);
  // Sends the reply of dispatch `id` (from a service worker).
  void send_reply(std::uint64_t id, Status status, std::string message, std::string payload);
  void post_callback(std::function<void()> fn) { callbacks_.post(std::move(fn)); }

  bool connected() const { return ready_.load(std::memory_order_acquire); }
  bool wait_connected(std::chrono::milliseconds timeout) const;
  const ClientOptions& options() const noexcept { return options_; }

 private:
  struct StartCall {
    CallSpec spec;
    Done done;
  };
  struct AddService {
    std::shared_ptr<ServiceCore> core;
  };
  struct Unregister {
    std::string name;
  };
  struct RemoveService {
    std::string name;
  };
  struct SendReply {
    std::uint64_t id;
    Status status;
    std::string message;
    std::string payload;
  };
  using Command = std::variant<StartCall, AddService, Unregister, RemoveService, SendReply>;

  void post_(Command command);
  void run_();

  class Engine;  // the I/O thread's state; defined in connection.cpp
  friend class Engine;

  ClientOptions options_;
  std::atomic<bool> ready_{false};
  mutable std::mutex ready_mutex_;
  mutable std::condition_variable ready_cv_;

  std::mutex commands_mutex_;
  std::vector<Command> commands_;
  int wake_fd_ = -1;  // eventfd: readable when commands_ is non-empty or on stop
  std::atomic<bool> stopping_{false};

  CallbackThread callbacks_;
  std::thread io_thread_;
};

}  // namespace sagebus::detail
