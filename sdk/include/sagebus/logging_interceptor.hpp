// sagebus::LoggingInterceptor: middleware (interceptor.hpp) that writes one line per call,
// as a client's or a service's interceptor:
//
//   <label> memory.retrieve 120 B -> OK 456 B in 1.234 ms trace 4bf92f3577b34da6...
//
// to a sink (standard error by default). Thread safe: lines are whole, one sink call each.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "sagebus/interceptor.hpp"

namespace sagebus {

class LoggingInterceptor final : public Interceptor {
 public:
  using Sink = std::function<void(std::string_view line)>;
  // `label` starts each line (e.g. the program's or the service's name); an empty sink
  // writes to standard error.
  explicit LoggingInterceptor(std::string label = "sagebus", Sink sink = {});

  void after(const CallInfo& call, const CallEnd& end) override;

 private:
  const std::string label_;
  const Sink sink_;
};

}  // namespace sagebus
