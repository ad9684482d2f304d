// ReplyBatches: the replies due to each caller connection in one round of the broker's
// loop, coalesced into one BATCH message per connection (docs/protocol.md, "Batches"), so
// that a caller whose calls end together (a pipelined caller, the replies a service sent
// in one BATCH) pays libzmq's cost per message once for all of them.
//
// The broker puts a reply in its caller's batch when the connection reads them (its HELLO
// said so) and the reply is small: at most one payload frame of at most
// wire::kMaxBatchedPayload bytes. A round ends when the loop has handled what it received
// at once, or has run its timers; each batch goes then, as one BATCH, or as the
// plain REPLY it held when it holds one. A batch that would grow past wire::kMaxBatchBytes
// is sent first, and so is a batch whose connection is about to be sent anything else
// (Broker::send_frames_, and an event put in an EVENT_BATCH): the broker's messages to a
// connection leave in the order it made them.
//
// A reply's outcome (sent, or dropped because its caller is gone or not reading) is counted
// when its batch goes: every reply of a batch shares the batch's fate.
//
// The first reply of a batch is kept as its frames (moved, not copied), so that a batch of
// one goes exactly as the REPLY would have without batches; only a second reply makes it a
// BATCH, written as records. Batch objects are reused from round to round (their
// storage too, up to kKeptBatches of them). Not thread safe.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "registry.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/batch.hpp"

namespace sagebus::broker {

class ReplyBatch {
 public:
  const RoutingId& client() const noexcept { return client_; }
  std::size_t size() const noexcept { return statuses_.size(); }
  bool empty() const noexcept { return statuses_.empty(); }
  // The outcome of each reply, in order.
  std::span<const wire::Status> statuses() const noexcept { return statuses_; }

  // Whether a reply with this header and payload may go in a batch at all, alone.
  static bool batchable(std::size_t header, std::span<const zmq::message_t> payload) noexcept;
  // Whether it fits in this batch beside what it holds.
  bool fits(std::size_t header, std::span<const zmq::message_t> payload) const noexcept;
  // Adds a reply: `header` is its REPLY header, `payload` its frames (moved from).
  void add(std::string_view header, std::span<zmq::message_t> payload, wire::Status status);

  // A batch of one: its REPLY's frames.
  zmq::message_t& lone_header() noexcept { return first_header_; }
  std::span<zmq::message_t> lone_payload() noexcept {
    return {&first_payload_, first_has_payload_ ? 1u : 0u};
  }
  // A batch of more: the records frame of its BATCH.
  zmq::message_t records() const { return writer_.frame(); }

  void clear() noexcept;

 private:
  friend class ReplyBatches;

  static std::size_t bytes_of(std::size_t header, std::span<const zmq::message_t> payload) noexcept;
  static std::string_view view(const zmq::message_t& frame) noexcept {
    return {static_cast<const char*>(frame.data()), frame.size()};
  }

  RoutingId client_;
  zmq::message_t first_header_;
  zmq::message_t first_payload_;
  bool first_has_payload_ = false;
  std::size_t bytes_ = 0;  // the records' bytes, the first's counted as a record too
  wire::BatchWriter writer_;
  std::vector<wire::Status> statuses_;
};

class ReplyBatches {
 public:
  ReplyBatches();

  // The batch of connection `client` in this round, started if there is none.
  ReplyBatch& of(const RoutingId& client);
  // The batch of connection `client` in this round, if it holds replies.
  ReplyBatch* pending(std::string_view client) const {
    if (used_ == 0) return nullptr;  // the common case of a round without batched replies
    const auto it = by_client_.find(client);
    return it != by_client_.end() && !it->second->empty() ? it->second : nullptr;
  }
  // Calls send(batch) for every batch of this round that holds replies, in the order they
  // were started, then starts the next round. `send` must clear() the batch.
  template <class Send>
  void flush(Send&& send) {
    for (std::size_t i = 0; i < used_; ++i)
      if (!batches_[i]->empty()) send(*batches_[i]);
    next_round_();
  }
  // The header frame of a BATCH.
  zmq::message_t header() const { return zmq::message_t(header_.data(), header_.size()); }

  static constexpr std::size_t kKeptBatches = 64;

 private:
  void next_round_();

  std::string header_;
  std::vector<std::unique_ptr<ReplyBatch>> batches_;  // the first used_ are this round's
  std::size_t used_ = 0;
  // This round's batches by connection; the keys view ReplyBatch::client_.
  std::unordered_map<std::string_view, ReplyBatch*> by_client_;
};

}  // namespace sagebus::broker
