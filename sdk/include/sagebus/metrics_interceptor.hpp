// sagebus::MetricsInterceptor: middleware (interceptor.hpp) that keeps, per service and
// method, a latency histogram and a count per outcome status, and shows them in the
// Prometheus text format. A service exposes them as a method of its own:
//
//   auto metrics = std::make_shared<sagebus::MetricsInterceptor>();
//   sagebus::Service svc(client, "memory", {.interceptors = {metrics}});
//   svc.handle("metrics", metrics->handler());   // busctl call memory metrics
//
// Thread safe.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "sagebus/interceptor.hpp"
#include "sagebus/service.hpp"

namespace sagebus {

class MetricsInterceptor final : public Interceptor,
                                 public std::enable_shared_from_this<MetricsInterceptor> {
 public:
  // Upper bounds of the histogram's buckets, in seconds (the last bucket is +Inf).
  static constexpr std::array<double, 15> kBuckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                   0.005,  0.01,    0.025,  0.05,  0.1,
                                                   0.25,   0.5,     1.0,    2.5,   10.0};
  struct Method {
    std::array<std::uint64_t, kBuckets.size() + 1> buckets{};  // not cumulative; last: +Inf
    std::uint64_t count = 0;
    double seconds = 0;  // the sum of all durations
    std::map<Status, std::uint64_t> statuses;
  };

  void after(const CallInfo& call, const CallEnd& end) override;

  // "service.method" -> its figures, now.
  std::map<std::string, Method> snapshot() const;
  // The figures in the Prometheus text format (histogram sagebus_call_duration_seconds and
  // counter sagebus_calls_total, labelled service, method and status).
  std::string prometheus() const;
  // A handler that answers prometheus(); it keeps this interceptor alive. Only for an
  // interceptor made with std::make_shared.
  Handler handler();

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Method> methods_;
};

}  // namespace sagebus
