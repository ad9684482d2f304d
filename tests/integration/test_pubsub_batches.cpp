// Batches through the real broker (docs/protocol.md, "Batches"): the events one receive
// batch produces for a connection that reads EVENT_BATCH arrive as one message, in
// publish order, one credit each, with what was missed in `dropped`; a connection that
// does not read them gets EVENTs; a PUBLISH_BATCH the broker cannot take is refused
// whole; a batch the subscriber's queue refuses is counted dropped, event by event.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "raw_peer.hpp"
#include "sagebus/wire/batch.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

constexpr std::uint64_t kSubscription = 77;

// Subscribes `peer` to `pattern` as subscription kSubscription with `credit`.
void subscribe(RawPeer& peer, const std::string& pattern, std::uint32_t credit) {
  wire::Header h = header(wire::SUBSCRIBE);
  h.set_id(kSubscription);
  h.set_topic(pattern);
  h.set_credit(credit);
  const auto answer = peer.answer(wire::REPLY, peer.send(h));
  REQUIRE(answer);
  REQUIRE(answer->status() == wire::OK);
}

void give_credit(RawPeer& peer, std::uint32_t credit) {
  wire::Header h = header(wire::CREDIT);
  h.set_subscription(kSubscription);
  h.set_credit(credit);
  peer.send(h);
}

// A PUBLISH_BATCH of `payloads` on `topic`; returns its id.
std::uint64_t publish_batch(RawPeer& peer, const std::string& topic,
                            const std::vector<std::string>& payloads) {
  wire::BatchWriter batch;
  for (const auto& payload : payloads)
    batch.add_publish(topic, payload);
  return peer.send(header(wire::PUBLISH_BATCH), {std::string(batch.bytes())});
}

std::vector<std::string> numbered(int from, int count, std::size_t width = 0) {
  std::vector<std::string> out;
  for (int i = from; i < from + count; ++i) {
    std::string s = std::to_string(i);
    s.resize(std::max(width, s.size()), '.');
    out.push_back(std::move(s));
  }
  return out;
}

// An event as the subscriber saw it, alone or in a batch.
struct Seen {
  std::uint64_t subscription;
  std::uint64_t dropped;
  std::string topic;
  std::string payload;
};

// The events `peer` received, in order, until its HEARTBEAT came back (RawPeer::sync),
// sent once it has `expected` of them (as the answer would be dropped while its queue is
// full); `batches` counts the EVENT_BATCHes among them.
std::vector<Seen> events_until_sync(RawPeer& peer, int* batches = nullptr,
                                    std::size_t expected = 0) {
  std::optional<std::uint64_t> id;
  std::vector<Seen> seen;
  for (;;) {
    if (!id && seen.size() >= expected) id = peer.send(header(wire::HEARTBEAT));
    const auto got = peer.receive();
    REQUIRE(got);
    if (id && got->kind() == wire::HEARTBEAT && got->id() == *id) return seen;
    if (got->kind() == wire::EVENT) {
      REQUIRE(peer.payload().size() == 1);
      seen.push_back({got->subscription(), got->dropped(), got->topic(), peer.payload()[0]});
    } else if (got->kind() == wire::EVENT_BATCH) {
      REQUIRE(peer.payload().size() == 1);
      if (batches != nullptr) ++*batches;
      wire::BatchReader reader(peer.payload()[0].data(), peer.payload()[0].size());
      for (wire::EventRecord e; reader.next(e);)
        seen.push_back({e.subscription, e.dropped, std::string(e.topic), std::string(e.payload)});
      REQUIRE_FALSE(reader.malformed());
    }
  }
}

// A broker (with `args`), a raw subscriber to `pattern` as subscription kSubscription
// with `credit`, which reads batches if `reads_batches`, and a raw publisher.
struct Pair {
  Broker broker;
  Client admin{at(broker, "batch-admin")};
  RawPeer subscriber{broker.endpoint()};
  RawPeer publisher{broker.endpoint()};

  Pair(std::vector<std::string> args, bool reads_batches, const std::string& pattern,
       std::uint32_t credit)
      : broker(std::move(args)) {
    REQUIRE(subscriber.hello("batch-subscriber", reads_batches));
    subscribe(subscriber, pattern, credit);
    REQUIRE(publisher.hello("batch-publisher"));
  }

  // Publishes `payloads` on `topic` in one PUBLISH_BATCH; returns the events the
  // subscriber got, `batches` counting the EVENT_BATCHes among them.
  std::vector<Seen> publish(const std::string& topic, const std::vector<std::string>& payloads,
                            int* batches = nullptr) {
    publish_batch(publisher, topic, payloads);
    REQUIRE(publisher.sync());
    return events_until_sync(subscriber, batches);
  }
};

admin::SubscriptionInfo subscription_record(Client& admin, const std::string& client) {
  const auto topics = broker_topics(admin);
  for (const auto& s : topics.subscriptions())
    if (s.client() == client) return s;
  FAIL("the broker has no subscription of " << client);
  return {};
}

}  // namespace

TEST_CASE(
    "a subscriber that reads batches gets one message's events in one EVENT_BATCH, in "
    "publish order, one credit each, and is told what it missed",
    "[pubsub][batches]") {
  Pair pair({}, true, "orders.>", 60);
  auto& [broker, admin, subscriber, publisher] = pair;

  int batches = 0;
  const auto seen = pair.publish("orders.new", numbered(0, 100), &batches);
  CHECK(batches == 1);
  REQUIRE(seen.size() == 60);  // its credit
  for (std::size_t i = 0; i < seen.size(); ++i) {
    INFO("event " << i);
    CHECK(seen[i].subscription == kSubscription);
    CHECK(seen[i].topic == "orders.new");
    CHECK(seen[i].payload == std::to_string(i));
    CHECK(seen[i].dropped == 0);
  }
  const auto record = subscription_record(admin, "batch-subscriber");
  CHECK(record.delivered() == 60);
  CHECK(record.dropped() == 40);
  CHECK(record.credit() == 0);

  // The next events say what was missed before them.
  give_credit(subscriber, 10);
  REQUIRE(subscriber.sync());
  const auto next = pair.publish("orders.new", {"after the gap", "next"}, &batches);
  CHECK(batches == 2);
  REQUIRE(next.size() == 2);
  CHECK(next[0].payload == "after the gap");
  CHECK(next[0].dropped == 40);
  CHECK(next[1].dropped == 0);

  // One event alone goes as an EVENT.
  const auto alone = pair.publish("orders.new", {"alone"}, &batches);
  CHECK(batches == 2);
  REQUIRE(alone.size() == 1);
  CHECK(alone[0].payload == "alone");
  const auto counters = broker_status(admin).counters();
  CHECK(counters.published() == 103);
  CHECK(counters.events_delivered() == 63);
  CHECK(counters.events_dropped() == 40);
}

TEST_CASE("a subscriber whose HELLO does not read batches gets each event as an EVENT",
          "[pubsub][batches]") {
  Pair pair({}, false, "orders.>", 0);

  int batches = 0;
  const auto seen = pair.publish("orders.new", numbered(0, 5), &batches);
  CHECK(batches == 0);
  REQUIRE(seen.size() == 5);
  for (std::size_t i = 0; i < seen.size(); ++i)
    CHECK(seen[i].payload == std::to_string(i));
}

TEST_CASE("a large event travels alone, after the batched events of its subscription",
          "[pubsub][batches]") {
  Pair pair({}, true, "orders.>", 0);

  const std::string large(wire::kMaxBatchedPayload + 1, 'L');
  int batches = 0;
  const auto seen = pair.publish("orders.new", {"0", "1", large, "3", "4"}, &batches);
  CHECK(batches == 2);  // 0 and 1; then the large one alone; then 3 and 4
  REQUIRE(seen.size() == 5);
  CHECK(seen[0].payload == "0");
  CHECK(seen[1].payload == "1");
  CHECK(seen[2].payload == large);
  CHECK(seen[3].payload == "3");
  CHECK(seen[4].payload == "4");
}

TEST_CASE(
    "subscribers that read batches and subscribers that do not all get a PUBLISH's "
    "payload, in whichever order they subscribed",
    "[pubsub][batches]") {
  Pair pair({}, false, "mixed.>", 0);
  auto& [broker, admin, plain, publisher] = pair;
  RawPeer batched(broker.endpoint());
  REQUIRE(batched.hello("batch-reader", true));
  subscribe(batched, "mixed.>", 0);
  // The same two on another topic, subscribed the other way round.
  RawPeer batched_first(broker.endpoint());
  REQUIRE(batched_first.hello("batch-reader-first", true));
  subscribe(batched_first, "other.>", 0);
  RawPeer plain_second(broker.endpoint());
  REQUIRE(plain_second.hello("plain-second"));
  subscribe(plain_second, "other.>", 0);

  for (const std::string topic : {"mixed.a", "other.a"}) {
    wire::Header h = header(wire::PUBLISH);
    h.set_topic(topic);
    publisher.send(h, {"payload on " + topic});
  }
  REQUIRE(publisher.sync());
  const std::vector<std::pair<RawPeer*, std::string>> subscribers{{&plain, "mixed.a"},
                                                                  {&batched, "mixed.a"},
                                                                  {&batched_first, "other.a"},
                                                                  {&plain_second, "other.a"}};
  for (const auto& [peer, topic] : subscribers) {
    INFO("a subscriber on " << topic);
    const auto seen = events_until_sync(*peer);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].payload == "payload on " + topic);
  }
}

TEST_CASE(
    "a PUBLISH_BATCH the broker cannot take is refused whole: malformed, an invalid "
    "topic, too many records, not one frame, over max-payload it is dropped and counted",
    "[pubsub][batches][hostile]") {
  Pair pair({"--max-payload", "4096"}, true, ">", 0);
  auto& [broker, admin, subscriber, publisher] = pair;
  auto refused = [&](std::uint64_t id) {
    const auto answer = publisher.reply_to(id);
    REQUIRE(answer);
    CHECK(answer->status() == wire::INVALID_ARGUMENT);
    INFO(answer->message());
    CHECK(answer->message().find("none of the batch's publishes was published") !=
          std::string::npos);
  };

  wire::BatchWriter good;
  good.add_publish("a.b", "fine");
  const std::string cut_short = std::string(good.bytes()) + "\x03" + "a.b" + "\x09" + "short";
  refused(publisher.send(header(wire::PUBLISH_BATCH), {cut_short}));

  wire::BatchWriter invalid_topic;
  invalid_topic.add_publish("a.b", "fine");
  invalid_topic.add_publish("a..b", "not a topic");
  refused(publisher.send(header(wire::PUBLISH_BATCH), {std::string(invalid_topic.bytes())}));

  wire::BatchWriter too_many;
  for (std::size_t i = 0; i <= wire::kMaxBatchRecords; ++i)
    too_many.add_publish("a.b", "");
  refused(publisher.send(header(wire::PUBLISH_BATCH), {std::string(too_many.bytes())}));

  refused(publisher.send(header(wire::PUBLISH_BATCH),
                         {std::string(good.bytes()), std::string(good.bytes())}));
  refused(publisher.send(header(wire::PUBLISH_BATCH)));

  wire::BatchWriter over;
  for (int i = 0; i < 5; ++i)
    over.add_publish("a.b", std::string(1000, 'x'));
  publisher.send(header(wire::PUBLISH_BATCH), {std::string(over.bytes())});
  int answers = 0;
  REQUIRE(publisher.sync(&answers));
  CHECK(answers == 0);  // unconfirmed publishes are not answered

  CHECK(events_until_sync(subscriber).empty());
  const auto after = broker_status(admin);
  CHECK(after.counters().published() == 0);
  std::uint64_t payload_refusals = 0;
  for (const auto& limit : after.limits())
    if (limit.name() == "max-payload") payload_refusals = limit.refusals();
  CHECK(payload_refusals == 1);
  CHECK(after.counters().invalid_argument() == 5);
}

TEST_CASE(
    "batches the subscriber's full queue refuses count each event dropped, and the next "
    "event it gets says how many it missed",
    "[pubsub][batches][slow]") {
  // A long lease: the subscriber says nothing while the publisher floods it.
  Pair pair({"--peer-queue", "10", "--heartbeat-ms", "10000"}, true, "flood.>", 1'000'000);
  auto& [broker, admin, subscriber, publisher] = pair;

  // 48 MiB of events in batches of 8 KiB, far more than a queue of 10 messages and the
  // subscriber's socket buffers hold while it does not read.
  constexpr int kBatches = 6000;
  constexpr int kPerBatch = 8;
  constexpr int kPublished = kBatches * kPerBatch;
  for (int b = 0; b < kBatches; ++b)
    publish_batch(publisher, "flood.x", numbered(b * kPerBatch, kPerBatch, 1000));
  REQUIRE(publisher.sync());

  // The last batch counts as delivered or dropped once sent, at the end of the broker's
  // receive round, which may still run when the publisher hears its HEARTBEAT answered.
  admin::SubscriptionInfo record;
  CHECK(eventually(
      [&] {
        record = subscription_record(admin, "batch-subscriber");
        return record.delivered() + record.dropped() == kPublished;
      },
      10s));
  REQUIRE(record.dropped() > 0);
  CHECK(broker_status(admin).counters().events_dropped() == record.dropped());

  const auto seen = events_until_sync(subscriber, nullptr, record.delivered());
  CHECK(seen.size() == record.delivered());
  // In publish order, and every gap told: each event's number is the one before it, plus
  // one, plus what it says was missed in between.
  std::uint64_t expected = 0;
  std::uint64_t told = 0;
  int out_of_order = 0;
  for (const auto& event : seen) {
    expected += event.dropped;
    told += event.dropped;
    if (std::stoull(event.payload) != expected) ++out_of_order;
    ++expected;
  }
  CHECK(out_of_order == 0);

  // The subscriber reads now: one more event says what it missed since the last it got.
  publish_batch(publisher, "flood.x", {std::to_string(kPublished)});
  REQUIRE(publisher.sync());
  const auto last = events_until_sync(subscriber);
  REQUIRE(last.size() == 1);
  CHECK(told + last[0].dropped == record.dropped());
  CHECK(std::stoull(last[0].payload) == kPublished);
}
