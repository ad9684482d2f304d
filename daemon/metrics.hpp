// Metrics: the counters the broker keeps about itself, mirrored one to one by
// sagebus.admin.Counters (admin.cpp copies them into the status reply). A plain struct
// owned and incremented by the broker's loop thread only; not thread safe.
#pragma once

#include <cstdint>

namespace sagebus::broker {

struct Metrics {
  std::uint64_t calls = 0;             // REQUESTs accepted for routing
  std::uint64_t replies = 0;           // outcomes delivered to callers (any status)
  std::uint64_t late_replies = 0;      // replies after the caller's outcome was sent
  std::uint64_t rejected_replies = 0;  // replies from a connection not given the call
  std::uint64_t dropped_replies = 0;   // outcomes for a caller that is gone or not reading
  std::uint64_t malformed = 0;         // messages that could not be decoded
  std::uint64_t hello_required = 0;    // messages from peers that had not said HELLO
  std::uint64_t no_responders = 0;
  std::uint64_t deadline_exceeded = 0;
  std::uint64_t overloaded = 0;
  std::uint64_t unavailable = 0;
  std::uint64_t retried = 0;             // idempotent calls re-dispatched after losing an instance
  std::uint64_t leases_expired = 0;      // clients removed for silence
  std::uint64_t disconnects = 0;         // connections the socket monitor saw close
  std::uint64_t published = 0;           // PUBLISH messages accepted
  std::uint64_t events_delivered = 0;    // EVENTs handed to subscribers
  std::uint64_t events_dropped = 0;      // EVENTs a subscriber missed (no credit, queue full)
  std::uint64_t sends = 0;               // SEND messages accepted
  std::uint64_t undeliverable = 0;       // SENDs answered UNDELIVERABLE
  std::uint64_t held = 0;                // SENDs held for a peer that was not connected
  std::uint64_t queue_puts = 0;          // items appended to legacy queues
  std::uint64_t queue_gets = 0;          // items handed to readers
  std::uint64_t queue_redeliveries = 0;  // items put back: their reader left unacknowledged
  std::uint64_t names_refused = 0;       // HELLOs refused because the name was taken
  std::uint64_t takeovers = 0;           // connections replaced by a HELLO with takeover
  std::uint64_t clients_refused = 0;     // HELLOs refused by the max-clients limit
};

}  // namespace sagebus::broker
