#include "scenarios.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <latch>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "child.hpp"

namespace sagebus::bench {

using namespace std::chrono_literals;

const std::vector<std::string>& scenario_names() {
  static const std::vector<std::string> names{
      "reqrep_c1",         "reqrep_c8",           "lb_w4_c8",          "pipelined",
      "pubsub_1to1",       "pubsub_1to4",         "reqrep_64k",        "reqrep_1m",
      "clients_10k",       "durable_put_p1_64",   "durable_put_p8_64", "durable_put_p1_4k",
      "durable_put_p8_4k", "durable_put_get_ack", "stream_64",         "stream_4k",
      "cancel_latency"};
  return names;
}

const std::vector<std::string>& named_only_scenario_names() {
  static const std::vector<std::string> names{"restart_1m"};
  return names;
}

bool is_durable(std::string_view scenario) {
  return scenario.starts_with("durable_");
}

bool is_stream(std::string_view scenario) {
  return scenario.starts_with("stream_");
}

bool runs_on(std::string_view scenario, std::string_view system) {
  const std::string_view base = system.substr(0, system.find('+'));
  if (is_durable(scenario)) return base == "sagebus" || base == "nats";
  if (scenario == "restart_1m" || scenario == "cancel_latency") return base == "sagebus";
  return true;
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

// The store's figures over the window between two readings of its counters, where the
// system has a store to ask.
std::optional<StoreFigures> store_figures(const std::optional<StoreCounters>& before,
                                          const std::optional<StoreCounters>& after,
                                          std::int64_t window_ns) {
  if (!before || !after) return std::nullopt;
  StoreFigures figures;
  figures.exported = before->exported && after->exported;
  if (!figures.exported) return figures;
  const std::uint64_t commits = after->commits - std::min(before->commits, after->commits);
  const std::uint64_t writes = after->writes - std::min(before->writes, after->writes);
  figures.commits_per_s = per_second(commits, window_ns);
  figures.writes_per_commit =
      commits ? static_cast<double>(writes) / static_cast<double>(commits) : 0;
  return figures;
}

void report_errors(const System& system, std::uint64_t errors, const std::string& first_error,
                   const char* what) {
  if (errors && !first_error.empty())
    std::fprintf(stderr, "sage-bus-bench: %s: %llu %s failed; the first: %s\n",
                 std::string(system.name()).c_str(), static_cast<unsigned long long>(errors), what,
                 first_error.c_str());
}

// A durable scenario's result: throughput and percentiles of `latencies` over
// `elapsed_ns`, the store's figures over the window, and its failures reported.
Result durable_result(const System& system, std::vector<std::int64_t>& latencies,
                      std::int64_t elapsed_ns, std::uint64_t errors, const std::string& first_error,
                      const char* what, const std::optional<StoreCounters>& before,
                      const std::optional<StoreCounters>& after, std::int64_t window_ns) {
  Result result;
  result.system = std::string(system.name());
  result.errors = errors;
  result.ops_per_s = per_second(latencies.size(), elapsed_ns);
  result.p50_us = static_cast<double>(percentile(latencies, 50)) / 1000.0;
  result.p99_us = static_cast<double>(percentile(latencies, 99)) / 1000.0;
  result.store = store_figures(before, after, window_ns);
  report_errors(system, errors, first_error, what);
  return result;
}

// `producers_count` threads, each with its own connection, put `items` items of `bytes`
// in all on the durable queue, each waiting for its put's confirmation before the next,
// after a warm-up of 1/20 of their own. The clock runs from the first producer's start to
// the last one's end; the store's counters are read once every producer is warmed up and
// again when the last is done.
Result durable_put_scenario(System& system, std::size_t producers_count, std::size_t items,
                            std::size_t bytes) {
  std::vector<std::unique_ptr<DurableProducer>> producers;
  for (std::size_t i = 0; i < producers_count; ++i)
    producers.push_back(system.durable_producer());
  const std::string payload = data_payload(bytes);
  const std::size_t n = producers.size();
  std::vector<std::vector<std::int64_t>> latencies(n);
  std::vector<std::uint64_t> errors(n, 0);
  std::mutex error_mutex;
  std::string first_error;
  std::latch warmed(static_cast<std::ptrdiff_t>(n)), go(1);
  std::vector<std::int64_t> starts(n, 0), ends(n, 0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      DurableProducer& producer = *producers[t];
      std::string error;
      auto one = [&](std::vector<std::int64_t>* record) {
        const std::int64_t t0 = now_ns();
        if (producer.put(payload, error)) {
          if (record) record->push_back(now_ns() - t0);
          return;
        }
        ++errors[t];
        std::lock_guard lock(error_mutex);
        if (first_error.empty()) first_error = error;
      };
      for (std::size_t i = 0; i < warmup_of(items) / n + 1; ++i)
        one(nullptr);
      const std::size_t mine = items / n + (t < items % n ? 1 : 0);
      latencies[t].reserve(mine);
      warmed.count_down();
      go.wait();
      starts[t] = now_ns();
      for (std::size_t i = 0; i < mine; ++i)
        one(&latencies[t]);
      ends[t] = now_ns();
    });
  }
  warmed.wait();
  const auto before = system.store_counters();
  const std::int64_t window_start = now_ns();
  go.count_down();
  for (auto& t : threads)
    t.join();
  const auto after = system.store_counters();
  const std::int64_t window = now_ns() - window_start;
  const std::int64_t elapsed =
      *std::max_element(ends.begin(), ends.end()) - *std::min_element(starts.begin(), starts.end());
  std::vector<std::int64_t> all;
  std::uint64_t failed = 0;
  for (std::size_t t = 0; t < n; ++t) {
    all.insert(all.end(), latencies[t].begin(), latencies[t].end());
    failed += errors[t];
  }
  return durable_result(system, all, elapsed, failed, first_error, "puts", before, after, window);
}

// One producer puts `items` items of 64 B, one at a time, each confirmed; one consumer,
// on a connection of its own, gets each and acknowledges it, the acknowledgement
// confirmed, before the next get. The producer stays at most kLead items ahead of the
// acknowledgements: unbounded, a producer faster than the consumer would build a backlog
// whose wait grows with `items`, and the latency would measure that. An item carries the
// time its put began: its latency runs from there to its acknowledgement's confirmation,
// the clock from the first put to the last acknowledgement. A warm-up of 1/20 goes
// through first (put all, then taken). The consumer gives up when no item came for 10 s.
Result durable_put_get_ack_scenario(System& system, std::size_t items) {
  constexpr std::uint64_t kLead = 8;
  auto producer = system.durable_producer();
  auto consumer = system.durable_consumer();
  std::string error;
  const std::string probe(64, 'p');
  const std::size_t warmup = warmup_of(items);
  for (std::size_t i = 0; i < warmup; ++i)
    if (!producer->put(probe, error)) throw std::runtime_error("a warm-up put failed: " + error);
  for (std::size_t i = 0; i < warmup; ++i) {
    if (!consumer->get(10s)) throw std::runtime_error("the warm-up items were not all got back");
    consumer->ack();
  }

  std::mutex error_mutex;
  std::string first_error;
  auto record_error = [&](const std::string& what) {
    std::lock_guard lock(error_mutex);
    if (first_error.empty()) first_error = what;
  };
  std::atomic<std::uint64_t> put_ok{0};
  std::atomic<bool> puts_done{false};
  // Items got and acknowledged, right or not, and whether the consumer stopped: the
  // producer waits on `lead` for either.
  std::atomic<std::uint64_t> got{0};
  std::atomic<bool> consumer_done{false};
  std::mutex lead_mutex;
  std::condition_variable lead;
  auto consumer_moved = [&] {
    std::lock_guard lock(lead_mutex);
    lead.notify_one();
  };
  std::uint64_t put_errors = 0, take_errors = 0;
  std::int64_t start = 0, end = 0;
  std::vector<std::int64_t> latencies;
  latencies.reserve(items);
  std::latch ready(3);
  std::thread producing([&] {
    std::string payload = data_payload(64), why;
    ready.arrive_and_wait();
    start = now_ns();
    for (std::size_t i = 0; i < items; ++i) {
      {
        std::unique_lock lock(lead_mutex);
        lead.wait(lock, [&] {
          return put_ok - std::min<std::uint64_t>(got, put_ok) < kLead || consumer_done;
        });
      }
      const std::int64_t t0 = now_ns();
      std::memcpy(payload.data() + 1, &t0, sizeof t0);
      if (producer->put(payload, why)) {
        put_ok.fetch_add(1);
      } else {
        ++put_errors;
        record_error(why);
      }
    }
    puts_done = true;
  });
  std::thread consuming([&] {
    ready.arrive_and_wait();
    auto last_progress = Clock::now();
    while (!(puts_done && got >= put_ok)) {
      if (Clock::now() - last_progress >= 10s) {
        const std::uint64_t missing = put_ok - std::min<std::uint64_t>(put_ok, got);
        take_errors += missing;
        record_error(std::to_string(missing) + " items put were not got back within 10 s");
        break;
      }
      try {
        auto item = consumer->get(1s);
        if (!item) continue;
        consumer->ack();
        const std::int64_t done = now_ns();
        last_progress = Clock::now();
        ++got;
        consumer_moved();
        std::int64_t t0 = 0;
        if (item->size() != 64 || item->front() != kDataMark) {
          ++take_errors;
          record_error("an item came back different");
          continue;
        }
        std::memcpy(&t0, item->data() + 1, sizeof t0);
        latencies.push_back(done - t0);
        end = done;
      } catch (const std::exception& e) {
        ++take_errors;
        record_error(e.what());
        std::this_thread::sleep_for(10ms);  // a broker gone: do not spin
      }
    }
    consumer_done = true;
    consumer_moved();
  });
  ready.arrive_and_wait();
  const auto before = system.store_counters();
  const std::int64_t window_start = now_ns();
  producing.join();
  consuming.join();
  const auto after = system.store_counters();
  const std::int64_t window = now_ns() - window_start;
  return durable_result(system, latencies, end - start, put_errors + take_errors, first_error,
                        "puts or gets", before, after, window);
}

// restart_1m: kFillers producers, each its own connection, put `items` items of 64 B
// (each put confirmed, so up to kFillers ride one commit); then the broker is stopped
// with SIGTERM and started again on the same store and port, and the clock runs from its
// exec to the first item a new consumer gets (the consumer's client retries its
// connection every 10 ms meanwhile). The broker's RSS is read with the queue full, and
// again right after that first item; the items it then holds are counted.
Result restart_scenario(System& system, std::size_t items) {
  constexpr std::size_t kFillers = 8;
  std::vector<std::unique_ptr<DurableProducer>> producers;
  for (std::size_t i = 0; i < kFillers; ++i)
    producers.push_back(system.durable_producer());
  const std::string payload = data_payload(64);
  std::vector<std::uint64_t> errors(kFillers, 0);
  std::mutex error_mutex;
  std::string first_error;
  const auto before = system.store_counters();
  const std::int64_t start = now_ns();
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kFillers; ++t) {
    threads.emplace_back([&, t] {
      std::string error;
      const std::size_t mine = items / kFillers + (t < items % kFillers ? 1 : 0);
      for (std::size_t i = 0; i < mine; ++i) {
        if (producers[t]->put(payload, error)) continue;
        ++errors[t];
        std::lock_guard lock(error_mutex);
        if (first_error.empty()) first_error = error;
      }
    });
  }
  for (auto& t : threads)
    t.join();
  const std::int64_t filled = now_ns();
  const auto after = system.store_counters();
  producers.clear();
  Result result;
  result.system = std::string(system.name());
  result.shape = Shape::restart;
  for (auto e : errors)
    result.errors += e;
  report_errors(system, result.errors, first_error, "puts");
  result.items = items - result.errors;
  result.ops_per_s = per_second(result.items, filled - start);
  result.store = store_figures(before, after, filled - start);
  result.rss_full_kib = rss_kib(system.server_pid());

  system.stop_server();
  const std::int64_t exec = now_ns();
  system.start_server_again();
  auto consumer = system.durable_consumer();
  if (!consumer->get(600s))
    throw std::runtime_error("no item could be got within 600 s of the broker's restart");
  result.recovery_s = static_cast<double>(now_ns() - exec) / 1e9;
  result.rss_recovered_kib = rss_kib(system.server_pid());
  result.recovered = consumer->queued() + 1;
  result.lost = result.items - std::min(result.items, result.recovered);
  return result;
}

// stream_64, stream_4k: one stream service answering each stream with kStreamChunks
// chunks of `bytes`, one caller (with `window` bytes, where the system has flow control) reading
// one stream at a time to its end, after a warm-up.
// The measured streams go on until at least `streams` ended and `min_seconds` passed; the
// clock runs from the first one's request to the last one's end. Each stream's latency
// runs from its request to its end. A stream that fails or comes back incomplete ends the
// run (a broken system would wait out each stream's timeout).
Result stream_scenario(System& system, std::size_t bytes, std::size_t streams, double min_seconds,
                       std::uint32_t window) {
  auto service = system.streamer(kStreamChunks, bytes);
  auto caller = system.stream_caller(window);
  const std::uint64_t expected_bytes = std::uint64_t{kStreamChunks} * bytes;
  StreamRun run;
  std::string error;
  auto complete = [&] {
    if (run.chunks == kStreamChunks && run.bytes == expected_bytes) return true;
    error = "a stream ended after " + std::to_string(run.chunks) + " chunks of " +
            std::to_string(kStreamChunks) + " (" + std::to_string(run.bytes) + " bytes of " +
            std::to_string(expected_bytes) + ")";
    return false;
  };
  for (std::size_t i = 0; i < std::max<std::size_t>(2, streams / 20); ++i)
    if (!caller->stream(run, error) || !complete())
      throw std::runtime_error("a warm-up stream failed: " + error);

  std::vector<std::int64_t> latencies;
  latencies.reserve(streams);
  std::uint64_t chunks = 0, total_bytes = 0, errors = 0;
  const auto min_elapsed = static_cast<std::int64_t>(min_seconds * 1e9);
  const std::int64_t start = now_ns();
  std::int64_t end = start;
  while (latencies.size() < streams || end - start < min_elapsed) {
    const std::int64_t t0 = now_ns();
    const bool ok = caller->stream(run, error) && complete();
    end = now_ns();
    if (!ok) {
      ++errors;
      break;
    }
    latencies.push_back(end - t0);
    chunks += run.chunks;
    total_bytes += run.bytes;
  }
  Result result;
  result.system = std::string(system.name());
  result.shape = Shape::stream;
  result.errors = errors;
  result.ops_per_s = per_second(chunks, end - start);
  result.mb_per_s = per_second(total_bytes, end - start) / 1e6;
  result.streams = latencies.size();
  result.chunks_per_stream = kStreamChunks;
  result.p50_us = static_cast<double>(percentile(latencies, 50)) / 1000.0;
  result.p99_us = static_cast<double>(percentile(latencies, 99)) / 1000.0;
  report_errors(system, errors, error, "streams");
  return result;
}

// cancel_latency: a service of one instance (max_inflight 1) whose handler waits to be
// cancelled; `samples` times, one call is made, cancelled once its handler runs, and the
// time from just before the cancel to the handler's cancellation callback is measured
// (System's Canceller), after a warm-up of 20. A cancellation that fails ends the run.
Result cancel_scenario(System& system, std::size_t samples) {
  auto canceller = system.canceller();
  std::int64_t latency = 0;
  std::string error;
  for (int i = 0; i < 20; ++i)
    if (!canceller->cancel_one(latency, error))
      throw std::runtime_error("a warm-up cancellation failed: " + error);
  std::vector<std::int64_t> latencies;
  latencies.reserve(samples);
  std::uint64_t errors = 0;
  for (std::size_t i = 0; i < samples; ++i) {
    if (!canceller->cancel_one(latency, error)) {
      ++errors;
      break;
    }
    latencies.push_back(latency);
  }
  Result result;
  result.system = std::string(system.name());
  result.shape = Shape::cancel;
  result.errors = errors;
  result.samples = latencies.size();
  result.p50_us = static_cast<double>(percentile(latencies, 50)) / 1000.0;
  result.p99_us = static_cast<double>(percentile(latencies, 99)) / 1000.0;
  report_errors(system, errors, error, "cancellations");
  return result;
}

}  // namespace

Result run_scenario(std::string_view name, const Factory& start, const Counts& counts) {
  auto system = start(Setup{.durable = is_durable(name) || name == "restart_1m"});
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
  } else if (name == "durable_put_p1_64") {
    result = durable_put_scenario(*system, 1, counts.items, 64);
  } else if (name == "durable_put_p8_64") {
    result = durable_put_scenario(*system, 8, counts.items, 64);
  } else if (name == "durable_put_p1_4k") {
    result = durable_put_scenario(*system, 1, counts.items, 4096);
  } else if (name == "durable_put_p8_4k") {
    result = durable_put_scenario(*system, 8, counts.items, 4096);
  } else if (name == "durable_put_get_ack") {
    result = durable_put_get_ack_scenario(*system, counts.items);
  } else if (name == "restart_1m") {
    result = restart_scenario(*system, counts.restart_items);
  } else if (name == "stream_64") {
    result = stream_scenario(*system, 64, std::max<std::size_t>(2, calls / 100),
                             counts.stream_seconds, counts.stream_window);
  } else if (name == "stream_4k") {
    result = stream_scenario(*system, 4096, std::max<std::size_t>(2, calls / 100),
                             counts.stream_seconds, counts.stream_window);
  } else if (name == "cancel_latency") {
    result = cancel_scenario(*system, std::max<std::size_t>(20, calls / 20));
  } else {
    throw std::invalid_argument("no scenario named '" + std::string(name) + "'");
  }
  result.scenario = std::string(name);
  return result;
}

}  // namespace sagebus::bench
