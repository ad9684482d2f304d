#include "scenarios.hpp"

#include <algorithm>
#include <latch>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "child.hpp"

namespace sagebus::bench {

using namespace std::chrono_literals;

const std::vector<std::string>& scenario_names() {
  static const std::vector<std::string> names{"reqrep_c1",  "reqrep_c8",   "lb_w4_c8",
                                              "pipelined",  "pubsub_1to1", "pubsub_1to4",
                                              "reqrep_64k", "reqrep_1m",   "clients_10k"};
  return names;
}

namespace {

std::string data_payload(std::size_t bytes) {
  std::string payload(bytes, 'x');
  if (!payload.empty()) payload.front() = kDataMark;
  return payload;
}

std::size_t warmup_of(std::size_t calls) {
  return std::max<std::size_t>(20, calls / 20);
}

double per_second(std::uint64_t count, std::int64_t elapsed_ns) {
  return elapsed_ns > 0 ? static_cast<double>(count) * 1e9 / static_cast<double>(elapsed_ns) : 0;
}

// `callers` threads, each with its own connection, make `calls` synchronous calls in all
// after a warm-up; the clock runs from the release of all of them to the last reply.
Result reqrep(System& system, std::vector<std::unique_ptr<Caller>>& callers, std::size_t calls,
              std::size_t payload_bytes) {
  const std::string payload = data_payload(payload_bytes);
  const std::size_t n = callers.size();
  std::vector<std::vector<std::int64_t>> latencies(n);
  std::vector<std::uint64_t> errors(n, 0);
  std::mutex error_mutex;
  std::string first_error;
  std::latch ready(static_cast<std::ptrdiff_t>(n + 1));
  std::vector<std::int64_t> starts(n, 0), ends(n, 0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      Caller& caller = *callers[t];
      std::string reply, error;
      auto one = [&](std::vector<std::int64_t>* record) {
        const std::int64_t t0 = now_ns();
        const bool ok = caller.call(payload, reply, error);
        if (ok && reply == payload) {
          if (record) record->push_back(now_ns() - t0);
          return;
        }
        ++errors[t];
        std::lock_guard lock(error_mutex);
        if (first_error.empty()) first_error = ok ? "an echo came back different" : error;
      };
      for (std::size_t i = 0; i < warmup_of(calls) / n + 1; ++i)
        one(nullptr);
      const std::size_t mine = calls / n + (t < calls % n ? 1 : 0);
      latencies[t].reserve(mine);
      ready.arrive_and_wait();
      starts[t] = now_ns();
      for (std::size_t i = 0; i < mine; ++i)
        one(&latencies[t]);
      ends[t] = now_ns();
    });
  }
  ready.arrive_and_wait();
  for (auto& t : threads)
    t.join();
  // From the first caller's start to the last one's end (not the main thread's view: it
  // may be scheduled late on a busy machine).
  const std::int64_t elapsed =
      *std::max_element(ends.begin(), ends.end()) - *std::min_element(starts.begin(), starts.end());
  Result result;
  result.system = std::string(system.name());
  std::vector<std::int64_t> all;
  for (std::size_t t = 0; t < n; ++t) {
    all.insert(all.end(), latencies[t].begin(), latencies[t].end());
    result.errors += errors[t];
  }
  result.ops_per_s = per_second(all.size(), elapsed);
  result.p50_us = static_cast<double>(percentile(all, 50)) / 1000.0;
  result.p99_us = static_cast<double>(percentile(all, 99)) / 1000.0;
  if (!first_error.empty() && result.errors)
    std::fprintf(stderr, "sage-bus-bench: %s: %llu calls failed; the first: %s\n",
                 std::string(system.name()).c_str(), static_cast<unsigned long long>(result.errors),
                 first_error.c_str());
  return result;
}

Result reqrep_scenario(System& system, std::size_t instances, std::size_t callers_count,
                       std::size_t calls, std::size_t payload_bytes) {
  auto echo = system.echo(instances);
  std::vector<std::unique_ptr<Caller>> callers;
  for (std::size_t i = 0; i < callers_count; ++i)
    callers.push_back(system.caller());
  return reqrep(system, callers, calls, payload_bytes);
}

Result pipelined_scenario(System& system, std::size_t calls) {
  auto echo = system.echo(1);
  const std::string payload = data_payload(64);
  system.pipelined(warmup_of(calls), 64, payload);
  const std::int64_t start = now_ns();
  PipelineRun run = system.pipelined(calls, 64, payload);
  const std::int64_t elapsed = now_ns() - start;
  Result result;
  result.system = std::string(system.name());
  result.errors = run.errors;
  result.ops_per_s = per_second(run.latencies_ns.size(), elapsed);
  result.p50_us = static_cast<double>(percentile(run.latencies_ns, 50)) / 1000.0;
  result.p99_us = static_cast<double>(percentile(run.latencies_ns, 99)) / 1000.0;
  if (run.errors)
    std::fprintf(stderr, "sage-bus-bench: %s: %llu pipelined calls failed; the first: %s\n",
                 std::string(system.name()).c_str(), static_cast<unsigned long long>(run.errors),
                 run.first_error.c_str());
  return result;
}

// One publisher, `subscribers` subscribers: first probes until every subscriber hears
// one (subscriptions take effect asynchronously in all three systems), then `messages`
// data messages as fast as the publisher goes; the clock runs from the first data publish
// to the last data delivery. Waits for deliveries until none came for 3 s.
Result pubsub_scenario(System& system, std::size_t subscribers, std::size_t messages) {
  std::vector<std::unique_ptr<Tally>> tallies;
  std::vector<std::unique_ptr<Handle>> subscriptions;
  for (std::size_t i = 0; i < subscribers; ++i) {
    tallies.push_back(std::make_unique<Tally>());
    subscriptions.push_back(system.subscribe(*tallies.back(), messages));
  }
  auto publisher = system.publisher();
  const std::string probe(64, 'p'), payload = data_payload(64);
  const auto probe_until = Clock::now() + 10s;
  for (;;) {
    publisher->publish(probe);
    publisher->flush();
    std::this_thread::sleep_for(5ms);
    if (std::all_of(tallies.begin(), tallies.end(), [](auto& t) { return t->probes > 0; })) break;
    if (Clock::now() >= probe_until)
      throw std::runtime_error("the subscribers did not hear the publisher within 10 s");
  }
  const std::int64_t start = now_ns();
  for (std::size_t i = 0; i < messages; ++i)
    publisher->publish(payload);
  publisher->flush();
  const std::uint64_t expected = std::uint64_t{messages} * subscribers;
  auto delivered = [&] {
    std::uint64_t sum = 0;
    for (auto& t : tallies)
      sum += t->data.load();
    return sum;
  };
  std::uint64_t seen = delivered();
  auto last_progress = Clock::now();
  while (seen < expected && Clock::now() - last_progress < 3s) {
    std::this_thread::sleep_for(2ms);
    const std::uint64_t now_seen = delivered();
    if (now_seen != seen) last_progress = Clock::now();
    seen = now_seen;
  }
  std::int64_t end = start;
  for (auto& t : tallies)
    end = std::max(end, t->last_data_ns.load());
  subscriptions.clear();
  Result result;
  result.system = std::string(system.name());
  result.shape = Shape::pubsub;
  result.delivered = seen;
  result.lost = expected - std::min(seen, expected);
  result.ops_per_s = per_second(seen, end - start);
  result.server_dropped = system.server_dropped();
  return result;
}

// reqrep_c1 while `idle` connections are held; the server's RSS before and with them.
Result clients_scenario(System& system, std::size_t idle, std::size_t calls) {
  auto echo = system.echo(1);
  std::vector<std::unique_ptr<Caller>> callers;
  callers.push_back(system.caller());
  std::string reply, error;
  callers.front()->call(data_payload(64), reply, error);
  std::this_thread::sleep_for(200ms);
  const std::uint64_t rss_idle = rss_kib(system.server_pid());
  auto held = system.idle_clients(idle);
  Result result = reqrep(system, callers, calls, 64);
  result.rss_idle_kib = rss_idle;
  result.rss_10k_kib = rss_kib(system.server_pid());
  result.idle_clients = idle;
  return result;
}

}  // namespace

Result run_scenario(std::string_view name, const Factory& start, const Counts& counts) {
  auto system = start();
  const std::size_t calls = counts.calls;
  Result result;
  if (name == "reqrep_c1") {
    result = reqrep_scenario(*system, 1, 1, calls, 64);
  } else if (name == "reqrep_c8") {
    result = reqrep_scenario(*system, 1, 8, calls, 64);
  } else if (name == "lb_w4_c8") {
    result = reqrep_scenario(*system, 4, 8, calls, 64);
  } else if (name == "pipelined") {
    result = pipelined_scenario(*system, 5 * calls);
  } else if (name == "pubsub_1to1") {
    result = pubsub_scenario(*system, 1, counts.messages);
  } else if (name == "pubsub_1to4") {
    result = pubsub_scenario(*system, 4, counts.messages);
  } else if (name == "reqrep_64k") {
    result = reqrep_scenario(*system, 1, 1, std::max<std::size_t>(10, calls / 10), 64 * 1024);
  } else if (name == "reqrep_1m") {
    result = reqrep_scenario(*system, 1, 1, std::max<std::size_t>(10, calls / 100), 1024 * 1024);
  } else if (name == "clients_10k") {
    result = clients_scenario(*system, counts.idle_clients, calls);
  } else {
    throw std::invalid_argument("no scenario named '" + std::string(name) + "'");
  }
  result.scenario = std::string(name);
  return result;
}

}  // namespace sagebus::bench
