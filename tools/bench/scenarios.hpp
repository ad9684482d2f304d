// The benchmark's scenarios (docs/benchmarks.md) and their drivers, the same for every System: each run starts a
// fresh server (through the factory), measures one scenario and stops it again. The
// durable_* scenarios and restart_1m need a durable queue: their factory is asked for one
// (Setup::durable), and runs_on() says which systems have it.
//
// Not thread safe: run one scenario at a time (they start their own threads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sagebus/client.hpp"
#include "stats.hpp"
#include "system.hpp"

namespace sagebus::bench {

// How much each scenario does. Defaults are the issue's; --smoke shrinks them.
struct Counts {
  std::size_t calls = 20000;       // measured calls of reqrep_c1 / reqrep_c8 / lb_w4_c8
  std::size_t messages = 1000000;  // published messages of pubsub_*
  std::size_t idle_clients = 10000;
  std::size_t items = 20000;            // measured items of each durable_* (all producers)
  std::size_t restart_items = 1000000;  // items restart_1m puts before the restart
  // stream_*: measured streams go on until this long has passed too (0: --smoke); the
  // window of sage-bus's stream caller in bytes (CallOptions::window_bytes, the SDK's
  // default unless told).
  double stream_seconds = 1.0;
  std::uint32_t stream_window = sagebus::CallOptions{}.window_bytes;
  // The others derive from calls: pipelined 5x, reqrep_64k 1/10, reqrep_1m 1/100
  // (at least 10 each), warm-up 1/20 (at least 20; of items for durable_*); stream_* at
  // least 1/100 streams (at least 2; warm-up 1/20 of those, at least 2), cancel_latency
  // 1/20 cancellations (at least 20; warm-up 20).
};

// Chunks of each stream of stream_64 and stream_4k.
inline constexpr std::size_t kStreamChunks = 1000;

using Factory = std::function<std::unique_ptr<System>(const Setup&)>;

// Every scenario's name, in the order they run by default.
const std::vector<std::string>& scenario_names();
// The scenarios that run only when named (restart_1m).
const std::vector<std::string>& named_only_scenario_names();

// The durable_* scenarios: sage-bus's durable legacy queues against NATS JetStream.
bool is_durable(std::string_view scenario);
// The stream_* scenarios: streamed replies (chunks/s).
bool is_stream(std::string_view scenario);
// Whether `scenario` runs on `system` (sagebus, zmq or nats, secured or not): durable_*
// on sage-bus and NATS (the forwarder has no durable queue), restart_1m and
// cancel_latency on sage-bus alone (the others have no cancellation), the others
// everywhere.
bool runs_on(std::string_view scenario, std::string_view system);

// Runs scenario `name` on a fresh system from `start`. Throws std::runtime_error when the
// system cannot be set up; failures of single calls or lost messages are in the Result.
Result run_scenario(std::string_view name, const Factory& start, const Counts& counts);

}  // namespace sagebus::bench
