// The publish-subscribe half of the Broker: subscriptions, credit, and fanning a
// published message out to every matching subscription (docs/protocol.md,
// "Publish-subscribe"). A slow subscriber only ever costs itself: an event it has no
// credit or no queue room for is dropped for it alone and counted.
#include <spdlog/spdlog.h>

#include "broker.hpp"
#include "sagebus/wire/topic.hpp"

namespace sagebus::broker {

void Broker::on_subscribe_(const RoutingId& from) {
  const std::uint64_t id = in_.id();
  if (auto error = wire::check_pattern(in_.topic())) {
    answer_(from, id, wire::INVALID_ARGUMENT, *error);
    return;
  }
  const auto added = subscriptions_.subscribe(from, id, in_.topic(), in_.credit(),
                                              config_.max_subscriptions_per_client);
  if (added == SubscriptionTable::Added::too_many) {
    metrics_.refused(Limit::max_subscriptions);
    answer_(from, id, wire::OVERLOADED,
            "this connection has " + std::to_string(subscriptions_.count(from)) +
                " subscriptions, the most the broker allows; unsubscribe some first");
    return;
  }
  spdlog::debug("'{}' {} subscription {} on '{}'", registry_.client(from)->name,
                added == SubscriptionTable::Added::added ? "added" : "replaced", id, in_.topic());
  answer_(from, id, wire::OK, {});
}

void Broker::on_unsubscribe_(const RoutingId& from) {
  const bool was = subscriptions_.unsubscribe(from, in_.subscription());
  answer_(from, in_.id(), wire::OK, was ? "" : "was not subscribed");
}

void Broker::on_credit_(const RoutingId& from) {
  // Not answered; credit for a subscription that is gone is ignored.
  if (Subscription* sub = subscriptions_.find(from, in_.subscription()))
    sub->add_credit(in_.credit());
}

void Broker::on_publish_(const RoutingId& from, Frames& frames) {
  const std::uint64_t id = in_.id();
  const bool confirm = in_.confirm();
  const std::string& topic = in_.topic();  // in_ stays put until the next message
  // A topic the table remembers was checked when it was first published.
  if (!subscriptions_.remembers(topic)) {
    if (auto error = wire::check_topic(topic)) {
      answer_(from, id, wire::INVALID_ARGUMENT, *error);  // confirm or not
      return;
    }
  }
  ++metrics_.published;
  const std::size_t matched =
      publish_(topic, std::span<zmq::message_t>(frames.data() + 2, frames.size() - 2), true);
  if (confirm) answer_(from, id, wire::OK, {}, matched);
}

std::size_t Broker::publish_(const std::string& topic, std::span<zmq::message_t> payload,
                             bool consume) {
  topics_.count(topic);
  // Unchanged while this runs: a subscriber found gone is removed after the handler.
  const std::vector<Subscription*>& matched = subscriptions_.matching(topic);
  // Every EVENT shares the payload's buffers; the last one sent may take the frames.
  std::size_t last = matched.size();
  if (consume)
    for (std::size_t i = matched.size(); i-- > 0;)
      if (matched[i]->credit > 0) {
        last = i;
        break;
      }
  // The EVENT header is the same for every subscriber but for its subscription id and
  // gap: written once, completed per subscriber.
  if (!matched.empty()) event_header_.reset(topic);
  for (std::size_t i = 0; i < matched.size(); ++i) {
    Subscription& sub = *matched[i];
    if (sub.credit == 0) {
      sub.missed();
      ++metrics_.events_dropped;
      continue;
    }
    zmq::message_t header = event_header_.frame(sub.id, sub.gap);
    // would_block: the subscriber's queue (--peer-queue) is full; peer_gone: send_ has
    // scheduled its removal. Either way this event is dropped for it alone.
    if (send_frames_(sub.client, header, payload, i != last) == Sent::ok) {
      sub.sent();
      ++metrics_.events_delivered;
    } else {
      sub.missed();
      ++metrics_.events_dropped;
    }
  }
  return matched.size();
}

}  // namespace sagebus::broker
