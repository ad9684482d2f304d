// detail::Interception: one call as its client's interceptors see it (interceptor.hpp),
// from their before() to their after(). Made only for a client that has interceptors, so
// that a call without them costs nothing. end() may run on any thread, once.
#pragma once

#include <memory>
#include <vector>

#include "connection.hpp"
#include "sagebus/interceptor.hpp"

namespace sagebus::detail {

class Interception {
 public:
  using List = std::vector<std::shared_ptr<Interceptor>>;

  // Runs each interceptor's before() on `spec`, whose headers they may change. nullptr
  // when `interceptors` is empty. A refusal ends the call at once (end()) and is thrown.
  static std::shared_ptr<Interception> begin(const List& interceptors, RequestSpec& spec);

  // Runs the after() of each interceptor whose before() ran, in reverse order.
  void end(Status status, std::string_view message, std::size_t reply_bytes,
           std::size_t chunks = 0);
  void end(const Outcome& outcome) { end(outcome.status, outcome.message, outcome.payload.size()); }

 private:
  Interception(const List& interceptors, const RequestSpec& spec);

  const List& interceptors_;  // the client's: it outlives its calls
  std::string service_, method_, trace_id_;
  std::map<std::string, std::string> headers_;
  CallInfo info_;
  std::size_t ran_ = 0;
  Clock::time_point started_;
};

}  // namespace sagebus::detail
