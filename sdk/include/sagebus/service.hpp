// sagebus::Service: one instance of a named service, served over a Client's connection.
//
// Usage: construct, handle() each method, start(). The broker sends this instance at
// most max_inflight calls at once; a pool of worker threads runs the handlers (or the
// client's I/O thread: ServiceOptions::on_io_thread). What a
// handler returns is the reply payload; a handler that throws sagebus::Error replies
// with that status and message, any other exception replies HANDLER_ERROR with its
// what(). Handlers may call other services through any Client, including this one.
//
// Thread safety: handle() must be called before start(); start(), stop() and the
// queries may be called from any thread. The Client must outlive the Service.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "sagebus/client.hpp"

namespace sagebus {

namespace detail {
class ServiceCore;
}

enum class Strategy : int {
  least_outstanding = 0,  // default: fewest calls in flight, never above max_inflight
  round_robin = 1,
  consistent_hash = 2,  // on CallOptions::routing_key
};

struct ServiceOptions {
  std::size_t max_inflight = 16;
  // Handler threads; 0 means min(max_inflight, 64).
  std::size_t workers = 0;
  // Runs handlers on the client's I/O thread instead, one at a time, as each call
  // arrives: no thread hand-off either way, for handlers that return at once. While one
  // runs, the client reads and sends nothing, so such a handler must not block: a
  // synchronous request through the same Client fails INVALID_ARGUMENT (it would wait for
  // the thread it runs on; call_async works), and a handler slower than the client's
  // lease (heartbeat x liveness) costs the client its connection. `workers` is unused.
  bool on_io_thread = false;
  std::string version = "0";
  // All live instances of a service must agree on it; a disagreeing registration fails.
  Strategy strategy = Strategy::least_outstanding;
};

struct Request {
  std::string_view service;
  std::string_view method;
  std::string_view payload;
  const std::map<std::string, std::string>& headers;
  std::chrono::steady_clock::time_point deadline;  // when the caller stops waiting
};

using Handler = std::function<std::string(const Request&)>;

class Service {
 public:
  // Throws Error(INVALID_ARGUMENT) for an invalid service name or options.
  Service(Client& client, std::string name, ServiceOptions options = {});
  // stop()s the service if it is running.
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Sets the handler of `method`. Throws Error(INVALID_ARGUMENT) for an invalid method
  // name, and Error(INVALID_ARGUMENT) once start() was called.
  void handle(std::string method, Handler handler);

  // Registers with the broker (now if connected, else as soon as it is) and returns.
  // Throws Error(INVALID_ARGUMENT) if no method has a handler.
  void start();

  // Waits up to `timeout` for the broker to confirm the registration. Returns true when
  // it has; false on timeout; throws Error with the broker's status if it refused.
  bool wait_registered(std::chrono::milliseconds timeout);

  // Graceful stop: unregisters (the broker sends no new calls) and waits up to `drain`
  // for the calls this instance holds to be answered. Calls not yet started when
  // `drain` ends are answered UNAVAILABLE; stop() then waits for the handlers still
  // running to return, and joins the workers. Idempotent.
  void stop(std::chrono::milliseconds drain = std::chrono::seconds(5));

  const std::string& name() const noexcept;
  // Calls this instance has answered.
  std::size_t served() const noexcept;

 private:
  Client* client_;
  std::string name_;
  ServiceOptions options_;
  std::map<std::string, Handler> handlers_;  // until start()
  std::shared_ptr<detail::ServiceCore> core_;
  bool stopped_ = false;
};

}  // namespace sagebus
