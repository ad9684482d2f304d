#include "loop/outbox.hpp"

#include <cerrno>
#include <utility>

#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/socket.hpp"

namespace sagebus::broker {

Outbox::Outbox(zmq::socket_t& router, bool& router_quiet, Metrics& metrics, Gone gone,
               Undelivered undelivered, Undelivered undelivered_chunks)
    : router_(router),
      router_quiet_(router_quiet),
      metrics_(metrics),
      gone_(std::move(gone)),
      undelivered_(std::move(undelivered)),
      undelivered_chunks_(std::move(undelivered_chunks)) {}

void Outbox::flush() {
  // Each pass settles what the one before could not send; placing a call again or
  // answering it adds to the next round's batches. It ends: a connection found gone is
  // never chosen again, and a full one's calls are answered, not placed again.
  for (;;) {
    flush_events();
    calls_.flush([this](CallBatch& batch) { send_calls_(batch); });
    if (failed_.empty()) return;
    std::vector<Failed> failed;
    failed.swap(failed_);
    for (const Failed& f : failed) {
      if (!f.chunks.empty() && undelivered_chunks_) undelivered_chunks_(f.to, f.chunks, f.sent);
      if (!f.calls.empty()) undelivered_(f.to, f.calls, f.sent);
    }
  }
}

void Outbox::flush_events() {
  events_.flush([this](EventBatch& batch) { send_events_(batch); });
}

void Outbox::send_events_(EventBatch& batch) {
  Sent sent;
  if (batch.size() == 1) {
    // One event goes as an EVENT, as it would have without batches.
    wire::EventRecord event;
    wire::BatchReader(batch.bytes().data(), batch.bytes().size()).next(event);
    lone_event_header_.reset(event.topic);
    zmq::message_t header = lone_event_header_.frame(event.subscription, event.dropped);
    zmq::message_t payload(event.payload.data(), event.payload.size());
    sent = write_(batch.client(), header, std::span<zmq::message_t>(&payload, 1), false);
  } else {
    zmq::message_t header = events_.header();
    zmq::message_t records = batch.frame();
    sent = write_(batch.client(), header, std::span<zmq::message_t>(&records, 1), false);
  }
  (sent == Sent::ok ? metrics_.events_delivered : metrics_.events_dropped) += batch.size();
  batch.settle(sent == Sent::ok);
}

void Outbox::send_calls_(CallBatch& batch) {
  Sent sent;
  if (batch.size() == 1) {
    sent = write_(batch.client(), batch.messages().lone_header(), batch.messages().lone_payload(),
                  false);
  } else {
    zmq::message_t header = calls_.header();
    zmq::message_t records = batch.messages().records();
    sent = write_(batch.client(), header, std::span<zmq::message_t>(&records, 1), false);
    if (sent == Sent::ok) ++metrics_.batches_sent;
  }
  for (const wire::Status status : batch.statuses())
    metrics_.count_outcome(status, sent == Sent::ok);
  if (sent != Sent::ok && (!batch.dispatches().empty() || !batch.chunks().empty()))
    failed_.push_back({batch.client(),
                       {batch.dispatches().begin(), batch.dispatches().end()},
                       {batch.chunks().begin(), batch.chunks().end()},
                       sent});
  batch.clear();
}

Sent Outbox::write_(const RoutingId& to, zmq::message_t& header, std::span<zmq::message_t> payload,
                    bool share_payload) {
  zmq::message_t id_frame(to.data(), to.size());
  const auto more = zmq::send_flags::dontwait | zmq::send_flags::sndmore;
  router_quiet_ = false;
  try {
    // With ROUTER_MANDATORY, a full or unknown peer fails on the first frame, before
    // anything is queued, so the payload is still ours when this returns would_block.
    if (!wire::send(router_, id_frame, more)) {
      metrics_.refused(Limit::peer_queue);  // the peer's queue (--peer-queue) is full
      return Sent::would_block;
    }
    (void)wire::send(router_, header, payload.empty() ? zmq::send_flags::dontwait : more);
    for (std::size_t i = 0; i < payload.size(); ++i) {
      const auto flags = i + 1 == payload.size() ? zmq::send_flags::dontwait : more;
      if (share_payload) {
        zmq::message_t shared;
        shared.copy(payload[i]);  // shares the buffer (refcounted), copies no bytes
        (void)wire::send(router_, shared, flags);
      } else {
        (void)wire::send(router_, payload[i], flags);
      }
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) throw;
    gone_(to);
    return Sent::peer_gone;
  }
  return Sent::ok;
}

}  // namespace sagebus::broker
