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
#include <vector>

#include "sagebus/client.hpp"
#include "sagebus/interceptor.hpp"

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
  // Middleware around every call this instance serves (interceptor.hpp), in order.
  std::vector<std::shared_ptr<Interceptor>> interceptors{};
};

struct Request {
  std::string_view service;
  std::string_view method;
  std::string_view payload;
  const std::map<std::string, std::string>& headers;
  std::chrono::steady_clock::time_point deadline;  // when the caller stops waiting
  // For the calls the handler makes (CallOptions::context): this call's deadline, trace
  // and cancellation.
  const CallContext& context;

  // The caller cancelled the call or left; its outcome is no longer awaited, and what the
  // handler returns is dropped. context.cancel.on_cancel() runs a function then instead.
  bool cancelled() const { return context.cancel.cancelled(); }
  // The trace id of the chain of calls this one belongs to (32 hex digits), or empty.
  std::string_view trace_id() const;
};

using Handler = std::function<std::string(const Request&)>;
// A handler that answers with a stream of chunks (stream.hpp): it writes them to `out`;
// its return ends the stream OK, an Error it throws ends it with that status.
using StreamHandler = std::function<void(const Request&, StreamWriter& out)>;

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
  // Sets the streaming handler of `method` (Client::stream calls it). A plain call to it
  // fails INVALID_ARGUMENT; a stream() of a method with a plain handler gets its reply as
  // one chunk. Throws as handle(), and Error(INVALID_ARGUMENT) with on_io_thread (a
  // writer waits for the caller's window).
  void handle_stream(std::string method, StreamHandler handler);

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
  std::map<std::string, Handler> handlers_;               // until start()
  std::map<std::string, StreamHandler> stream_handlers_;  // until start()
  std::shared_ptr<detail::ServiceCore> core_;
  bool stopped_ = false;
};

}  // namespace sagebus
