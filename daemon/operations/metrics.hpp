// Metrics: what the broker measures about itself. Counters (mirrored one to one by
// sagebus.admin.Counters, copied by admin.cpp into the status reply), refusals per limit
// (limits.hpp; the status reply's `limits`), and per service and method: calls, outcomes
// by status, a latency histogram and calls in flight.
//
// The hot path is cheap: a call finds its MethodStats once, when it is accepted, and
// keeps the pointer; its outcome is three increments and a bucket search over 16
// bounds. The method table is bounded (kMaxMethodSeries); pairs beyond it share one
// series, service and method "_other".
//
// prometheus_text() renders everything, with the tables the admin service reads, in the
// Prometheus text format (version 0.0.4) for /metrics and "$broker" method "metrics".
//
// Owned and changed by the broker's loop thread only; not thread safe.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

#include "operations/limits.hpp"
#include "sagebus/wire.pb.h"
#include "security/auth.hpp"

namespace sagebus::broker {

struct Metrics;

// Upper bounds of the latency buckets, in microseconds (100 µs .. 10 s); one more bucket
// (+Inf) takes the rest.
inline constexpr std::array<std::uint64_t, 16> kLatencyBoundsUs{
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

struct Histogram {
  std::array<std::uint64_t, kLatencyBoundsUs.size() + 1> buckets{};  // not cumulative
  std::uint64_t count = 0;
  std::uint64_t sum_us = 0;

  void observe(std::chrono::microseconds latency) noexcept;
};

// wire::Status values 0..kStatusCount-1; a larger value is counted as the last.
inline constexpr std::size_t kStatusCount = 13;

struct MethodStats {
  std::uint64_t calls = 0;      // accepted for routing
  std::uint64_t in_flight = 0;  // accepted, outcome not yet sent
  std::array<std::uint64_t, kStatusCount> outcomes{};
  Histogram latency;  // accepted -> outcome sent

  void finish(int status, std::chrono::microseconds took) noexcept;
  void forget() noexcept { in_flight -= in_flight > 0 ? 1 : 0; }  // its caller left
};

inline constexpr std::size_t kMaxMethodSeries = 1000;

class MethodTable {
 public:
  // The stats of service.method; the shared "_other" series once the table is full.
  // The pointer stays valid for the table's life (entries are never erased).
  MethodStats* find_or_add(std::string_view service, std::string_view method);
  // The stats of service.method if find_or_add() added the pair before, else nullptr
  // (never the "_other" series). One hash lookup, building no string: the broker adds
  // only pairs whose names it checked, so a REQUEST for a pair found here skips the check.
  MethodStats* find(std::string_view service, std::string_view method);
  // (service, method) -> stats, ordered for stable output.
  std::map<std::pair<std::string, std::string>, const MethodStats*> sorted() const;
  std::size_t size() const noexcept { return by_key_.size(); }

 private:
  struct KeyView {
    std::string_view service;
    std::string_view method;
  };
  struct Key {
    std::string service;
    std::string method;
    operator KeyView() const noexcept { return {service, method}; }
  };
  // Transparent, so that find() looks up the views of a header's fields.
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(KeyView key) const noexcept;
  };
  struct KeyEqual {
    using is_transparent = void;
    bool operator()(KeyView a, KeyView b) const noexcept {
      return a.service == b.service && a.method == b.method;
    }
  };

  std::unordered_map<Key, MethodStats, KeyHash, KeyEqual> by_key_;
  MethodStats other_;
};

struct Metrics {
  std::uint64_t calls = 0;             // REQUESTs accepted for routing
  std::uint64_t replies = 0;           // outcomes delivered to callers (any status)
  std::uint64_t late_replies = 0;      // replies after the caller's outcome was sent
  std::uint64_t rejected_replies = 0;  // replies from a connection not given the call
  std::uint64_t dropped_replies = 0;   // outcomes for a caller that is gone or not reading
  std::uint64_t batches = 0;           // BATCHes received (each record counts as its message)
  std::uint64_t batches_sent = 0;      // BATCHes sent (the replies of one round to a caller)
  std::uint64_t malformed = 0;         // messages that could not be decoded
  std::uint64_t invalid_argument = 0;  // messages answered INVALID_ARGUMENT
  std::uint64_t hello_required = 0;    // messages from peers that had not said HELLO
  std::uint64_t no_responders = 0;
  std::uint64_t deadline_exceeded = 0;
  std::uint64_t overloaded = 0;
  std::uint64_t unavailable = 0;
  std::uint64_t retried = 0;             // idempotent calls re-dispatched after losing an instance
  std::uint64_t leases_expired = 0;      // clients removed for silence
  std::uint64_t disconnects = 0;         // connections the socket monitor saw close
  std::uint64_t published = 0;           // publishes accepted (PUBLISH_BATCH: each record)
  std::uint64_t events_delivered = 0;    // events handed to subscribers, batched or not
  std::uint64_t events_dropped = 0;      // events a subscriber missed (no credit, queue full)
  std::uint64_t sends = 0;               // SEND messages accepted
  std::uint64_t undeliverable = 0;       // SENDs answered UNDELIVERABLE
  std::uint64_t held = 0;                // SENDs held for a peer that was not connected
  std::uint64_t queue_puts = 0;          // items appended to legacy queues
  std::uint64_t queue_gets = 0;          // items handed to readers
  std::uint64_t queue_redeliveries = 0;  // items put back: their reader left unacknowledged
  std::uint64_t names_refused = 0;       // HELLOs refused because the name was taken
  std::uint64_t takeovers = 0;           // connections replaced by a HELLO with takeover
  std::uint64_t refused_draining = 0;    // requests answered UNAVAILABLE while draining
  // Streams and cancellation (docs/protocol.md, "Streams", "Cancellation").
  std::uint64_t streams = 0;               // REQUESTs with stream accepted for routing
  std::uint64_t chunks = 0;                // CHUNKs forwarded to callers
  std::uint64_t rejected_chunks = 0;       // CHUNKs refused: no such stream, not one, no credit
  std::uint64_t late_chunks = 0;           // CHUNKs after the stream's outcome was sent
  std::uint64_t rejected_credits = 0;      // CREDITs for no stream of the sender's still open
  std::uint64_t cancelled = 0;             // calls their caller cancelled or left
  std::uint64_t rejected_cancels = 0;      // CANCELs for no call of the sender's still open
  std::uint64_t late_cancels = 0;          // CANCELs for a call whose deadline had passed
  std::uint64_t replies_after_cancel = 0;  // REPLYs and CHUNKs for a call cancelled lately
  // Scatter-gather (docs/protocol.md, "Scatter-gather").
  std::uint64_t gathers = 0;  // REQUESTs with all accepted for routing
  // What each limit refused: answered OVERLOADED or INVALID_ARGUMENT, or dropped.
  std::array<std::uint64_t, kLimitCount> limit_refusals{};
  // With auth: connections whose CURVE key the authenticator refused, and messages a
  // principal's rules refused, by principal and verb.
  std::uint64_t keys_refused = 0;
  std::map<std::string, std::array<std::uint64_t, kVerbCount>, std::less<>> denied;

  MethodTable methods;

  void refused(Limit limit) noexcept { ++limit_refusals[static_cast<std::size_t>(limit)]; }
  void deny(std::string_view principal, Verb verb) {
    auto it = denied.find(principal);
    if (it == denied.end())
      it = denied.emplace(std::string(principal), decltype(it->second){}).first;
    ++it->second[static_cast<std::size_t>(verb)];
  }
  // An outcome told to a caller (`delivered`) or dropped (it is gone, or not reading):
  // the one place an outcome's status becomes a counter.
  void count_outcome(wire::Status status, bool delivered) noexcept {
    count_status(status);
    ++(delivered ? replies : dropped_replies);
  }
  // A status answered, whether or not it counts as a call's outcome.
  void count_status(wire::Status status) noexcept {
    switch (status) {
      case wire::NO_RESPONDERS:
        ++no_responders;
        break;
      case wire::DEADLINE_EXCEEDED:
        ++deadline_exceeded;
        break;
      case wire::OVERLOADED:
        ++overloaded;
        break;
      case wire::UNAVAILABLE:
        ++unavailable;
        break;
      case wire::UNDELIVERABLE:
        ++undeliverable;
        break;
      case wire::INVALID_ARGUMENT:
        ++invalid_argument;
        break;
      default:
        break;
    }
  }
  std::uint64_t refusals(Limit limit) const noexcept {
    return limit_refusals[static_cast<std::size_t>(limit)];
  }
};

struct AdminSources;
// The Prometheus text of everything the broker measures; `draining` is reported too.
std::string prometheus_text(const AdminSources& sources, bool draining);

// The broker process's resident memory, in bytes (from /proc/self/statm); 0 if unknown.
std::uint64_t resident_bytes();

}  // namespace sagebus::broker
