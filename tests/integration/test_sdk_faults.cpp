// The SDK under the faults the chaos test provokes (tests/chaos/), one at a time, where
// the real broker cannot be made to show them on demand: a fake broker (a ROUTER socket
// the test drives) chooses exactly which messages the broker "forgot".
// (A handler outliving a broker restart is tested in test_liveness.cpp.)
#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "fake_broker.hpp"
#include "harness.hpp"
#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

Status outcome_status(std::future<Reply>& f) {
  return status_of([&] { f.get(); });
}

}  // namespace

TEST_CASE(
    "a BATCH ends each call it answers with its own status and payload and skips a "
    "BATCH inside it",
    "[sdk][batches]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  const std::string rid = broker.welcome();
  std::vector<std::future<Reply>> calls;
  std::vector<std::uint64_t> ids;
  for (const char* payload : {"one", "two", "three"}) {
    calls.push_back(client.call_async("svc", "m", payload, {.timeout = 5s}));
    const auto request = broker.expect(wire::REQUEST);
    REQUIRE(request);
    ids.push_back(request->header.id());
  }
  const auto record = [](std::uint64_t id, wire::Kind kind, wire::Status status) {
    wire::Header h;
    h.set_kind(kind);
    h.set_id(id);
    h.set_status(status);
    return wire::encode(h).to_string();
  };
  wire::BatchWriter batch;
  batch.add_message(record(ids[2], wire::REPLY, wire::OK), "THREE");
  batch.add_message(record(ids[1], wire::BATCH, wire::OK), "not read: batches do not nest");
  batch.add_message(record(ids[0], wire::REPLY, wire::OVERLOADED), "");
  batch.add_message(record(ids[1], wire::REPLY, wire::OK), "TWO");
  wire::Header h;
  h.set_kind(wire::BATCH);
  broker.send(rid, h, std::string(batch.bytes()));

  CHECK(outcome_status(calls[0]) == Status::overloaded);
  CHECK(calls[1].get().payload == "TWO");
  CHECK(calls[2].get().payload == "THREE");
}

TEST_CASE("a slow handler on the I/O thread does not hold back the replies before it",
          "[sdk][batches]") {
  FakeBroker broker;
  broker.offer_batches = true;
  Client client(at(broker.endpoint(), "client"));
  Service service(client, "svc", {.on_io_thread = true});
  // The first handler is slow; the second waits until the test has seen the first reply,
  // which must therefore leave before it runs, not in a batch with its reply.
  std::promise<void> first_reply_seen;
  std::shared_future<void> seen = first_reply_seen.get_future().share();
  std::atomic<bool> waited_in_vain{false};
  service.handle("m", [&](const Request& r) {
    if (r.payload == "1") std::this_thread::sleep_for(20ms);  // slower than a batch waits
    if (r.payload == "2" && seen.wait_for(3s) != std::future_status::ready) waited_in_vain = true;
    return std::string(r.payload);
  });
  service.start();
  const std::string rid = broker.welcome();
  auto reg = broker.expect(wire::REGISTER);
  REQUIRE(reg);
  broker.reply(rid, reg->header.id(), wire::OK);

  // Both at once: the I/O thread reads the second in the turn of the first, as it is there
  // when the first handler ends.
  for (std::uint64_t id = 1; id <= 2; ++id) {
    wire::Header dispatch;
    dispatch.set_kind(wire::REQUEST);
    dispatch.set_id(id);
    dispatch.set_service("svc");
    dispatch.set_method("m");
    dispatch.set_timeout_ms(10000);
    broker.send(rid, dispatch, std::to_string(id));
  }
  const auto first = broker.expect(wire::REPLY, 5s);  // a BATCH of both would be skipped
  REQUIRE(first);
  CHECK(first->header.id() == 1);
  first_reply_seen.set_value();
  const auto second = broker.expect(wire::REPLY, 5s);
  REQUIRE(second);
  CHECK(second->header.id() == 2);
  CHECK_FALSE(waited_in_vain);
}

TEST_CASE(
    "calls the broker refused with HELLO_REQUIRED are sent again after WELCOME, and the "
    "ones it had accepted end UNAVAILABLE",
    "[sdk][hello]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  const std::string rid = broker.welcome();

  auto first = client.call_async("svc", "m", "first", {.timeout = 5s});
  auto accepted = broker.expect(wire::REQUEST);
  REQUIRE(accepted);
  auto second = client.call_async("svc", "m", "second", {.timeout = 5s});
  auto refused = broker.expect(wire::REQUEST);
  REQUIRE(refused);
  auto third = client.call_async("svc", "m", "third", {.timeout = 5s});
  REQUIRE(broker.expect(wire::REQUEST));
  // The broker forgot the connection between "first" and "second". Its HELLO_REQUIRED
  // for "third" was dropped by its rate limit.
  broker.hello_required(rid, refused->header.id());

  CHECK(outcome_status(first) == Status::unavailable);
  const std::string again = broker.welcome();
  std::map<std::string, int> resent;
  for (int i = 0; i < 2; ++i) {
    auto r = broker.expect(wire::REQUEST, 2s);
    REQUIRE(r);
    ++resent[r->payload];
    broker.reply(again, r->header.id(), wire::OK, r->payload);
  }
  CHECK(resent == std::map<std::string, int>{{"second", 1}, {"third", 1}});
  CHECK(second.get().payload == "second");
  CHECK(third.get().payload == "third");
}

TEST_CASE(
    "when the broker forgot a connection that also serves, its calls in flight end "
    "UNAVAILABLE at once and are not sent again",
    "[sdk][hello]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  Service service(client, "svc");
  service.handle("m", [](const Request&) { return std::string("done"); });
  service.start();
  const std::string rid = broker.welcome();
  auto reg = broker.expect(wire::REGISTER);
  REQUIRE(reg);
  broker.reply(rid, reg->header.id(), wire::OK);

  auto call = client.call_async("other", "m", "once", {.timeout = 5s});
  auto request = broker.expect(wire::REQUEST);
  REQUIRE(request);
  REQUIRE(request->payload == "once");
  // The broker's first dispatch to this instance: id 1 of the broker's own numbering.
  wire::Header dispatch;
  dispatch.set_kind(wire::REQUEST);
  dispatch.set_id(1);
  dispatch.set_service("svc");
  dispatch.set_method("m");
  dispatch.set_timeout_ms(5000);
  broker.send(rid, dispatch, "");
  auto reply = broker.expect(wire::REPLY);
  REQUIRE(reply);
  // The broker has forgotten the connection meanwhile: the instance's reply is refused.
  broker.hello_required(rid, reply->header.id());

  const auto asked = std::chrono::steady_clock::now();
  CHECK(call.wait_for(1s) == std::future_status::ready);
  CHECK(outcome_status(call) == Status::unavailable);
  CHECK(std::chrono::steady_clock::now() - asked < 1s);
  const std::string again = broker.welcome();
  auto reregistered = broker.expect(wire::REGISTER);
  REQUIRE(reregistered);
  broker.reply(again, reregistered->header.id(), wire::OK);
  CHECK_FALSE(broker.expect(wire::REQUEST, 500ms));  // "once" may have run: never again
  service.stop();
}

namespace {

// The heartbeats a client with nothing to do sends in a row, offered no idle heartbeat:
// true for each that wanted an answer.
std::vector<bool> heartbeats_asking(std::uint32_t heartbeat_ms, std::uint32_t liveness, int count) {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  broker.welcome("fake-session", heartbeat_ms, liveness);
  std::vector<bool> asked;
  for (int i = 0; i < count; ++i) {
    auto beat = broker.expect(wire::HEARTBEAT, 2s);
    REQUIRE(beat);
    asked.push_back(!beat->header.no_answer());
  }
  CHECK(broker.hellos() == 1);  // the link held: the client never said HELLO again
  return asked;
}

}  // namespace

TEST_CASE(
    "a client with nothing to do at liveness 3 wants every other heartbeat answered, and its "
    "link holds",
    "[sdk][liveness]") {
  const auto asked = heartbeats_asking(200, 3, 8);
  // It asks after a heartbeat that heard nothing back, and only then: alternating, unless
  // an answer came later than a heartbeat.
  CHECK(std::count(asked.begin(), asked.end(), true) >= 2);
  CHECK(std::count(asked.begin(), asked.end(), false) >= 2);
}

TEST_CASE("a client with nothing to do at liveness 2 wants every heartbeat answered",
          "[sdk][liveness]") {
  const auto asked = heartbeats_asking(250, 2, 4);
  CHECK(std::count(asked.begin(), asked.end(), true) == 4);
}

namespace {

using Clock = std::chrono::steady_clock;

// A HEARTBEAT and when the fake broker read it.
struct Beat {
  wire::Header header;
  Clock::time_point at;
};

Beat next_beat(FakeBroker& broker, std::chrono::milliseconds within = 2s) {
  auto beat = broker.expect(wire::HEARTBEAT, within);
  REQUIRE(beat);
  return {beat->header, Clock::now()};
}

// Reads heartbeats until one says `idle` or not, as asked; false when none did within
// `within`.
bool beat_saying(FakeBroker& broker, bool idle, std::chrono::milliseconds within = 3s) {
  const auto until = Clock::now() + within;
  while (Clock::now() < until)
    if (auto beat = broker.expect(wire::HEARTBEAT, 100ms); beat && beat->header.idle() == idle)
      return true;
  return false;
}

}  // namespace

TEST_CASE(
    "offered an idle heartbeat, a client with nothing at stake keeps it and says so, a call "
    "takes it back to the short heartbeat until the call ends",
    "[sdk][liveness]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  const std::string rid = broker.welcome("fake-session", 150, 4, 1500);
  const Beat first = next_beat(broker);
  CHECK(first.header.idle());
  const Beat second = next_beat(broker, 3s);
  CHECK(second.header.idle());
  CHECK(second.at - first.at >= 1000ms);  // 1.5 s, less what delayed the first one's arrival

  auto call = client.call_async("svc", "m", "x", {.timeout = 5s});
  auto request = broker.expect(wire::REQUEST);
  REQUIRE(request);
  const auto asked = Clock::now();
  const Beat busy = next_beat(broker);
  CHECK_FALSE(busy.header.idle());
  CHECK(busy.at - asked < 700ms);  // the short interval, not what was left of the idle one
  CHECK_FALSE(next_beat(broker).header.idle());
  broker.reply(rid, request->header.id(), wire::OK, "x");
  CHECK(call.get().payload == "x");
  // Heartbeats sent before the reply was read do not; the next ones say idle.
  CHECK(beat_saying(broker, true));
  CHECK(broker.hellos() == 1);  // the link held throughout
}

TEST_CASE("a client that serves, subscribes or takes point-to-point messages never says idle",
          "[sdk][liveness]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  const auto never_idle = [&] {
    for (int i = 0; i < 5; ++i)
      CHECK_FALSE(next_beat(broker).header.idle());
  };
  SECTION("a service") {
    Service service(client, "svc");
    service.handle("m", [](const Request&) { return std::string(); });
    service.start();
    const std::string rid = broker.welcome("fake-session", 150, 4, 450);
    auto reg = broker.expect(wire::REGISTER);
    REQUIRE(reg);
    broker.reply(rid, reg->header.id(), wire::OK);
    REQUIRE(service.wait_registered(5s));
    never_idle();
  }
  SECTION("a subscription") {
    auto subscription = client.subscribe("news.>", [](const Message&) {});
    broker.welcome("fake-session", 150, 4, 450);
    REQUIRE(broker.expect(wire::SUBSCRIBE));
    never_idle();
  }
  SECTION("point-to-point messages") {
    broker.welcome("fake-session", 150, 4, 2000);
    REQUIRE(next_beat(broker).header.idle());
    // The first receive() sends a heartbeat at once, not at the next idle one (2 s on).
    const auto asked = Clock::now();
    CHECK_FALSE(client.receive(1ms));
    const Beat beat = next_beat(broker);
    CHECK_FALSE(beat.header.idle());
    CHECK(beat.at - asked < 1000ms);
    never_idle();
  }
  SECTION("legacy-queue items") {
    const std::string rid = broker.welcome("fake-session", 150, 4, 450);
    LegacyQueue jobs(client, "jobs");
    auto got = std::async(std::launch::async, [&] { return jobs.get(5s); });
    auto get = broker.expect(wire::QUEUE_GET);
    REQUIRE(get);
    wire::Header item;
    item.set_kind(wire::REPLY);
    item.set_id(get->header.id());
    item.set_tag(7);  // held by this reader until it acknowledges it
    broker.send(rid, item, "job-1");
    REQUIRE(got.get() == "job-1");
    never_idle();
    auto acked = std::async(std::launch::async, [&] { jobs.ack(); });
    auto ack = broker.expect(wire::QUEUE_ACK);
    REQUIRE(ack);
    broker.reply(rid, ack->header.id(), wire::OK);
    acked.get();
  }
}

TEST_CASE("an idle client gives a silent broker the idle lease, not the short one",
          "[sdk][liveness]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  broker.welcome("fake-session", 150, 4, 400);  // leases of 600 ms and, idle, 1.6 s
  // The WELCOME is the last the client hears: its first heartbeat, idle, asks nothing,
  // and from the second on the broker reads and answers nothing.
  const auto welcomed = Clock::now();
  REQUIRE(next_beat(broker).header.idle());
  REQUIRE(eventually([&] { return !client.connected(); }, 5s));
  const auto gave_up = Clock::now() - welcomed;
  WARN("an idle client gave up on a silent broker "
       << std::chrono::duration_cast<std::chrono::milliseconds>(gave_up).count()
       << " ms after its last word (idle lease 1600 ms)");
  CHECK(gave_up >= 1550ms);  // the idle lease, less what passed between WELCOME and here
  CHECK(gave_up <= 1600ms + 1000ms);
}

TEST_CASE(
    "a client that leaves idle counts a silent broker's silence from then, against the short "
    "lease",
    "[sdk][liveness]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  broker.welcome("fake-session", 150, 4, 1000);  // leases of 600 ms and, idle, 4 s
  REQUIRE(next_beat(broker).header.idle());
  // The broker reads and answers nothing from here; the client waits idle meanwhile.
  std::this_thread::sleep_for(
      800ms);  // the time the broker stays silent, not a wait for an outcome
  REQUIRE(client.connected());
  const auto called = Clock::now();
  auto call = client.call_async("svc", "m", "x", {.timeout = 5s});
  REQUIRE(call.wait_for(5s) == std::future_status::ready);
  const auto took = Clock::now() - called;
  CHECK(outcome_status(call) == Status::unavailable);
  WARN("the call ended UNAVAILABLE "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
       << " ms after it was made (short lease 600 ms)");
  CHECK(took >= 600ms);  // not at once, though the broker's last word was 800 ms before
  CHECK(took <= 600ms + 1000ms);
}
