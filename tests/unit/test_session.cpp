// detail::Session alone: the client's side of the protocol driven by hand, with a fake
// transport (it records what the session writes, and can refuse like a full socket) and a
// clock that moves only when the test says (session_fixture.hpp).
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/wire/host_clock.hpp"
#include "session_fixture.hpp"

using namespace sagebus;
using namespace sagebus::detail;
using namespace sagebus::session_test;
using namespace std::chrono_literals;

TEST_CASE("a call's reply read exactly at its deadline is its outcome", "[session]") {
  Fixture f;
  f.connect();
  const auto c = f.call("m", 100ms);
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  f.now += 100ms;
  f.reply(sent[0].header.id(), wire::OK, "just in time");
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::ok);
  CHECK(f.outcomes[c]->payload == "just in time");
  CHECK(f.host.late == 0);
}

TEST_CASE(
    "a call's reply read after its deadline is dropped, counted, and the call ends "
    "DEADLINE_EXCEEDED",
    "[session]") {
  Fixture f;
  f.connect();
  const auto c = f.call("m", 100ms);
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  f.now += 100ms + 1us;
  // The reply is read in the same turn as the deadline passes, before the timers run.
  f.reply(sent[0].header.id(), wire::OK, "too late");
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::deadline_exceeded);
  CHECK(f.ends[c] == 1);
  CHECK(f.host.late == 1);
}

TEST_CASE("a call nobody answers ends DEADLINE_EXCEEDED at its deadline, not later", "[session]") {
  Fixture f;
  f.connect();
  const auto c = f.call("m", 100ms);
  CHECK(f.session.next_wakeup() == f.now + 100ms);
  f.now += 99ms;
  f.turn([] {});
  CHECK_FALSE(f.outcomes[c]);
  f.now += 1ms;
  f.turn([] {});
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::deadline_exceeded);
}

TEST_CASE("a duplicate reply and a reply to an id never sent change nothing", "[session]") {
  Fixture f;
  f.connect();
  const auto c = f.call("m");
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  f.reply(sent[0].header.id(), wire::OK, "first");
  f.reply(sent[0].header.id(), wire::OK, "second");
  f.reply(sent[0].header.id() + 1000, wire::OK, "foreign");
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->payload == "first");
  CHECK(f.ends[c] == 1);
  CHECK(f.port.written.empty());  // nothing answered back
}

TEST_CASE(
    "after a reconnect the broker refused, registrations are replayed and the refused "
    "calls sent again, those it had taken end UNAVAILABLE",
    "[session]") {
  Fixture f;
  auto core = make_core(f.link, "echo", ServiceOptions{.on_io_thread = true},
                        std::map<std::string, Handler>{
                            {"echo", [](const Request& r) { return std::string(r.payload); }}});
  f.connect();
  f.turn([&] {
    command::Command add = command::AddService{core};
    f.session.handle(add);
  });
  REQUIRE(f.port.take(wire::REGISTER).size() == 1);
  const auto taken = f.call("m");
  const auto refused = f.call("m");
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 2);

  // The broker forgot this connection: it refuses the second call, naming it. (A HELLO
  // goes again at most every 100 ms.)
  f.now += 101ms;
  wire::Header h;
  h.set_kind(wire::HELLO_REQUIRED);
  h.set_id(sent[1].header.id());
  f.turn([&] { f.feed(h); });
  REQUIRE(f.outcomes[taken]);
  CHECK(f.outcomes[taken]->status == Status::unavailable);
  CHECK_FALSE(f.outcomes[refused]);
  const auto hellos = f.port.take(wire::HELLO);
  REQUIRE(hellos.size() == 1);

  f.welcome(hellos[0].header.id(), "broker-1");
  std::vector<wire::Kind> kinds;
  for (const auto& w : f.port.written)
    kinds.push_back(w.header.kind());
  CHECK(kinds == std::vector<wire::Kind>{wire::REGISTER, wire::REQUEST});
  const auto again = f.port.take(wire::REQUEST);
  REQUIRE(again.size() == 1);
  CHECK(again[0].header.id() > sent[1].header.id());  // a fresh id: ids rise in sending order
  f.reply(again[0].header.id(), wire::OK, "ran once");
  REQUIRE(f.outcomes[refused]);
  CHECK(f.outcomes[refused]->payload == "ran once");
}

TEST_CASE(
    "a GOODBYE from a broker shutting down: calls waiting for ready go again after the "
    "next WELCOME, the others fail UNAVAILABLE",
    "[session]") {
  Fixture f;
  f.connect();
  const auto patient = f.call("m", 10s, true);
  const auto impatient = f.call("m", 10s, false);
  REQUIRE(f.port.take(wire::REQUEST).size() == 2);
  wire::Header bye;
  bye.set_kind(wire::GOODBYE);
  bye.set_status(wire::UNAVAILABLE);
  bye.set_message("broker shutting down");
  f.turn([&] { f.feed(bye); });
  REQUIRE(f.outcomes[impatient]);
  CHECK(f.outcomes[impatient]->status == Status::unavailable);
  CHECK_FALSE(f.outcomes[patient]);
  f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
  f.connect("broker-2");
  const auto again = f.port.take(wire::REQUEST);
  REQUIRE(again.size() == 1);
  f.reply(again[0].header.id(), wire::OK, "after");
  REQUIRE(f.outcomes[patient]);
  CHECK(f.outcomes[patient]->payload == "after");
}

TEST_CASE("requests the full transport refuses wait in order, and go as it takes them",
          "[session]") {
  Fixture f;
  f.connect();
  f.port.full = true;
  for (int i = 0; i < 5; ++i)
    f.call("m" + std::to_string(i));
  CHECK(f.session.wants_out());
  for (const auto& o : f.outcomes)
    CHECK_FALSE(o);  // waiting, not OVERLOADED
  f.port.full = false;
  f.turn([] {});
  check_in_order(f.port.take(wire::REQUEST), 5);
  CHECK_FALSE(f.session.wants_out());
}

TEST_CASE("a request that waits for room past its deadline ends DEADLINE_EXCEEDED, never sent",
          "[session]") {
  Fixture f;
  f.connect();
  f.port.full = true;
  const auto c = f.call("m", 50ms);
  f.now += 50ms;
  f.turn([] {});
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::deadline_exceeded);
  CHECK_THAT(f.outcomes[c]->message, Catch::Contains("never sent"));
  f.port.full = false;
  f.turn([] {});
  CHECK(f.port.take(wire::REQUEST).empty());
}

TEST_CASE(
    "a subscription whose credit is used up is replayed with credit 1, and credit "
    "returned goes as CREDIT",
    "[session]") {
  Fixture f;
  auto core = std::make_shared<SubscriptionCore>(
      f.link, "events.>", [](const Message&) {}, 4);
  f.connect();
  f.turn([&] {
    command::Command add = command::AddSubscription{core};
    f.session.handle(add);
  });
  auto subscribes = f.port.take(wire::SUBSCRIBE);
  REQUIRE(subscribes.size() == 1);
  CHECK(subscribes[0].header.credit() == 4);
  const auto wire_id = subscribes[0].header.id();
  // Four events use the window up: the handler thread is not running, nothing is handled.
  f.turn([&] {
    for (int i = 0; i < 4; ++i) {
      wire::Header e;
      e.set_kind(wire::EVENT);
      e.set_subscription(wire_id);
      e.set_topic("events.x");
      f.feed(e, "payload");
    }
  });
  CHECK(core->room() == 0);
  // A new broker: the subscription goes again under its first id, with credit 1.
  f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
  f.connect("broker-2");
  subscribes = f.port.take(wire::SUBSCRIBE);
  REQUIRE(subscribes.size() == 1);
  CHECK(subscribes[0].header.id() == wire_id);
  CHECK(subscribes[0].header.credit() == 1);
  f.turn([&] {
    command::Command credit = command::Credit{core, 3};
    f.session.handle(credit);
  });
  const auto credits = f.port.take(wire::CREDIT);
  REQUIRE(credits.size() == 1);
  CHECK(credits[0].header.credit() == 3);
  CHECK(credits[0].header.subscription() == wire_id);
}

TEST_CASE(
    "a service unregistered with calls in hand still sends their replies, a call after "
    "it is removed is answered UNAVAILABLE",
    "[session]") {
  Fixture f;
  // Workers are never started: the calls it is given stay in hand.
  auto core = make_core(
      f.link, "svc", ServiceOptions{},
      std::map<std::string, Handler>{{"m", [](const Request&) { return std::string("x"); }}});
  f.connect();
  f.turn([&] {
    command::Command add = command::AddService{core};
    f.session.handle(add);
  });
  REQUIRE(f.port.take(wire::REGISTER).size() == 1);
  wire::Header request;
  request.set_kind(wire::REQUEST);
  request.set_id(7);
  request.set_service("svc");
  request.set_method("m");
  request.set_timeout_ms(1000);
  f.turn([&] { f.feed(request, "in hand"); });

  f.turn([&] {
    command::Command unregister = command::Unregister{"svc"};
    f.session.handle(unregister);
  });
  const auto unregisters = f.port.take(wire::UNREGISTER);
  REQUIRE(unregisters.size() == 1);
  // The worker finishes the call in hand after the UNREGISTER went.
  f.turn([&] {
    command::Command reply = command::SendReply{7, 1, Status::ok, "", "done"};
    f.session.handle(reply);
  });
  auto replies = f.port.take(wire::REPLY);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].header.id() == 7);
  CHECK(replies[0].payload == "done");

  f.turn([&] {
    command::Command remove = command::RemoveService{"svc"};
    f.session.handle(remove);
  });
  request.set_id(8);
  f.turn([&] { f.feed(request, "too late"); });
  replies = f.port.take(wire::REPLY);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].header.id() == 8);
  CHECK(replies[0].header.status() == wire::UNAVAILABLE);
}

TEST_CASE(
    "a broker on this host: a call carries its deadline itself, and a dispatched call's "
    "handler sees the broker's deadline as it is",
    "[session]") {
  Fixture f;
  Clock::time_point seen{};
  auto core = make_core(f.link, "svc", ServiceOptions{.on_io_thread = true},
                        std::map<std::string, Handler>{{"m", [&](const Request& r) {
                                                          seen = r.deadline;
                                                          return std::string();
                                                        }}});
  f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
  const auto hello = f.port.take(wire::HELLO);
  REQUIRE(hello.size() == 1);
  CHECK(hello[0].header.hello().host() == wire::host_id());
  wire::Header w;
  w.set_kind(wire::WELCOME);
  w.set_id(hello[0].header.id());
  w.mutable_welcome()->set_broker_session("b");
  w.mutable_welcome()->set_host(wire::host_id());
  f.turn([&] { f.feed(w); });

  f.call("m", 250ms);
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].header.deadline_us() == wire::to_deadline_us(f.now + 250ms));
  CHECK(sent[0].header.timeout_ms() == 250);

  f.turn([&] {
    command::Command add = command::AddService{core};
    f.session.handle(add);
  });
  wire::Header request;
  request.set_kind(wire::REQUEST);
  request.set_id(9);
  request.set_service("svc");
  request.set_method("m");
  request.set_timeout_ms(1000);  // later than the deadline it carries: that one wins
  request.set_deadline_us(wire::to_deadline_us(f.now + 300ms));
  f.turn([&] { f.feed(request); });
  CHECK(seen == f.now + 300ms);
}

TEST_CASE("a kind no broker sends is dropped, alone or in a BATCH, and changes nothing",
          "[session][kinds]") {
  Fixture f;
  f.connect();
  const auto c = f.call("m");
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  for (const auto kind : {wire::HELLO, wire::SUBSCRIBE, wire::QUEUE_GET, wire::KIND_UNSPECIFIED}) {
    wire::Header h;
    h.set_kind(kind);
    h.set_id(sent[0].header.id());
    f.turn([&] { f.feed(h, "x"); });
  }
  CHECK(f.port.written.empty());
  CHECK_FALSE(f.outcomes[c]);
  CHECK(f.host.ready);
}

TEST_CASE(
    "a refused key ends every request not sent UNAUTHENTICATED, those waiting for ready "
    "too, a handshake failing without detail ends them at the second in a row",
    "[session][auth]") {
  SECTION("the broker refused the key") {
    Fixture f;
    const auto patient = f.call("m", 10s, true);
    const auto impatient = f.call("m", 10s, false);
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::key_refused); });
    f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
    for (const auto c : {patient, impatient}) {
      REQUIRE(f.outcomes[c]);
      CHECK(f.outcomes[c]->status == Status::unauthenticated);
      CHECK(f.outcomes[c]->message.find("refused this client's key") != std::string::npos);
      CHECK(f.ends[c] == 1);
    }
    // New requests fail at once, until a WELCOME.
    const auto later = f.call("m", 10s, true);
    REQUIRE(f.outcomes[later]);
    CHECK(f.outcomes[later]->status == Status::unauthenticated);
    REQUIRE(f.host.error);
    CHECK(f.host.error->status() == Status::unauthenticated);
    f.connect();
    const auto fine = f.call("m", 10s, false);
    CHECK_FALSE(f.outcomes[fine]);
    CHECK(f.port.take(wire::REQUEST).size() == 1);
  }
  SECTION("no detail: once is likely, three times over a second is certain") {
    Fixture f;
    const auto patient = f.call("m", 10s, true);
    const auto impatient = f.call("m", 10s, false);
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::handshake_failed); });
    f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
    REQUIRE(f.outcomes[impatient]);
    CHECK(f.outcomes[impatient]->status == Status::unauthenticated);
    CHECK(f.outcomes[impatient]->message.find("requires CURVE") != std::string::npos);
    CHECK_FALSE(f.outcomes[patient]);
    // A broker restarting (or crashing) twice at the handshake is not yet proof.
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::handshake_failed); });
    f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::handshake_failed); });
    f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
    CHECK_FALSE(f.outcomes[patient]);
    f.now += 1s;
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::handshake_failed); });
    REQUIRE(f.outcomes[patient]);
    CHECK(f.outcomes[patient]->status == Status::unauthenticated);
  }
}

TEST_CASE("requests started together go as one BATCH, a lone one as a plain REQUEST",
          "[session][batches]") {
  Fixture f;
  f.connect("broker-1", true);
  for (int i = 0; i < 3; ++i)
    f.call("m" + std::to_string(i), 1s, false, true);
  CHECK(f.port.written.empty());  // waiting for company
  f.session.flush();
  int batches = 0;
  const auto sent = f.port.take(wire::REQUEST, &batches);
  CHECK(batches == 1);
  check_in_order(sent, 3);
  f.call("alone");
  REQUIRE(f.port.written.size() == 1);
  CHECK(f.port.written[0].header.kind() == wire::REQUEST);
  CHECK(f.port.written[0].header.method() == "alone");
  // Each is answered under the id it went with.
  f.check_answered(1, sent[1].header.id(), "one");
}

TEST_CASE("gathered requests the full transport refuses wait for room first, in order",
          "[session][batches]") {
  Fixture f;
  f.connect("broker-1", true);
  f.port.full = true;
  for (int i = 0; i < 3; ++i)
    f.call("m" + std::to_string(i), 1s, false, true);
  f.session.flush();  // refused: they wait for room
  f.call("m3");       // behind them
  CHECK(f.session.wants_out());
  for (const auto& o : f.outcomes)
    CHECK_FALSE(o);
  f.port.full = false;
  f.turn([] {});
  const auto sent = f.port.take(wire::REQUEST);
  check_in_order(sent, 4);
  CHECK_FALSE(f.session.wants_out());
  f.check_answered(3, sent[3].header.id(), "three");
}

TEST_CASE("requests gathered when the link is lost never left: the next WELCOME sends them",
          "[session][batches]") {
  Fixture f;
  f.connect("broker-1", true);
  const auto c = f.call("m", 5s, true, true);
  f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
  CHECK(f.port.take(wire::REQUEST).empty());
  CHECK_FALSE(f.outcomes[c]);  // it waits for ready
  f.connect("broker-2", true);
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  f.check_answered(c, sent[0].header.id(), "done");
  CHECK(f.ends[c] == 1);
}
