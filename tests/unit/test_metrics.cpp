// Histogram buckets, the bounded per-method table, and the limits in the Prometheus text.
#include <catch2/catch.hpp>

#include "operations/admin.hpp"
#include "operations/metrics.hpp"

using namespace sagebus::broker;
using std::chrono::microseconds;

TEST_CASE("a latency falls in the first bucket whose bound is at least it", "[metrics]") {
  Histogram h;
  h.observe(microseconds(0));
  h.observe(microseconds(100));
  h.observe(microseconds(101));
  h.observe(microseconds(10'000'000));
  h.observe(microseconds(10'000'001));
  CHECK(h.buckets[0] == 2);  // <= 100 us
  CHECK(h.buckets[1] == 1);  // <= 250 us
  CHECK(h.buckets[kLatencyBoundsUs.size() - 1] == 1);
  CHECK(h.buckets[kLatencyBoundsUs.size()] == 1);  // +Inf
  CHECK(h.count == 5);
  CHECK(h.sum_us == 20'000'202);
}

TEST_CASE("finishing a call counts its status and leaves in-flight", "[metrics]") {
  MethodStats s;
  ++s.calls;
  ++s.in_flight;
  s.finish(3, microseconds(5));
  CHECK(s.in_flight == 0);
  CHECK(s.outcomes[3] == 1);
  s.finish(99, microseconds(5));  // unknown status: the last slot; in_flight stays 0
  CHECK(s.outcomes[kStatusCount - 1] == 1);
  CHECK(s.in_flight == 0);
}

TEST_CASE("the method table keeps at most kMaxMethodSeries pairs, then shares _other",
          "[metrics]") {
  MethodTable t;
  MethodStats* first = t.find_or_add("svc", "m0");
  CHECK(t.find_or_add("svc", "m0") == first);
  for (std::size_t i = 1; i < kMaxMethodSeries; ++i)
    t.find_or_add("svc", "m" + std::to_string(i));
  CHECK(t.size() == kMaxMethodSeries);
  MethodStats* a = t.find_or_add("svc", "beyond-a");
  MethodStats* b = t.find_or_add("other", "beyond-b");
  CHECK(a == b);
  CHECK(t.size() == kMaxMethodSeries);
  ++a->calls;
  CHECK(t.sorted().count({"_other", "_other"}) == 1);
  // Service "a" + method "bc" is not service "ab" + method "c".
  CHECK(MethodTable{}.find_or_add("a", "bc") != nullptr);
}

TEST_CASE("the method table finds only pairs added before, never the shared _other series",
          "[metrics]") {
  MethodTable t;
  CHECK(t.find("svc", "m") == nullptr);
  MethodStats* added = t.find_or_add("svc", "m");
  CHECK(t.find("svc", "m") == added);
  CHECK(t.find("sv", "cm") == nullptr);  // the same bytes, split elsewhere
  for (std::size_t i = 1; i < kMaxMethodSeries; ++i)
    t.find_or_add("svc", "m" + std::to_string(i));
  MethodStats* other = t.find_or_add("svc", "beyond");
  CHECK(other != nullptr);
  CHECK(t.find("svc", "beyond") == nullptr);
  CHECK(t.size() == kMaxMethodSeries);
}

TEST_CASE("the Prometheus text has every limit's value and refusals, labelled by its key",
          "[metrics][limits]") {
  BrokerIdentity identity;
  BrokerConfig config;
  config.max_calls_per_client = 7;
  Registry registry;
  PendingCalls calls(10);
  Metrics metrics;
  metrics.refused(Limit::max_calls_per_client);
  metrics.refused(Limit::max_calls_per_client);
  metrics.refused(Limit::max_header);
  SubscriptionTable subscriptions;
  RecentTopics topics;
  LegacyQueues queues(QueueLimits{}, {});
  std::unordered_map<std::string, std::deque<CallId>> held;
  const AdminSources sources{identity, config, registry, calls,   metrics,     subscriptions,
                             topics,   queues, held,     nullptr, TimePoint{}, false};
  const std::string text = prometheus_text(sources, false);
  CHECK_THAT(text, Catch::Contains("# TYPE sagebus_limit gauge\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE sagebus_limit_refusals_total counter\n"));
  CHECK_THAT(text, Catch::Contains("\nsagebus_limit{limit=\"max-calls-per-client\"} 7\n"));
  CHECK_THAT(text, Catch::Contains("\nsagebus_limit{limit=\"max-header\"} 65536\n"));
  CHECK_THAT(text,
             Catch::Contains("\nsagebus_limit_refusals_total{limit=\"max-calls-per-client\"} 2\n"));
  CHECK_THAT(text, Catch::Contains("\nsagebus_limit_refusals_total{limit=\"max-header\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\nsagebus_limit_refusals_total{limit=\"peer-queue\"} 0\n"));
  for (const Limit l : kLimits) {
    INFO(limit_key(l));
    CHECK_THAT(text, Catch::Contains("sagebus_limit{limit=\"" + std::string(limit_key(l)) + "\"}"));
  }
}
