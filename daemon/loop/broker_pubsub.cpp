// The publish-subscribe half of the Broker: subscriptions, credit, and fanning a
// published message out to every matching subscription (docs/protocol.md,
// "Publish-subscribe" and "Batches"). A slow subscriber only ever costs itself: an event
// it has no credit or no queue room for is dropped for it alone and counted.
#include <spdlog/spdlog.h>

#include <utility>

#include "loop/broker.hpp"
#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/topic.hpp"

namespace sagebus::broker {

namespace {

// `text` with every byte outside printable ASCII made '?'. A batch record's topic is raw
// bytes, quoted in the error text, and a REPLY's message must be valid UTF-8: protobuf
// refuses to parse a header whose string is not (found by the fuzz harness:
// tests/fuzz/regressions/publish-batch-topic-error-not-utf8.txt).
std::string printable_ascii(std::string text) {
  for (char& c : text)
    if (c < 0x20 || c > 0x7e) c = '?';
  return text;
}

}  // namespace

void Broker::on_subscribe_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  const std::uint64_t id = in_.id();
  if (auto error = wire::check_pattern(in_.topic())) {
    answer_(from, id, wire::INVALID_ARGUMENT, *error);
    return;
  }
  outbox_.flush_events();  // batches point at subscriptions
  const auto added = subscriptions_.subscribe(from, id, in_.topic(), in_.credit(),
                                              config_.max_subscriptions_per_client);
  if (added == SubscriptionTable::Added::too_many) {
    metrics_.refused(Limit::max_subscriptions);
    answer_(from, id, wire::OVERLOADED,
            "this connection has " + std::to_string(subscriptions_.count(from)) +
                " subscriptions, the most the broker allows; unsubscribe some first");
    return;
  }
  subscriptions_.find(from, id)->reads_batches = sender.event_batches;
  spdlog::debug("'{}' {} subscription {} on '{}'", sender.name,
                added == SubscriptionTable::Added::added ? "added" : "replaced", id, in_.topic());
  answer_(from, id, wire::OK, {});
}

void Broker::on_unsubscribe_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  outbox_.flush_events();  // batches point at subscriptions
  const bool was = subscriptions_.unsubscribe(from, in_.subscription());
  answer_(from, in_.id(), wire::OK, was ? "" : "was not subscribed");
}

void Broker::on_credit_(ClientInfo& sender, Frames&) {
  // Without a subscription, the credit is for the sender's stream of that id.
  if (in_.subscription() == 0 && in_.id() != 0) return on_stream_credit_(sender);
  const RoutingId& from = sender.rid;
  // Not answered; credit for a subscription that is gone is ignored.
  if (Subscription* sub = subscriptions_.find(from, in_.subscription()))
    sub->add_credit(in_.credit());
}

void Broker::on_publish_(ClientInfo& sender, Frames& frames) {
  const RoutingId& from = sender.rid;
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
  Published payload(std::span<zmq::message_t>(frames.data() + 2, frames.size() - 2));
  const std::size_t matched = publish_(topic, payload, true);
  if (confirm) answer_(from, id, wire::OK, {}, matched);
}

void Broker::on_publish_batch_(ClientInfo& sender, Frames& frames) {
  const RoutingId& from = sender.rid;
  const std::uint64_t id = in_.id();
  auto refuse = [&](const std::string& why) {
    answer_(from, id, wire::INVALID_ARGUMENT,
            why + "; none of the batch's publishes was published");
  };
  if (frames.size() != 3) {
    refuse("a PUBLISH_BATCH carries its records in one payload frame, not " +
           std::to_string(frames.size() - 2));
    return;
  }
  // Read whole before anything is published: a batch is published entirely or not at all.
  std::size_t records = 0;
  std::string_view checked;  // the last topic found valid; records repeat it by reference
  wire::BatchReader reader(frames[2]);
  for (wire::PublishRecord record; reader.next(record);) {
    if (++records > wire::kMaxBatchRecords) {
      refuse("a PUBLISH_BATCH holds at most " + std::to_string(wire::kMaxBatchRecords) +
             " records");
      return;
    }
    if (record.topic.data() == checked.data() && record.topic.size() == checked.size()) continue;
    if (!subscriptions_.remembers(record.topic)) {
      if (auto error = wire::check_topic(record.topic)) {
        refuse("record " + std::to_string(records) +
               " of the PUBLISH_BATCH: " + printable_ascii(*error));
        return;
      }
    }
    if (auth_ && !allows_(sender, Verb::publish, record.topic)) {
      // Refused whole, as for any other problem with one of its records.
      if (sender.principal != nullptr)
        deny_(from, sender.name, *sender.principal, Verb::publish, record.topic);
      answer_(from, id, wire::PERMISSION_DENIED,
              "record " + std::to_string(records) + " of the PUBLISH_BATCH: principal '" +
                  sender.principal_name + "' may not publish '" + std::string(record.topic) +
                  "'; none of the batch's publishes was published");
      return;
    }
    checked = record.topic;
  }
  if (reader.malformed()) {
    refuse("record " + std::to_string(records + 1) +
           " of the PUBLISH_BATCH is malformed (cut short, or a varint over 10 bytes, or the "
           "first record repeats a topic)");
    return;
  }
  wire::BatchReader again(frames[2]);
  for (wire::PublishRecord record; again.next(record);) {
    ++metrics_.published;
    Published payload(record.payload);
    publish_(record.topic, payload, true);
  }
}

std::size_t Broker::publish_(std::string_view topic, Published& payload, bool consume) {
  topics_.count(topic);
  // Unchanged while this runs: a subscriber found gone is removed after the handler.
  const std::vector<Subscription*>& matched = subscriptions_.matching(topic);
  const bool batchable = payload.batchable();
  auto batched = [&](const Subscription& sub) { return batchable && sub.reads_batches; };
  // Every EVENT shares the payload's buffers; the last subscription sent anything may
  // take the frames, if it is sent an EVENT: none after it reads them (a batch copies
  // their bytes when its event is added, so it must not come after a taker).
  std::size_t last = matched.size();
  if (consume)
    for (std::size_t i = matched.size(); i-- > 0;)
      if (matched[i]->credit > 0) {
        last = i;
        break;
      }
  // The EVENT header is the same for every subscriber but for its subscription id and
  // gap: written once, completed per subscriber.
  bool header_written = false;
  for (std::size_t i = 0; i < matched.size(); ++i) {
    Subscription& sub = *matched[i];
    if (sub.credit == 0) {
      sub.missed();
      ++metrics_.events_dropped;
      continue;
    }
    if (batched(sub)) {
      outbox_.event(sub, topic, payload.bytes());
      continue;
    }
    if (!std::exchange(header_written, true)) event_header_.reset(topic);
    // would_block: the subscriber's queue (--peer-queue) is full; peer_gone: the outbox
    // has scheduled its removal. Either way this event is dropped for it alone.
    if (outbox_.send(sub.client, event_header_.frame(sub.id, sub.gap), payload.frames(),
                     i != last) == Sent::ok) {
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
