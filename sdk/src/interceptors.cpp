// The example interceptors: LoggingInterceptor and MetricsInterceptor.
#include <cstdio>
#include <sstream>

#include "sagebus/logging_interceptor.hpp"
#include "sagebus/metrics_interceptor.hpp"

namespace sagebus {

LoggingInterceptor::LoggingInterceptor(std::string label, Sink sink)
    : label_(std::move(label)), sink_(std::move(sink)) {}

void LoggingInterceptor::after(const CallInfo& call, const CallEnd& end) {
  std::ostringstream line;
  line.precision(3);
  line << std::fixed << label_ << ' ' << call.service << '.' << call.method << ' '
       << call.payload_bytes << " B -> " << status_name(end.status);
  if (end.status != Status::ok) line << " (" << end.message << ")";
  line << ' ' << end.reply_bytes << " B";
  if (call.stream) line << " in " << end.chunks << " chunks";
  if (call.all) line << " from " << end.chunks << " instances";
  line << " in " << std::chrono::duration<double, std::milli>(end.duration).count() << " ms";
  if (!call.trace_id.empty()) line << " trace " << call.trace_id;
  const std::string text = line.str();
  if (sink_) {
    sink_(text);
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
}

void MetricsInterceptor::after(const CallInfo& call, const CallEnd& end) {
  const double seconds = std::chrono::duration<double>(end.duration).count();
  std::size_t bucket = 0;
  while (bucket < kBuckets.size() && seconds > kBuckets[bucket])
    ++bucket;
  std::string key;
  key.reserve(call.service.size() + 1 + call.method.size());
  key.append(call.service).append(1, '.').append(call.method);
  std::lock_guard lock(mutex_);
  Method& m = methods_[key];
  ++m.buckets[bucket];
  ++m.count;
  m.seconds += seconds;
  ++m.statuses[end.status];
}

std::map<std::string, MetricsInterceptor::Method> MetricsInterceptor::snapshot() const {
  std::lock_guard lock(mutex_);
  return methods_;
}

std::string MetricsInterceptor::prometheus() const {
  const auto methods = snapshot();
  std::ostringstream out;
  out << "# HELP sagebus_call_duration_seconds Calls' durations, from before() to the outcome.\n"
         "# TYPE sagebus_call_duration_seconds histogram\n";
  for (const auto& [key, m] : methods) {
    const auto dot = key.find('.');
    const std::string labels =
        "service=\"" + key.substr(0, dot) + "\",method=\"" + key.substr(dot + 1) + "\"";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += m.buckets[i];
      out << "sagebus_call_duration_seconds_bucket{" << labels << ",le=\"" << kBuckets[i] << "\"} "
          << cumulative << "\n";
    }
    out << "sagebus_call_duration_seconds_bucket{" << labels << ",le=\"+Inf\"} " << m.count << "\n"
        << "sagebus_call_duration_seconds_sum{" << labels << "} " << m.seconds << "\n"
        << "sagebus_call_duration_seconds_count{" << labels << "} " << m.count << "\n";
  }
  out << "# HELP sagebus_calls_total Calls by outcome.\n# TYPE sagebus_calls_total counter\n";
  for (const auto& [key, m] : methods) {
    const auto dot = key.find('.');
    for (const auto& [status, n] : m.statuses)
      out << "sagebus_calls_total{service=\"" << key.substr(0, dot) << "\",method=\""
          << key.substr(dot + 1) << "\",status=\"" << status_name(status) << "\"} " << n << "\n";
  }
  return out.str();
}

Handler MetricsInterceptor::handler() {
  return [self = shared_from_this()](const Request&) { return self->prometheus(); };
}

}  // namespace sagebus
