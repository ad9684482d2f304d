// CallBatches: the messages about calls due to each connection in one round of the
// broker's loop, coalesced into one BATCH message per connection (docs/protocol.md,
// "Batches"): the outcomes due to a caller (REPLY), the chunks of its streams (CHUNK) and
// the calls dispatched to an instance (REQUEST). A caller whose calls end together (a pipelined
// caller, the replies a service sent in one BATCH) and an instance given several calls in one round
// (callers calling at once) pay libzmq's cost per message — and, with CURVE, its encryption per
// frame — once for all of them.
//
// The outbox (outbox.hpp) puts such a message in its connection's batch when the
// connection reads them (its HELLO said so) and the message is small: at most one payload
// frame of at most wire::kMaxBatchedPayload bytes (wire::kMaxBatchedChunk for a chunk). A
// round ends when the loop has handled what it received at once, or has run its timers;
// each batch goes then, as one BATCH, or as the plain message it held when it holds one. A
// batch that would grow past wire::kMaxBatchBytes with a message is sent first
// (wire::kMaxChunkBatchBytes with a chunk), and so is a batch whose connection is about to
// be sent anything else (outbox.hpp, "Order"; also before an event put in an EVENT_BATCH):
// the broker's messages to a connection leave in the order it made them.
//
// Every message of a batch shares the batch's fate, settled when it goes: a reply's
// outcome is counted delivered or dropped; a dispatch, or a stream's chunk, that did not go
// is named by its call id (dispatches(), chunks()), for the broker to place again or answer,
// or to end the stream.
//
// A batch of one goes exactly as the message would have without batches
// (wire::MessageBatch). Batch objects are reused from round to round (round_batches.hpp).
// Not thread safe.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "loop/round_batches.hpp"
#include "routing/pending.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/batch.hpp"

namespace sagebus::broker {

class CallBatch {
 public:
  const RoutingId& client() const noexcept { return client_; }
  std::size_t size() const noexcept { return messages_.size(); }
  bool empty() const noexcept { return messages_.empty(); }
  // The outcome of each reply, in order.
  std::span<const wire::Status> statuses() const noexcept { return statuses_; }
  // The call id of each dispatch, in order.
  std::span<const CallId> dispatches() const noexcept { return dispatches_; }
  // The call id of the streams it holds chunks of, in order (a call's run of chunks once).
  std::span<const CallId> chunks() const noexcept { return chunks_; }

  // Whether a message with this header and payload may go in a batch at all, alone, within
  // the limits of its kind (wire::kCallBatchLimits, or wire::kChunkBatchLimits for a CHUNK).
  static bool batchable(std::size_t header, std::span<const zmq::message_t> payload,
                        const wire::BatchLimits& limits) noexcept;
  // Whether it fits in this batch beside what it holds.
  bool fits(std::size_t header, std::span<const zmq::message_t> payload,
            const wire::BatchLimits& limits) const noexcept {
    return messages_.fits(header, bytes_of(payload), limits.bytes);
  }
  // Adds a reply: `header` is its REPLY header, `payload` its frames (moved from).
  void add_reply(std::string_view header, std::span<zmq::message_t> payload, wire::Status status) {
    add_(header, payload);
    statuses_.push_back(status);
  }
  // Adds the dispatch of call `id`: `header` is its REQUEST header, `payload` its frames
  // (moved from).
  void add_dispatch(std::string_view header, std::span<zmq::message_t> payload, CallId id) {
    add_(header, payload);
    dispatches_.push_back(id);
  }

  // Adds a chunk of call `id`'s stream: `header` is its CHUNK header, `payload` its frames
  // (moved from).
  void add_chunk(std::string_view header, std::span<zmq::message_t> payload, CallId id) {
    add_(header, payload);
    if (chunks_.empty() || chunks_.back() != id) chunks_.push_back(id);
  }

  // What goes: the message when it holds one (its frames), else a BATCH (the records).
  wire::MessageBatch& messages() noexcept { return messages_; }

  void clear() noexcept {
    messages_.clear();
    statuses_.clear();
    dispatches_.clear();
    chunks_.clear();
  }

 private:
  template <class>
  friend class RoundBatches;

  static std::size_t bytes_of(std::span<const zmq::message_t> payload) noexcept {
    return payload.empty() ? 0 : payload.front().size();
  }
  void add_(std::string_view header, std::span<zmq::message_t> payload) {
    messages_.add(header, payload.empty() ? nullptr : &payload.front());
  }

  RoutingId client_;
  wire::MessageBatch messages_;
  std::vector<wire::Status> statuses_;
  std::vector<CallId> dispatches_;
  std::vector<CallId> chunks_;
};

// A connection's replies, chunks and dispatches of one round, sent as a BATCH.
class CallBatches : public RoundBatches<CallBatch> {
 public:
  CallBatches() : RoundBatches(wire::BATCH) {}
};

}  // namespace sagebus::broker
