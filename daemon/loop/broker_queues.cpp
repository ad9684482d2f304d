// The legacy-queue half of the Broker (docs/protocol.md, "Legacy queues"). LegacyQueues
// keeps the queues and decides; this file turns its QueueEffects into messages: the
// answers owed to putters and readers, and the publish of every item appended.
#include <spdlog/spdlog.h>

#include "loop/broker.hpp"

namespace sagebus::broker {

bool Broker::check_queue_name_(const RoutingId& from) {
  if (auto error = queues_.check_name(in_.queue())) {
    answer_(from, in_.id(), wire::INVALID_ARGUMENT, *error);
    return false;
  }
  return true;
}

void Broker::on_queue_put_(ClientInfo& sender, Frames& frames) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  Frames item;
  item.reserve(frames.size() - 2);
  for (std::size_t i = 2; i < frames.size(); ++i)
    item.push_back(std::move(frames[i]));
  QueueEffects fx;
  queues_.put(from, in_.id(), in_.queue(), std::move(item), now_,
              now_ + std::chrono::milliseconds(in_.timeout_ms()), fx);
  apply_(fx);
}

void Broker::on_queue_get_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  QueueEffects fx;
  queues_.get(from, in_.id(), in_.queue(), in_.tag(), now_,
              now_ + std::chrono::milliseconds(in_.timeout_ms()), fx);
  apply_(fx);
}

void Broker::on_queue_ack_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  // Tags are broker-wide, so the queue name is not needed to find the item.
  const bool was = queues_.ack(from, in_.tag());
  answer_(from, in_.id(), wire::OK,
          was ? "" : "tag " + std::to_string(in_.tag()) + " is not held by this connection");
}

void Broker::on_queue_size_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  answer_(from, in_.id(), wire::OK, {}, queues_.size(in_.queue()));
}

void Broker::apply_(QueueEffects& fx) {
  QueueEffects current = std::move(fx);
  for (;;) {
    metrics_.queue_puts += current.puts;
    metrics_.queue_gets += current.gets;
    metrics_.queue_redeliveries += current.redeliveries;
    for (std::size_t i = 0; i < kLimitCount; ++i)
      metrics_.limit_refusals[i] += current.refused[i];
    for (auto& p : current.publishes) {
      Published payload{std::span<zmq::message_t>(p.payload)};
      publish_(p.topic, payload, true);
    }
    std::vector<std::uint64_t> undelivered;
    for (auto& a : current.answers) {
      const Sent sent = answer_(a.to, a.id, a.status, a.message, 0, a.tag, a.payload);
      if (sent != Sent::ok && a.tag != 0) undelivered.push_back(a.tag);
    }
    if (undelivered.empty()) return;
    // A reader that could not be told keeps nothing: its item goes back to the front
    // (and on to the next waiting reader, who is a different one, so this ends).
    QueueEffects next;
    for (const std::uint64_t tag : undelivered) {
      queues_.give_back(tag, next);
      if (metrics_.queue_gets > 0) --metrics_.queue_gets;
    }
    current = std::move(next);
  }
}

void Broker::run_queue_deadlines_() {
  QueueEffects fx;
  queues_.expire(now_, fx);
  if (!fx.empty()) apply_(fx);
}

}  // namespace sagebus::broker
