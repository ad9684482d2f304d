// Figures of one scenario run and the arithmetic on them: latency percentiles, medians
// over rounds, and the one-line report format of docs/benchmarks.md.
//
// Plain value types and pure functions; thread safe as values are.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sagebus::bench {

// reqrep: calls or durable puts/items, with latencies; pubsub: deliveries and losses;
// restart: restart_1m's recovery; stream: chunks of streamed replies (ops_per_s is
// chunks/s), with each stream's latency; cancel: cancel_latency's percentiles alone.
enum class Shape { reqrep, pubsub, restart, stream, cancel };

// A durable scenario on a system with a store of its own (sage-bus): its commits per
// second and store writes per commit over the measured run. exported false: the server
// does not export its store counters ("n/a").
struct StoreFigures {
  bool exported = false;
  double commits_per_s = 0;
  double writes_per_commit = 0;
};

struct Result {
  std::string scenario;
  std::string system;  // sagebus | zmq | nats
  Shape shape = Shape::reqrep;
  double ops_per_s = 0;
  // Request-reply: microseconds from sending a call to holding its reply.
  double p50_us = 0;
  double p99_us = 0;
  // Pub-sub: deliveries counted by the subscribers; lost = published x subscribers - delivered.
  std::uint64_t delivered = 0;
  std::uint64_t lost = 0;
  // What the server counted as dropped itself (sage-busd only): lost and this agree when
  // every loss is the broker's bounded queues doing their job.
  std::optional<std::uint64_t> server_dropped;
  // In a median over rounds: the most any round lost (lost is the median).
  std::uint64_t lost_max = 0;
  // Calls that failed or came back wrong (request-reply).
  std::uint64_t errors = 0;
  // clients_10k: the server's VmRSS before and with the idle connections.
  std::optional<std::uint64_t> rss_idle_kib;
  std::optional<std::uint64_t> rss_10k_kib;
  std::uint64_t idle_clients = 0;
  // durable_* and restart_1m on sage-bus.
  std::optional<StoreFigures> store;
  // restart_1m: `items` put (ops_per_s is their puts/s), then the broker stopped with
  // SIGTERM and started again; `recovery_s` from its exec to the first item taken,
  // `recovered` the items it held then (lost = items - recovered), its VmRSS full before
  // the stop and right after that first item.
  std::uint64_t items = 0;
  std::uint64_t recovered = 0;
  double recovery_s = 0;
  std::optional<std::uint64_t> rss_full_kib;
  std::optional<std::uint64_t> rss_recovered_kib;
  // stream: the chunks' megabytes (10^6 B) per second, and the streams measured (each
  // of `chunks_per_stream` chunks; p50_us and p99_us are per whole stream).
  double mb_per_s = 0;
  std::uint64_t streams = 0;
  std::uint64_t chunks_per_stream = 0;
  // cancel: the cancellations measured (p50_us and p99_us are their latencies).
  std::uint64_t samples = 0;
};

// The p-th percentile (0..100) of `samples`, nearest rank; 0 when empty. Reorders them.
std::int64_t percentile(std::vector<std::int64_t>& samples, double p);

// The median of each figure of `runs` (same scenario and system, one per round; the
// lower middle one for an even count). errors and lost_max are the worst round's.
Result median(const std::vector<Result>& runs);

// "scenario=<name> ops_per_s=<n> p50_us=<n> p99_us=<n>", the pub-sub, restart, stream or
// cancel form, then system=..., and the extra fields (errors, rss, store, ratio) where
// they apply.
std::string format(const Result& result, std::optional<double> ratio = std::nullopt);

}  // namespace sagebus::bench
