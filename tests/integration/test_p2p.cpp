// Point-to-point between named connections through the real broker: a send says
// truthfully whether the peer took the message, a held message waits for its peer only
// as long as asked, and one live connection owns a name.
#include <chrono>
#include <functional>
#include <future>
#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

TEST_CASE("send to a peer that is not connected fails UNDELIVERABLE at once", "[p2p]") {
  Broker broker;
  Client sender(at(broker, "sender"));
  REQUIRE(sender.wait_connected(5s));

  const auto started = Clock::now();
  const auto error = error_of([&] { sender.send("node-7", "result"); });
  CHECK(error.status() == Status::undeliverable);
  CHECK(Clock::now() - started < 1s);
  CHECK(broker_status(sender).counters().undeliverable() == 1);
}

TEST_CASE(
    "send to a connected peer returns once the peer has it, receive gives it with the "
    "sender's name",
    "[p2p]") {
  Broker broker;
  Client peer(at(broker, "node-7"));
  REQUIRE(peer.wait_connected(5s));
  Client sender(at(broker, "sender"));

  sender.send("node-7", "result");

  const auto message = peer.receive(5s);
  REQUIRE(message);
  CHECK(message->payload == "result");
  CHECK(message->from == "sender");
}

TEST_CASE("a held message is delivered when its peer connects within the hold", "[p2p][hold]") {
  Broker broker;
  Client sender(at(broker, "sender"));
  REQUIRE(sender.wait_connected(5s));

  const auto started = Clock::now();
  auto sending = std::async(std::launch::async, [&] {
    sender.send("late-peer", "kept for you", {.timeout = 5s, .hold = 3s});
  });
  REQUIRE(eventually([&] { return broker_status(sender).counters().held() == 1; }, 5s));
  Client peer(at(broker, "late-peer"));

  REQUIRE(sending.wait_for(5s) == std::future_status::ready);
  CHECK_NOTHROW(sending.get());
  CHECK(Clock::now() - started < 3s);
  const auto message = peer.receive(5s);
  REQUIRE(message);
  CHECK(message->payload == "kept for you");
  CHECK(message->from == "sender");
}

TEST_CASE(
    "a held message whose peer never connects fails UNDELIVERABLE when the hold ends, "
    "not at the timeout",
    "[p2p][hold]") {
  Broker broker;
  Client sender(at(broker, "sender"));
  REQUIRE(sender.wait_connected(5s));

  const auto started = Clock::now();
  const auto error =
      error_of([&] { sender.send("never-comes", "lost?", {.timeout = 10s, .hold = 1s}); });
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);

  INFO("the send ended after " << took.count() << " ms: " << error.what());
  CHECK(error.status() == Status::undeliverable);
  CHECK_THAT(error.what(), Catch::Contains("never connected"));
  CHECK(took >= 900ms);
  CHECK(took < 3s);
}

TEST_CASE(
    "a second connection with a live connection's name is refused and told the name is "
    "taken",
    "[p2p][names]") {
  Broker broker;
  Client first(at(broker, "worker"));
  REQUIRE(first.wait_connected(5s));

  Client second(at(broker, "worker"));

  CHECK_FALSE(second.wait_connected(1500ms));
  const auto error = error_of([&] { second.call("$broker", "status", ""); });
  CHECK(error.status() == Status::unavailable);
  CHECK_THAT(error.what(), Catch::Contains("'worker' is taken"));
  CHECK(first.connected());
  CHECK(broker_status(first).counters().names_refused() >= 1);
}

TEST_CASE("a connection with takeover replaces the live one of its name", "[p2p][names]") {
  Broker broker;
  Client older(at(broker, "worker"));
  REQUIRE(older.wait_connected(5s));

  Client newer({.endpoint = broker.endpoint(), .name = "worker", .takeover = true});

  REQUIRE(newer.wait_connected(5s));
  CHECK(eventually([&] { return !older.connected(); }, 5s));
  CHECK(broker_status(newer).counters().takeovers() == 1);
  Client sender(at(broker, "sender"));
  sender.send("worker", "for the new one");
  const auto message = newer.receive(5s);
  REQUIRE(message);
  CHECK(message->payload == "for the new one");
}

TEST_CASE("a replaced connection stays out, and its calls say it was replaced", "[p2p][names]") {
  Broker broker;
  Client older(at(broker, "worker"));
  REQUIRE(older.wait_connected(5s));
  Client newer({.endpoint = broker.endpoint(), .name = "worker", .takeover = true});
  REQUIRE(newer.wait_connected(5s));
  REQUIRE(eventually([&] { return !older.connected(); }, 5s));

  // The SDK says HELLO again every second while not welcomed: give it a chance to.
  CHECK_FALSE(older.wait_connected(1500ms));
  const auto error = error_of([&] { older.call("$broker", "status", ""); });

  CHECK(error.status() == Status::unavailable);
  CHECK_THAT(error.what(), Catch::Contains("replaced by a new connection"));
}

TEST_CASE("a replaced connection does not take its name back when its replacement leaves",
          "[p2p][names]") {
  Broker broker;
  Client older(at(broker, "worker"));
  REQUIRE(older.wait_connected(5s));
  auto newer = std::make_unique<Client>(
      ClientOptions{.endpoint = broker.endpoint(), .name = "worker", .takeover = true});
  REQUIRE(newer->wait_connected(5s));
  REQUIRE(eventually([&] { return !older.connected(); }, 5s));

  newer.reset();

  // The SDK says HELLO again every second while not welcomed; give it two chances.
  CHECK_FALSE(older.wait_connected(2500ms));
}

TEST_CASE("connection_error says why a client is kept out: its name is taken", "[p2p][names]") {
  Broker broker;
  Client first({.endpoint = broker.endpoint(), .name = "twin"});
  REQUIRE(first.wait_connected(5s));
  Client second({.endpoint = broker.endpoint(), .name = "twin"});
  REQUIRE(eventually([&] { return second.connection_error().has_value(); }, 5s));
  const auto error = *second.connection_error();
  CHECK(error.status() == Status::permission_denied);
  CHECK_THAT(error.what(), Catch::Contains("'twin' is taken"));
  CHECK_FALSE(second.connected());
  CHECK_FALSE(first.connection_error().has_value());
}
