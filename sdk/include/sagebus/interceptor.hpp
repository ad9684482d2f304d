// sagebus::Interceptor: middleware around calls.
//
// A client's interceptors (ClientOptions::interceptors) see each call it makes, a
// service's (ServiceOptions::interceptors) each call it serves; one interceptor may serve
// both, as the SDK's LoggingInterceptor and MetricsInterceptor do. before() in the order they
// were registered, before the call is sent (client) or its handler runs (service); after()
// in the reverse order, once the call has its outcome. before() may add headers (the
// client's reach the service; the service's reach its handler) and may refuse the call by
// returning an Error: the call then ends with it (the caller sees that status), nothing is
// sent or run, and every interceptor whose before() ran (the refusing one included) sees
// after() with that outcome. Streams and call_all are calls too (CallInfo::stream,
// CallInfo::all).
//
// Thread safety: interceptors are shared by every thread that calls or serves, and must
// be thread safe. A client's after() runs on the thread that ends the call (the caller's,
// the callback thread or the client's I/O thread): it must be quick and must not throw.
// What before() throws, other than the Error it may return, is the caller's.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "sagebus/status.hpp"

namespace sagebus {

struct CallInfo {
  std::string_view service;
  std::string_view method;
  // The call's headers: before() may add or change some.
  std::map<std::string, std::string>& headers;
  std::size_t payload_bytes = 0;
  bool stream = false;          // a streamed reply (Client::stream)
  bool all = false;             // scatter-gather (Client::call_all)
  std::string_view trace_id{};  // 32 hex digits, or empty
};

struct CallEnd {
  Status status = Status::ok;
  std::string_view message{};            // why, when status != ok
  std::size_t reply_bytes = 0;           // the reply's payload, or all chunks' together
  std::size_t chunks = 0;                // a stream's chunks; call_all's outcomes
  std::chrono::nanoseconds duration{0};  // from before() to the outcome
};

class Interceptor {
 public:
  virtual ~Interceptor() = default;
  // Before the call is sent (a client's) or its handler runs (a service's). An Error
  // refuses the call with that status and message.
  virtual std::optional<Error> before(CallInfo& call) {
    (void)call;
    return std::nullopt;
  }
  virtual void after(const CallInfo& call, const CallEnd& end) {
    (void)call;
    (void)end;
  }
};

}  // namespace sagebus
