// The busctl commands. Each one connects to sage-busd, makes one call, writes what it
// got to `out` (a table, raw bytes, or JSON) and returns.
//
// Failures are thrown as sagebus::Error, whose what() is the "STATUS_NAME: message" line
// busctl prints. No command outlives `timeout` by more than the SDK's small margin: the
// timeout covers reaching the broker and the reply together, and a broker that is not
// reachable within it is reported UNAVAILABLE.
#pragma once

#include <chrono>
#include <ostream>
#include <string>

namespace busctl {

struct Options {
  std::string endpoint = "tcp://127.0.0.1:5555";
  bool json = false;
  std::chrono::milliseconds timeout{5000};
};

// `$broker`.status: the broker's version, uptime, endpoints, sizes and counters.
void status(const Options& options, std::ostream& out);

// `$broker`.services: every service and its instances.
void services(const Options& options, std::ostream& out);

// SERVICE.METHOD with `payload`. Writes the reply payload as is, plus a '\n' unless it
// already ends with one; with options.json, one JSON object (see render.hpp).
void call(const Options& options, const std::string& service, const std::string& method,
          const std::string& payload, std::ostream& out);

}  // namespace busctl
