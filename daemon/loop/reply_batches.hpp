// ReplyBatches: the replies due to each caller connection in one round of the broker's
// loop, coalesced into one BATCH message per connection (docs/protocol.md, "Batches"), so
// that a caller whose calls end together (a pipelined caller, the replies a service sent
// in one BATCH) pays libzmq's cost per message once for all of them.
//
// The outbox (outbox.hpp) puts a reply in its caller's batch when the connection reads them (its
// HELLO said so) and the reply is small: at most one payload frame of at most
// wire::kMaxBatchedPayload bytes. A round ends when the loop has handled what it received
// at once, or has run its timers; each batch goes then, as one BATCH, or as the
// plain REPLY it held when it holds one. A batch that would grow past wire::kMaxBatchBytes
// is sent first, and so is a batch whose connection is about to be sent anything else
// (outbox.hpp, "Order"; also before an event put in an EVENT_BATCH): the broker's
// messages to a connection leave in the order it made them.
//
// A reply's outcome (sent, or dropped because its caller is gone or not reading) is counted
// when its batch goes: every reply of a batch shares the batch's fate.
//
// A batch of one goes exactly as the REPLY would have without batches (wire::MessageBatch).
// Batch objects are reused from round to round (round_batches.hpp). Not thread safe.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "loop/round_batches.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/batch.hpp"

namespace sagebus::broker {

class ReplyBatch {
 public:
  const RoutingId& client() const noexcept { return client_; }
  std::size_t size() const noexcept { return replies_.size(); }
  bool empty() const noexcept { return replies_.empty(); }
  // The outcome of each reply, in order.
  std::span<const wire::Status> statuses() const noexcept { return statuses_; }

  // Whether a reply with this header and payload may go in a batch at all, alone.
  static bool batchable(std::size_t header, std::span<const zmq::message_t> payload) noexcept;
  // Whether it fits in this batch beside what it holds.
  bool fits(std::size_t header, std::span<const zmq::message_t> payload) const noexcept {
    return replies_.fits(header, bytes_of(payload), wire::kMaxBatchBytes);
  }
  // Adds a reply: `header` is its REPLY header, `payload` its frames (moved from).
  void add(std::string_view header, std::span<zmq::message_t> payload, wire::Status status) {
    replies_.add(header, payload.empty() ? nullptr : &payload.front());
    statuses_.push_back(status);
  }

  // What goes: a REPLY when it holds one (its frames), else a BATCH (the records).
  wire::MessageBatch& replies() noexcept { return replies_; }

  void clear() noexcept {
    replies_.clear();
    statuses_.clear();
  }

 private:
  template <class>
  friend class RoundBatches;

  static std::size_t bytes_of(std::span<const zmq::message_t> payload) noexcept {
    return payload.empty() ? 0 : payload.front().size();
  }

  RoutingId client_;
  wire::MessageBatch replies_;
  std::vector<wire::Status> statuses_;
};

// A caller's replies of one round, sent as a BATCH.
class ReplyBatches : public RoundBatches<ReplyBatch> {
 public:
  ReplyBatches() : RoundBatches(wire::BATCH) {}
};

}  // namespace sagebus::broker
