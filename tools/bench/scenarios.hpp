// The benchmark's scenarios (docs/benchmarks.md) and their drivers, the same for every System: each run starts a
// fresh server (through the factory), measures one scenario and stops it again.
//
// Not thread safe: run one scenario at a time (they start their own threads).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "stats.hpp"
#include "system.hpp"

namespace sagebus::bench {

// How much each scenario does. Defaults are the issue's; --smoke shrinks them.
struct Counts {
  std::size_t calls = 20000;       // measured calls of reqrep_c1 / reqrep_c8 / lb_w4_c8
  std::size_t messages = 1000000;  // published messages of pubsub_*
  std::size_t idle_clients = 10000;
  // The others derive from calls: pipelined 5x, reqrep_64k 1/10, reqrep_1m 1/100
  // (at least 10 each), warm-up 1/20 (at least 20).
};

using Factory = std::function<std::unique_ptr<System>()>;

// Every scenario's name, in the order they run by default.
const std::vector<std::string>& scenario_names();

// Runs scenario `name` on a fresh system from `start`. Throws std::runtime_error when the
// system cannot be set up; failures of single calls or lost messages are in the Result.
Result run_scenario(std::string_view name, const Factory& start, const Counts& counts);

}  // namespace sagebus::bench
