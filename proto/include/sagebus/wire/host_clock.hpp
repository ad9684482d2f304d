// Deadlines that cross processes on one host without growing on the way.
//
// A REQUEST carries the time left (timeout_ms), which the receiver adds to the time it
// reads the message: every hop would push the deadline later by the time the message
// spent in transit and in queues. Processes on one host share CLOCK_MONOTONIC
// (std::chrono::steady_clock on Linux), so there the sender also writes the deadline
// itself (Header.deadline_us) and the receiver uses it as it is. Whether two
// processes share the clock is told by the kernel's boot id, which HELLO and WELCOME
// carry (Hello.host, Welcome.host): the same id, the same boot, the same clock. (A
// container with its own time namespace shares the boot id but not the clock; nothing
// here supports that.)
//
// Stateless but for the boot id, read once; thread safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>

namespace sagebus::wire {

// This host's boot id (/proc/sys/kernel/random/boot_id), or "" where there is none: then
// no peer is taken to share this process's clock.
inline const std::string& host_id() {
  static const std::string id = [] {
    std::string line;
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::getline(in, line);
    return line;
  }();
  return id;
}

// True when a peer that said `peer_host` shares this process's steady clock.
inline bool same_host(const std::string& peer_host) {
  return !peer_host.empty() && peer_host == host_id();
}

// A steady-clock instant as Header.deadline_us (rounded down: never later than it).
inline std::uint64_t to_deadline_us(std::chrono::steady_clock::time_point t) {
  const auto us = std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
  return us > 0 ? static_cast<std::uint64_t>(us) : 1;
}

// The deadline a REQUEST read at `now` names: deadline_us when it has one (from a peer on
// this host), else `timeout_ms` from now.
inline std::chrono::steady_clock::time_point deadline_of(std::chrono::steady_clock::time_point now,
                                                         std::uint32_t timeout_ms,
                                                         std::uint64_t deadline_us) {
  if (deadline_us == 0) return now + std::chrono::milliseconds(timeout_ms);
  return std::chrono::steady_clock::time_point{
      std::chrono::microseconds(static_cast<std::int64_t>(deadline_us))};
}

}  // namespace sagebus::wire
