// Child processes of the benchmark: the servers it measures (sage-busd, nats-server and
// its own ZeroMQ forwarder), run with the shared child_process.hpp. Children must be
// started from the main thread (the death signal fires when the forking thread exits);
// install_signal_cleanup() makes SIGINT/SIGTERM to the benchmark kill every child still
// running before the benchmark exits. Not thread safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "child_process.hpp"

namespace sagebus::bench {

using child::free_port;
using child::rss_kib;
using Child = child::ChildProcess;

// A fresh directory for the servers' logs; kept, and named on stderr, when
// SAGEBUS_BENCH_KEEP_LOGS=1.
class TempDir : public child::TempDir {
 public:
  TempDir();
};

// SIGINT/SIGTERM: kill every running Child, then exit 130.
void install_signal_cleanup();

// Raises RLIMIT_NOFILE towards `wanted` (the hard limit too, when privileged).
// Returns the soft limit now in force.
std::uint64_t raise_nofile(std::uint64_t wanted);

// The path of this executable (to start it again as the ZeroMQ forwarder).
std::string self_path();

}  // namespace sagebus::bench
