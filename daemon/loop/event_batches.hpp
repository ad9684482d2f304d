// EventBatches: the events due to each subscriber connection in one round of the broker's
// loop, coalesced into one EVENT_BATCH message per connection (docs/protocol.md,
// "Batches"), so that a subscriber sent many small events at once pays libzmq's cost per
// message once for all of them.
//
// The outbox (outbox.hpp) puts an event in its connection's batch when the connection reads batches
// (its HELLO said so) and the payload is small (wire::kMaxBatchedPayload). A round ends
// when the loop has handled what it received at once (Outbox::flush): each batch
// goes then, as one EVENT_BATCH, or as a plain EVENT when it holds one event. No event
// waits for later traffic; a batch only gathers what the messages of one round produced.
// A batch that would grow past wire::kMaxBatchBytes is sent first, and so is a batch whose
// connection is about to be sent anything else (outbox.hpp, "Order"): the broker's
// messages to a connection leave in the order it made them, and so do a subscription's
// events.
//
// A subscription's credit is spent, and its gap taken, when its event goes into a batch;
// whether the event counts as delivered or dropped is settled when the batch is sent
// (settle()). If the connection's queue is full, every event of the batch is dropped, and
// each subscription's gap and credit are as if its events had been refused one by one.
//
// Batches hold Subscription pointers: the broker flushes every batch before the
// subscription table changes. Batch objects are reused from round to round
// (round_batches.hpp); a Subscription finds its connection's batch through the pointer it
// keeps for the round, without a lookup. Not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "loop/round_batches.hpp"
#include "routing/topics.hpp"
#include "sagebus/wire/batch.hpp"

namespace sagebus::broker {

class EventBatch {
 public:
  const RoutingId& client() const noexcept { return client_; }
  std::size_t size() const noexcept { return held_.size(); }
  bool empty() const noexcept { return held_.empty(); }
  // The records, as an EVENT_BATCH carries them.
  std::string_view bytes() const noexcept { return writer_.bytes(); }
  zmq::message_t frame() const { return writer_.frame(); }

  // Whether an event on `topic` with a payload of `payload` bytes fits in.
  bool fits(std::string_view topic, std::size_t payload) const noexcept {
    return writer_.fits(topic, payload, wire::kMaxBatchBytes);
  }
  // Adds an event for `sub` (of this batch's connection), spending its credit.
  void add(Subscription& sub, std::string_view topic, std::string_view payload);
  // Counts every event as delivered (`sent`) or dropped for its subscription, and empties
  // the batch.
  void settle(bool sent) noexcept;

 private:
  template <class>
  friend class RoundBatches;

  struct Held {
    Subscription* sub;
    std::uint64_t gap;  // what its record carries
  };

  RoutingId client_;
  wire::BatchWriter writer_;
  std::vector<Held> held_;
};

class EventBatches : public RoundBatches<EventBatch> {
 public:
  EventBatches() : RoundBatches(wire::EVENT_BATCH) {}

  using RoundBatches::of;
  // The batch of `sub`'s connection in this round, started if there is none; found
  // through the pointer `sub` keeps for the round, without a lookup.
  EventBatch& of(Subscription& sub);
};

}  // namespace sagebus::broker
