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

enum class Shape { reqrep, pubsub };

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
};

// The p-th percentile (0..100) of `samples`, nearest rank; 0 when empty. Reorders them.
std::int64_t percentile(std::vector<std::int64_t>& samples, double p);

// The median of each figure of `runs` (same scenario and system, one per round; the
// lower middle one for an even count). errors and lost_max are the worst round's.
Result median(const std::vector<Result>& runs);

// "scenario=<name> ops_per_s=<n> p50_us=<n> p99_us=<n>" or the pub-sub form, then
// system=..., and the extra fields (errors, rss, ratio) where they apply.
std::string format(const Result& result, std::optional<double> ratio = std::nullopt);

}  // namespace sagebus::bench
