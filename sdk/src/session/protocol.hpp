// The protocol constants and small conversions that the session's files share
// (session.hpp). Stateless; thread safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include <zmq.hpp>

#include "sagebus/status.hpp"
#include "sagebus/wire.pb.h"

namespace sagebus::detail::protocol {

using std::chrono::milliseconds;

// A sent request other than a call, whose outcome the broker decides (a call_all's too),
// ends this long after its deadline if the broker never answers. A call ends at its
// deadline, answered or not.
inline constexpr milliseconds kLocalGrace{50};
// While connected but not welcomed, HELLO is repeated this often.
inline constexpr milliseconds kHelloRetry{1000};
// About the longest a reply or request waits for others to go with it
// (Session::gather_): a handler on the I/O thread that takes long must not hold up the
// replies of the ones before it, nor a slow callback the calls of the ones before it.
inline constexpr std::chrono::microseconds kMaxGatherWait{100};
// Until the first WELCOME says otherwise.
inline constexpr std::uint32_t kDefaultHeartbeatMs = 1000;
inline constexpr std::uint32_t kDefaultLiveness = 3;
// Stale entries of the deadline heap tolerated beyond the number of open requests.
inline constexpr std::size_t kDeadlineSlack = 1024;
// Every id this side starts has the top bit set; the broker numbers its dispatches from 1
// and never gets there. A HELLO_REQUIRED names the message it refused by id, and that
// message may be a REPLY of ours, which carries the broker's dispatch id: the bit tells
// the two apart. (Were they to share a range, a refused reply could be taken for a
// refused call, and that call sent again after it had run.)
inline constexpr std::uint64_t kOwnIdBit = std::uint64_t{1} << 63;

inline Status from_wire(wire::Status status) {
  return wire::Status_IsValid(status) ? static_cast<Status>(status) : Status::internal;
}

// Our first id: the top bit, then a random session nonce above a 32-bit counter.
inline std::uint64_t first_own_id() {
  std::random_device device;
  return kOwnIdBit | (std::uint64_t{device() & 0x7fffffffu} << 32);
}

inline std::string random_hex(std::size_t bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::random_device device;
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto byte = device() & 0xffu;
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xfu];
  }
  return out;
}

// A frame that owns `s` without copying it (large payloads), or a copy (small ones).
inline zmq::message_t adopt(std::string&& s) {
  if (s.size() <= 64) return zmq::message_t(s.data(), s.size());
  auto* owned = new std::string(std::move(s));
  return zmq::message_t(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
}

}  // namespace sagebus::detail::protocol
