// Outbox: the one way the broker writes to its connections. Every message the broker
// sends goes through it, and it alone decides what travels in a batch (docs/protocol.md,
// "Batches").
//
// A message goes one of two ways:
// - Into the connection's batch of this round: a caller's reply (reply()), a chunk of a
//   caller's stream (chunk()) or a call dispatched to an instance (dispatch()) when the
//   connection reads BATCHes and the message is small, an event (event()) when the
//   subscription reads EVENT_BATCHes. The
//   round ends when the loop has handled what it received at once, or has run its timers
//   (flush()); each batch goes then, as one message, or as the plain REPLY, REQUEST or
//   EVENT it held when it holds one. Its outcome is settled then: every reply of a batch
//   is counted delivered or dropped with it, every event settles its subscription's
//   credit and gap, and the dispatches of a batch that did not go are handed to the
//   `undelivered` callback (with what the write found), which places them again or
//   answers them, and its chunks' streams to `undelivered_chunks`, which ends them;
//   flush() sends what that made too, until nothing is left.
// - At once (send()), for a message whose handler acts on what the ROUTER says: a DELIVER
//   that cannot go stays held, a queue item a reader cannot be told of goes back to the
//   queue, held messages are released only after the WELCOME went. A reply, a chunk or a
//   dispatch too large for a batch, or for a connection that does not read them, also goes
//   this way (reply() counts it; chunk() and dispatch() return what the write did).
// The per-connection queue beyond that is libzmq's: a successful write has put the
// message in the connection's pipe (up to --peer-queue messages), and libzmq's I/O thread
// writes the pipe to the socket, many messages per system call.
//
// Order: the broker's messages to a connection leave in the order it made them. A
// connection holds at most one batch at a time; whatever it holds goes first when the
// connection is sent anything that cannot join it (a message sent at once, a message for
// the other batch, one the batch has no room for).
//
// A write that finds the connection closed (EHOSTUNREACH: libzmq no longer has the peer)
// calls the `gone` callback at once, so the broker can schedule the connection's removal.
// Owned and called by the broker's loop thread only; not thread safe.
#pragma once

#include <functional>
#include <span>
#include <string_view>
#include <utility>

#include <zmq.hpp>

#include "loop/call_batches.hpp"
#include "loop/event_batches.hpp"
#include "loop/event_header.hpp"
#include "operations/metrics.hpp"
#include "routing/pending.hpp"
#include "routing/topics.hpp"

namespace sagebus::broker {

// What a write did: put the message in the connection's pipe, found the pipe full
// (--peer-queue messages), or found the connection gone.
enum class Sent { ok, would_block, peer_gone };

class Outbox {
 public:
  using Gone = std::function<void(const RoutingId&)>;
  // Calls `calls` dispatched to `to` in a batch that did not go: its write found the pipe
  // full (would_block) or the connection gone (peer_gone).
  using Undelivered =
      std::function<void(const RoutingId& to, std::span<const CallId> calls, Sent sent)>;

  // `router` is the broker's ROUTER (ROUTER_MANDATORY set); `router_quiet` is cleared by
  // every write (a send may take in news the ROUTER's fd was to signal: wire/socket.hpp).
  // `undelivered_chunks` is called likewise with the streams whose chunks were in a batch
  // that did not go.
  Outbox(zmq::socket_t& router, bool& router_quiet, Metrics& metrics, Gone gone,
         Undelivered undelivered, Undelivered undelivered_chunks = {});

  // Sends a message to `to` now, after what it has in this round's batch. `header` is the
  // encoded header; with `share_payload` the payload frames are sent as shared copies
  // (refcounted, no bytes copied) and stay the caller's, else they are moved.
  Sent send(const RoutingId& to, zmq::message_t header, std::span<zmq::message_t> payload = {},
            bool share_payload = false);

  // A REPLY that is an outcome (`status`) for a caller: in `to`'s batch when `batches`
  // (the connection reads BATCHes) and it is small, else sent now. `header` is its
  // encoded header; the payload frames are moved. Counted delivered or dropped when it
  // goes.
  void reply(const RoutingId& to, bool batches, std::string_view header,
             std::span<zmq::message_t> payload, wire::Status status);

  // A CHUNK of call `id`'s stream for its caller at `to`: in `to`'s batch when `batches`
  // and it is small (then `ok`: a batch that does not go names `id` to
  // `undelivered_chunks`), else sent now. `header` is its encoded header; the payload
  // frames are moved.
  Sent chunk(const RoutingId& to, bool batches, std::string_view header,
             std::span<zmq::message_t> payload, CallId id);

  // The REQUEST of call `id` for an instance at `to`: in `to`'s batch when `batches` and
  // it is small (then `ok`: settled when the batch goes), else sent now. `header` is its
  // encoded header. A batch shares the payload frame (refcounted, no bytes copied), which
  // stays the caller's, to be sent again if the batch does not go; sent now, the frames
  // are moved, or shared with `keep_payload`.
  Sent dispatch(const RoutingId& to, bool batches, std::string_view header,
                std::span<zmq::message_t> payload, bool keep_payload, CallId id);

  // An event for `sub` in its connection's EVENT_BATCH of this round, spending its credit;
  // `sub` must read EVENT_BATCHes.
  void event(Subscription& sub, std::string_view topic, std::string_view payload);

  // Sends every batch of the round and starts the next round; hands the dispatches that
  // did not go to `undelivered`, and sends what it made of them the same way.
  void flush();
  // Sends every EVENT_BATCH of the round: before the subscription table changes, since
  // a batch holds its subscriptions' pointers.
  void flush_events();

 private:
  // What `to` holds in this round's batches, but batches of the kind `keep`.
  enum class Keep { nothing, events, calls };
  void send_held_(std::string_view to, Keep keep);
  void send_events_(EventBatch& batch);
  void send_calls_(CallBatch& batch);
  CallBatch& call_batch_(const RoutingId& to, std::size_t header,
                         std::span<const zmq::message_t> payload, const wire::BatchLimits& limits);
  Sent write_(const RoutingId& to, zmq::message_t& header, std::span<zmq::message_t> payload,
              bool share_payload);

  zmq::socket_t& router_;
  bool& router_quiet_;
  Metrics& metrics_;
  Gone gone_;
  Undelivered undelivered_;
  Undelivered undelivered_chunks_;
  EventBatches events_;
  CallBatches calls_;
  // Dispatches and chunks of batches that did not go, for flush() to hand to undelivered_
  // and undelivered_chunks_.
  struct Failed {
    RoutingId to;
    std::vector<CallId> calls;
    std::vector<CallId> chunks;
    Sent sent;
  };
  std::vector<Failed> failed_;
  EventHeader lone_event_header_;  // for a batch of one event, sent as an EVENT
};

// Defined here, for the broker's handlers to inline: they run once per message.

inline Sent Outbox::send(const RoutingId& to, zmq::message_t header,
                         std::span<zmq::message_t> payload, bool share_payload) {
  send_held_(to, Keep::nothing);
  return write_(to, header, payload, share_payload);
}

inline void Outbox::reply(const RoutingId& to, bool batches, std::string_view header,
                          std::span<zmq::message_t> payload, wire::Status status) {
  if (!batches || !CallBatch::batchable(header.size(), payload, wire::kCallBatchLimits)) {
    zmq::message_t frame(header.data(), header.size());
    metrics_.count_outcome(status, send(to, std::move(frame), payload) == Sent::ok);
    return;
  }
  call_batch_(to, header.size(), payload, wire::kCallBatchLimits)
      .add_reply(header, payload, status);
}

inline Sent Outbox::chunk(const RoutingId& to, bool batches, std::string_view header,
                          std::span<zmq::message_t> payload, CallId id) {
  if (!batches || !CallBatch::batchable(header.size(), payload, wire::kChunkBatchLimits)) {
    zmq::message_t frame(header.data(), header.size());
    return send(to, std::move(frame), payload);
  }
  call_batch_(to, header.size(), payload, wire::kChunkBatchLimits).add_chunk(header, payload, id);
  return Sent::ok;
}

inline Sent Outbox::dispatch(const RoutingId& to, bool batches, std::string_view header,
                             std::span<zmq::message_t> payload, bool keep_payload, CallId id) {
  if (!batches || !CallBatch::batchable(header.size(), payload, wire::kCallBatchLimits)) {
    zmq::message_t frame(header.data(), header.size());
    return send(to, std::move(frame), payload, keep_payload);
  }
  CallBatch& batch = call_batch_(to, header.size(), payload, wire::kCallBatchLimits);
  zmq::message_t shared;
  if (!payload.empty()) shared.copy(payload.front());  // shares the buffer
  batch.add_dispatch(header, std::span<zmq::message_t>(&shared, payload.empty() ? 0u : 1u), id);
  return Sent::ok;
}

// `to`'s batch of this round, with room for a message of this header and payload.
inline CallBatch& Outbox::call_batch_(const RoutingId& to, std::size_t header,
                                      std::span<const zmq::message_t> payload,
                                      const wire::BatchLimits& limits) {
  send_held_(to, Keep::calls);
  CallBatch& batch = calls_.of(to);
  if (!batch.fits(header, payload, limits)) send_calls_(batch);
  return batch;
}

inline void Outbox::event(Subscription& sub, std::string_view topic, std::string_view payload) {
  send_held_(sub.client, Keep::events);
  EventBatch& batch = events_.of(sub);
  if (!batch.fits(topic, payload.size())) send_events_(batch);
  batch.add(sub, topic, payload);
}

inline void Outbox::send_held_(std::string_view to, Keep keep) {
  // At most one of the two holds something for `to`: each is sent before the other takes
  // anything for it.
  if (keep != Keep::events)
    if (EventBatch* batch = events_.pending(to)) send_events_(*batch);
  if (keep != Keep::calls)
    if (CallBatch* batch = calls_.pending(to)) send_calls_(*batch);
}

}  // namespace sagebus::broker
