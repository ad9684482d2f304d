// Hostile input: a raw ZeroMQ DEALER sends the real sage-busd what no SDK would (garbage
// headers, wrong versions, unknown kinds, oversized frames, replies it was not asked for,
// invalid names) while an SDK client calls an echo service the whole time. Each bad
// message is answered INVALID_ARGUMENT where an answer is possible and dropped otherwise,
// always counted; the broker stays up and the legitimate calls all succeed.
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include "harness.hpp"
#include "raw_peer.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/frame.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

constexpr std::size_t kMaxPayload = 64 * 1024;
constexpr std::size_t kMaxHeader = 4096;
// ZMQ_MAXMSGSIZE of the broker: twice the larger of the two.
constexpr std::size_t kFrameLimit = 2 * kMaxPayload;

wire::Header request(const std::string& service, const std::string& method) {
  wire::Header h = header(wire::REQUEST);
  h.set_service(service);
  h.set_method(method);
  h.set_timeout_ms(5000);
  return h;
}

// The broker, an echo service, and a caller that calls it without pause on its own thread
// until stopped, checking every reply.
struct Bus {
  Broker broker{{"--max-payload", std::to_string(kMaxPayload), "--max-header",
                 std::to_string(kMaxHeader), "--liveness", "30"}};
  Client service_client{at(broker, "hostile-echo")};
  Service echo{service_client, "echo"};
  Client caller{at(broker, "hostile-caller")};
  Client observer{at(broker, "hostile-observer")};
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mutex;
  std::string first_failure;  // guarded by mutex
  std::thread traffic;

  Bus() {
    echo.handle("echo", [](const Request& r) { return std::string(r.payload); });
    echo.start();
    REQUIRE(echo.wait_registered(5s));
    traffic = std::thread([this] {
      for (int i = 0; !stop; ++i) {
        const std::string payload = "legit-" + std::to_string(i);
        try {
          if (caller.call("echo", "echo", payload, {.timeout = 10s}).payload == payload)
            ++ok;
          else
            throw std::runtime_error("a reply that is not the echo of " + payload);
        } catch (const std::exception& e) {
          std::lock_guard lock(mutex);
          if (failed++ == 0) first_failure = e.what();
        }
      }
    });
    // Nothing here may throw once the thread runs: ~Bus would not join it.
  }
  ~Bus() {
    stop = true;
    traffic.join();
    echo.stop();
  }

  admin::Counters counters() { return broker_status(observer).counters(); }
  std::uint64_t refusals(const std::string& limit) {
    const auto status = broker_status(observer);
    for (const auto& l : status.limits())
      if (l.name() == limit) return l.refusals();
    FAIL("no limit " << limit << " in the status reply");
    return 0;
  }
  // The broker still runs, and the caller's calls went on succeeding meanwhile.
  void check_undisturbed() {
    const int before = ok;
    CHECK(eventually([&] { return ok >= before + 20; }, 10s));
    CHECK(broker.process().running());
    std::lock_guard lock(mutex);
    INFO("calls that succeeded: " << ok << "; first failure: " << first_failure);
    CHECK(failed == 0);
  }
};

}  // namespace

TEST_CASE("a header that is not a protobuf Header is dropped and counted", "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-garbage"));
  const auto before = bus.counters().malformed();
  raw.send_frames({"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "payload"});
  raw.send_frames({std::string("\x0a\x80", 2)});  // a length that runs past the end
  int answered = 0;
  REQUIRE(raw.sync(&answered));
  CHECK(answered == 0);
  CHECK(bus.counters().malformed() == before + 2);
  bus.check_undisturbed();
}

TEST_CASE("a message of one empty frame is answered INVALID_ARGUMENT and counted", "[hostile]") {
  // A DEALER cannot send fewer frames than one; an empty one reads as a header of
  // version 0, which the broker answers as a wrong version with id 0.
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-empty"));
  const auto before = bus.counters();
  raw.send_frames({""});
  const auto reply = raw.reply_to(0);
  REQUIRE(reply);
  CHECK(reply->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(reply->message(), Catch::Contains("protocol version 0 is not supported"));
  const auto after = bus.counters();
  CHECK(after.malformed() == before.malformed() + 1);
  CHECK(after.invalid_argument() == before.invalid_argument() + 1);
  bus.check_undisturbed();
}

TEST_CASE("an unknown kind, or a kind only the broker sends, is answered INVALID_ARGUMENT",
          "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-kind"));
  const auto before = bus.counters().invalid_argument();

  const auto unknown = raw.reply_to(raw.send(header(static_cast<wire::Kind>(99))));
  REQUIRE(unknown);
  CHECK(unknown->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(unknown->message(), Catch::Contains("kind 99 is not a message kind"));

  const auto welcome = raw.reply_to(raw.send(header(wire::WELCOME)));
  REQUIRE(welcome);
  CHECK(welcome->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(welcome->message(), Catch::Contains("clients may not send WELCOME"));

  CHECK(bus.counters().invalid_argument() == before + 2);
  bus.check_undisturbed();
}

TEST_CASE("another protocol version is answered INVALID_ARGUMENT naming both versions",
          "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-version"));
  const auto before = bus.counters();
  wire::Header h = request("echo", "echo");
  h.set_version(2);
  h.set_id(77);
  raw.send_frames({h.SerializeAsString(), "x"});  // not encode(): it would stamp version 1
  const auto reply = raw.reply_to(77);
  REQUIRE(reply);
  CHECK(reply->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(reply->message(), Catch::Contains("protocol version 2 is not supported"));
  CHECK_THAT(reply->message(), Catch::Contains("version 1"));
  const auto after = bus.counters();
  CHECK(after.malformed() == before.malformed() + 1);
  CHECK(after.invalid_argument() == before.invalid_argument() + 1);
  bus.check_undisturbed();
}

TEST_CASE("a header over max-header is refused by the id it starts with, and counted",
          "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-header"));
  const auto malformed = bus.counters().malformed();
  const auto refused = bus.refusals("max-header");
  wire::Header big = request("echo", "echo");
  (*big.mutable_headers())["padding"] = std::string(kMaxHeader, 'p');
  const auto answer = raw.reply_to(raw.send(big, {"x"}));
  REQUIRE(answer);
  CHECK(answer->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(answer->message(), Catch::Contains("over sage-busd's max-header of 4096 bytes"));
  CHECK(bus.counters().malformed() == malformed + 1);
  CHECK(bus.refusals("max-header") == refused + 1);

  // Without kind and id where encoders put them, there is no one to answer.
  wire::Header with_id = big;
  with_id.set_id(424242);
  std::string unmarked = wire::encode(with_id).to_string();
  unmarked.insert(0, "\x72\x01z");  // a field 14 (hello) before anything else
  raw.send_frames({unmarked, "x"});
  int answered = 0;
  REQUIRE(raw.sync(&answered));
  CHECK(answered == 0);
  CHECK(bus.refusals("max-header") == refused + 2);

  // Just under the limit is a header like any other.
  wire::Header fits = request("echo", "echo");
  (*fits.mutable_headers())["padding"] = std::string(kMaxHeader - 200, 'p');
  const auto reply = raw.reply_to(raw.send(fits, {"fits"}));
  REQUIRE(reply);
  CHECK(reply->status() == wire::OK);
  REQUIRE(raw.payload().size() == 1);
  CHECK(raw.payload()[0] == "fits");
  bus.check_undisturbed();
}

TEST_CASE("a payload over max-payload is answered INVALID_ARGUMENT, or dropped if unconfirmed",
          "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-payload"));
  const auto before = bus.counters();
  const auto refused = bus.refusals("max-payload");
  const std::string over(kMaxPayload + 1, 'x');
  // Two frames, each under the limit, together over it.
  const std::string half(kMaxPayload / 2 + 1, 'y');

  const auto call = raw.reply_to(raw.send(request("echo", "echo"), {over}));
  REQUIRE(call);
  CHECK(call->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(call->message(), Catch::Contains("max-payload of " + std::to_string(kMaxPayload)));
  const auto split = raw.reply_to(raw.send(request("echo", "echo"), {half, half}));
  REQUIRE(split);
  CHECK(split->status() == wire::INVALID_ARGUMENT);

  wire::Header send = header(wire::SEND);
  send.set_peer("hostile-observer");
  send.set_timeout_ms(5000);
  const auto sent = raw.reply_to(raw.send(send, {over}));
  REQUIRE(sent);
  CHECK(sent->status() == wire::INVALID_ARGUMENT);

  wire::Header put = header(wire::QUEUE_PUT);
  put.set_queue("jobs");
  put.set_timeout_ms(5000);
  const auto queued = raw.reply_to(raw.send(put, {over}));
  REQUIRE(queued);
  CHECK(queued->status() == wire::INVALID_ARGUMENT);

  wire::Header publish = header(wire::PUBLISH);
  publish.set_topic("events.big");
  publish.set_confirm(true);
  const auto confirmed = raw.reply_to(raw.send(publish, {over}));
  REQUIRE(confirmed);
  CHECK(confirmed->status() == wire::INVALID_ARGUMENT);
  publish.set_confirm(false);
  publish.set_id(0);
  raw.send(publish, {over});
  int answered = 0;
  REQUIRE(raw.sync(&answered));
  CHECK(answered == 0);

  CHECK(bus.refusals("max-payload") == refused + 6);
  const auto after = bus.counters();
  CHECK(after.invalid_argument() == before.invalid_argument() + 5);
  CHECK(after.published() == before.published());
  CHECK(after.sends() == before.sends());
  CHECK(after.queue_puts() == before.queue_puts());
  bus.check_undisturbed();
}

TEST_CASE(
    "a message of more payload frames than one may carry is refused like a payload over "
    "max-payload, and one of as many is not",
    "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-frames"));
  const auto refused = bus.refusals("max-payload");
  const std::vector<std::string> most(wire::kMaxPayloadFrames, "f");
  const std::vector<std::string> over(wire::kMaxPayloadFrames + 1, "f");
  // Far more than the broker keeps: it drops them as it reads them.
  const std::vector<std::string> flood(20000, "");

  const auto fits = raw.reply_to(raw.send(request("nobody", "m"), most));
  REQUIRE(fits);
  CHECK(fits->status() == wire::NO_RESPONDERS);  // refused for another reason
  for (const auto* frames : {&over, &flood}) {
    const auto call = raw.reply_to(raw.send(request("nobody", "m"), *frames));
    REQUIRE(call);
    CHECK(call->status() == wire::INVALID_ARGUMENT);
    CHECK_THAT(call->message(), Catch::Contains("more than 64 payload frames"));
  }
  wire::Header publish = header(wire::PUBLISH);
  publish.set_topic("events.many");
  raw.send(publish, over);
  int answered = 0;
  REQUIRE(raw.sync(&answered));
  CHECK(answered == 0);

  // A service's reply of too many frames: its caller hears HANDLER_ERROR instead.
  wire::Header reg = header(wire::REGISTER);
  reg.set_service("raw-frames");
  reg.mutable_registration()->add_methods("m");
  reg.mutable_registration()->set_max_inflight(1);
  const auto registered = raw.reply_to(raw.send(reg));
  REQUIRE(registered);
  REQUIRE(registered->status() == wire::OK);
  auto outcome = bus.observer.call_async("raw-frames", "m", "question", {.timeout = 10s});
  const auto given = raw.receive(5s);  // nothing else is sent to this peer
  REQUIRE(given);
  REQUIRE(given->kind() == wire::REQUEST);
  wire::Header reply = header(wire::REPLY);
  reply.set_id(given->id());
  raw.send(reply, over);
  CHECK(status_of([&] { outcome.get(); }) == Status::handler_error);

  CHECK(bus.refusals("max-payload") == refused + 4);
  bus.check_undisturbed();
}

TEST_CASE("a frame over the frame limit costs its sender the connection, and nobody else",
          "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-huge"));
  auto connected = [&] {
    const auto list = broker_clients(bus.observer);
    for (const auto& c : list.clients())
      if (c.name() == "raw-huge") return true;
    return false;
  };
  REQUIRE(connected());
  const auto disconnects = bus.counters().disconnects();
  raw.send(request("echo", "echo"), {std::string(kFrameLimit + 1, 'z')});
  // libzmq drops the connection while reading the frame; the socket monitor tells the
  // broker, which removes the client at once.
  CHECK(eventually([&] { return !connected(); }, 10s));
  CHECK(bus.counters().disconnects() >= disconnects + 1);
  bus.check_undisturbed();
}

TEST_CASE("a REPLY for a dispatch id never given out is dropped and counted", "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-reply"));
  const auto before = bus.counters().rejected_replies();
  wire::Header reply = header(wire::REPLY);
  reply.set_id(987654321);
  raw.send(reply, {"forged"});
  reply.set_id(987654322);
  raw.send(reply);
  int answered = 0;
  REQUIRE(raw.sync(&answered));
  CHECK(answered == 0);
  CHECK(bus.counters().rejected_replies() == before + 2);
  bus.check_undisturbed();
}

TEST_CASE(
    "a REPLY from an instance that was not given the call is rejected, and the right one is "
    "routed",
    "[hostile]") {
  Bus bus;
  RawPeer a(bus.broker.endpoint());
  RawPeer b(bus.broker.endpoint());
  REQUIRE(a.hello("raw-instance-a"));
  REQUIRE(b.hello("raw-instance-b"));
  for (RawPeer* peer : {&a, &b}) {
    wire::Header reg = header(wire::REGISTER);
    reg.set_service("raw");
    reg.mutable_registration()->add_methods("m");
    reg.mutable_registration()->set_max_inflight(4);
    const auto ok = peer->reply_to(peer->send(reg));
    REQUIRE(ok);
    REQUIRE(ok->status() == wire::OK);
  }
  const auto rejected = bus.counters().rejected_replies();

  auto outcome = bus.observer.call_async("raw", "m", "question", {.timeout = 10s});
  // Whichever instance the broker chose gets the REQUEST; the other is the impostor.
  std::optional<wire::Header> given;
  RawPeer* chosen = nullptr;
  RawPeer* other = nullptr;
  REQUIRE(eventually(
      [&] {
        for (RawPeer* peer : {&a, &b}) {
          if (auto h = peer->receive(20ms); h && h->kind() == wire::REQUEST) {
            given = h;
            chosen = peer;
            other = peer == &a ? &b : &a;
            return true;
          }
        }
        return false;
      },
      10s));
  CHECK(given->service() == "raw");

  wire::Header forged = header(wire::REPLY);
  forged.set_id(given->id());
  other->send(forged, {"forged answer"});
  REQUIRE(other->sync());
  CHECK(bus.counters().rejected_replies() == rejected + 1);
  CHECK(outcome.wait_for(0s) == std::future_status::timeout);  // still waiting for its own

  wire::Header answer = header(wire::REPLY);
  answer.set_id(given->id());
  chosen->send(answer, {"the answer"});
  REQUIRE(outcome.wait_for(10s) == std::future_status::ready);
  CHECK(outcome.get().payload == "the answer");
  bus.check_undisturbed();
}

TEST_CASE(
    "invalid service, method, topic, pattern, peer, queue and connection names are "
    "answered INVALID_ARGUMENT",
    "[hostile]") {
  Bus bus;
  RawPeer raw(bus.broker.endpoint());
  REQUIRE(raw.hello("raw-names"));
  const auto before = bus.counters();
  auto refused = [&](wire::Header h, const std::string& says) {
    const auto reply = raw.reply_to(raw.send(h, {"x"}));
    REQUIRE(reply);
    CHECK(reply->status() == wire::INVALID_ARGUMENT);
    CHECK_THAT(reply->message(), Catch::Contains(says));
  };
  refused(request("no such service!", "echo"), "service name");
  refused(request("echo", ""), "method name is empty");
  refused(request(std::string(200, 's'), "echo"), "200 bytes long");

  wire::Header reg = header(wire::REGISTER);
  reg.set_service("bad service");
  reg.mutable_registration()->add_methods("m");
  reg.mutable_registration()->set_max_inflight(1);
  refused(reg, "service name");
  reg.set_service("fine");
  reg.mutable_registration()->set_methods(0, "bad method");
  refused(reg, "method name");

  wire::Header publish = header(wire::PUBLISH);
  publish.set_topic("events..login");
  publish.set_confirm(true);
  refused(publish, "");
  wire::Header subscribe = header(wire::SUBSCRIBE);
  subscribe.set_topic("events.>.more");
  refused(subscribe, "");
  wire::Header send = header(wire::SEND);
  send.set_peer("");
  send.set_timeout_ms(1000);
  refused(send, "peer name is empty");
  wire::Header put = header(wire::QUEUE_PUT);
  put.set_queue("bad queue");
  put.set_timeout_ms(1000);
  refused(put, "");

  RawPeer nameless(bus.broker.endpoint());
  wire::Header hello = header(wire::HELLO);
  hello.mutable_hello()->set_name("name with spaces");
  const auto refused_hello = nameless.reply_to(nameless.send(hello));
  REQUIRE(refused_hello);
  CHECK(refused_hello->status() == wire::INVALID_ARGUMENT);
  CHECK_THAT(refused_hello->message(), Catch::Contains("connection name"));

  const auto after = bus.counters();
  CHECK(after.invalid_argument() == before.invalid_argument() + 10);
  CHECK(after.published() == before.published());
  CHECK(broker_topics(bus.observer).subscriptions_size() == 0);
  bus.check_undisturbed();
}
