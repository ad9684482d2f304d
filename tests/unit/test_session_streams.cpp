// detail::Session's streams and cancellation, both sides (session_fixture.hpp): the
// caller's (a stream's REQUEST, its CHUNKs, CANCEL, CREDIT, the idle timeout) with the
// fake clock, and the instance's (the broker's CANCEL and CREDIT for a dispatched call)
// with a ServiceCore whose workers really run, its deadlines on the real clock.
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/call_context.hpp"
#include "sagebus/stream.hpp"
#include "session_fixture.hpp"

using namespace sagebus;
using namespace sagebus::detail;
using namespace sagebus::session_test;
using namespace std::chrono_literals;

namespace {

const std::string kTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const std::string kOtherTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct StreamCall {
  std::size_t index;
  std::shared_ptr<FakeControl> control;
};

// Starts a stream of method "s" on "svc", as Client::stream would.
StreamCall start_stream(Fixture& f, std::uint32_t window_bytes = 256,
                        std::chrono::milliseconds idle_timeout = 0ms,
                        std::chrono::milliseconds timeout = 10s, bool wait_for_ready = false) {
  auto spec = Fixture::spec_of("s", timeout, wait_for_ready);
  spec.stream = true;
  spec.traceparent = kTraceparent;
  spec.options.window_bytes = window_bytes;
  spec.options.idle_timeout = idle_timeout;
  auto control = std::make_shared<FakeControl>();
  spec.control = control;
  return {f.start(std::move(spec)), control};
}

// Starts a call of `method` that can be cancelled (it has a control, as one made with a
// CancelToken).
std::size_t start_cancellable(Fixture& f, const std::shared_ptr<CallControl>& control,
                              const std::string& method = "m",
                              std::chrono::milliseconds timeout = 10s,
                              bool wait_for_ready = false) {
  auto spec = Fixture::spec_of(method, timeout, wait_for_ready);
  spec.control = control;
  return f.start(std::move(spec));
}

// The id of the one REQUEST written since the last take.
std::uint64_t sent_id(Fixture& f) {
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 1);
  return sent[0].header.id();
}

wire::Header header_of(wire::Kind kind, std::uint64_t id) {
  wire::Header h;
  h.set_kind(kind);
  h.set_id(id);
  return h;
}

void feed_chunk(Fixture& f, std::uint64_t id, const std::string& chunk) {
  f.turn([&] { f.feed(header_of(wire::CHUNK, id), chunk); });
}

void cancel(Fixture& f, const std::shared_ptr<CallControl>& control, const std::string& why) {
  f.handle(command::Cancel{control, why});
}

std::vector<std::string> chunks_of(const std::vector<Written>& written) {
  std::vector<std::string> out;
  for (const auto& w : written)
    out.push_back(w.payload);
  return out;
}

// The kinds of `written`, in order.
std::vector<wire::Kind> kinds_of(const std::vector<Written>& written) {
  std::vector<wire::Kind> out;
  for (const auto& w : written)
    out.push_back(w.header.kind());
  return out;
}

// A call the broker dispatches to this instance.
wire::Header dispatch(std::uint64_t id, const std::string& method, std::uint32_t timeout_ms = 5000,
                      bool stream = false, std::uint32_t credit = 0) {
  wire::Header h = header_of(wire::REQUEST, id);
  h.set_service("svc");
  h.set_method(method);
  h.set_timeout_ms(timeout_ms);
  h.set_stream(stream);
  h.set_credit(credit);
  h.set_traceparent(kTraceparent);
  return h;
}

wire::Header broker_cancel(std::uint64_t id, const std::string& why = {}) {
  wire::Header h = header_of(wire::CANCEL, id);
  h.set_message(why);
  return h;
}

wire::Header broker_credit(std::uint64_t id, std::uint32_t credit) {
  wire::Header h = header_of(wire::CREDIT, id);
  h.set_credit(credit);
  return h;
}

void add_service(Fixture& f, const std::shared_ptr<ServiceCore>& core) {
  f.handle(command::AddService{core});
  REQUIRE(f.port.take(wire::REGISTER).size() == 1);
}

// Stops a core whose workers run, at the end of a test (or earlier: stop() again is
// harmless). Its handlers must return by themselves first.
struct Stopper {
  std::shared_ptr<ServiceCore> core;
  void operator()() const {
    core->on_unregistered();  // FakeLink does not send the UNREGISTER it answers
    core->stop(10s);
  }
  ~Stopper() { (*this)(); }
};

// Waits up to `timeout` for `flag`.
bool wait_until(const std::atomic<bool>& flag, std::chrono::milliseconds timeout = 5s) {
  for (auto until = std::chrono::steady_clock::now() + timeout;
       !flag.load() && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(1ms);
  return flag.load();
}

}  // namespace

// --- the caller's side ---------------------------------------------------------------------

TEST_CASE("a stream's REQUEST carries stream and its window as credit and its traceparent",
          "[session][stream]") {
  Fixture f;
  f.connect();
  const auto s = start_stream(f, 16384);
  auto plain = Fixture::spec_of("plain");
  plain.traceparent = kOtherTraceparent;
  f.start(std::move(plain));
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].header.method() == "s");
  CHECK(sent[0].header.stream());
  CHECK(sent[0].header.credit() == 16384);
  CHECK(sent[0].header.traceparent() == kTraceparent);
  CHECK(s.control->key == sent[0].header.id());
  // A call that is no stream carries its traceparent, and no window.
  CHECK_FALSE(sent[1].header.stream());
  CHECK(sent[1].header.credit() == 0);
  CHECK(sent[1].header.traceparent() == kOtherTraceparent);
}

TEST_CASE(
    "a stream's CHUNKs reach its control in order alone or in a BATCH and its REPLY ends it once",
    "[session][stream]") {
  Fixture f;
  f.connect();
  const auto s = start_stream(f);
  const auto id = sent_id(f);
  feed_chunk(f, id, "c0");
  feed_chunk(f, id, "c1");
  // Two in a BATCH, then one alone, read in one turn.
  wire::Header chunk = header_of(wire::CHUNK, id);
  const std::string chunk_header = wire::encode(chunk).to_string();
  wire::BatchWriter batch;
  batch.add_message(chunk_header, "c2");
  batch.add_message(chunk_header, "c3");
  f.turn([&] {
    f.feed(header_of(wire::BATCH, 0), std::string(batch.bytes()));
    f.feed(header_of(wire::CHUNK, id), "c4");
  });
  CHECK(s.control->chunks == std::vector<std::string>{"c0", "c1", "c2", "c3", "c4"});
  CHECK_FALSE(f.outcomes[s.index]);

  f.reply(id, wire::OK, "");
  REQUIRE(f.outcomes[s.index]);
  CHECK(f.outcomes[s.index]->status == Status::ok);
  CHECK(f.ends[s.index] == 1);
  CHECK(s.control->key == 0);
  // After the end: a second REPLY and a late CHUNK change nothing.
  f.reply(id, wire::HANDLER_ERROR, "again");
  feed_chunk(f, id, "late");
  CHECK(f.ends[s.index] == 1);
  CHECK(f.outcomes[s.index]->status == Status::ok);
  CHECK(s.control->chunks.size() == 5);
  CHECK(f.port.written.empty());
  CHECK(f.host.late == 0);
}

TEST_CASE("a CHUNK for an unknown request or for a call that is no stream is dropped",
          "[session][stream]") {
  Fixture f;
  f.connect();
  auto control = std::make_shared<FakeControl>();
  const auto cancellable = start_cancellable(f, control);
  const auto bare = f.call("bare");
  const auto sent = f.port.take(wire::REQUEST);
  REQUIRE(sent.size() == 2);
  feed_chunk(f, sent[0].header.id(), "x");
  feed_chunk(f, sent[1].header.id(), "y");
  feed_chunk(f, sent[1].header.id() + 1000, "z");
  feed_chunk(f, 0, "zero");
  CHECK(control->chunks.empty());
  CHECK_FALSE(f.outcomes[cancellable]);
  CHECK_FALSE(f.outcomes[bare]);
  CHECK(f.port.written.empty());
  CHECK(f.host.ready);
  // Both are answered as if nothing had come.
  f.check_answered(cancellable, sent[0].header.id(), "one");
  f.check_answered(bare, sent[1].header.id(), "two");
}

TEST_CASE("Cancel of a sent request writes CANCEL with its id and ends it CANCELLED once",
          "[session][cancel]") {
  Fixture f;
  f.connect();
  std::shared_ptr<FakeControl> control;
  std::size_t index = 0;
  SECTION("a stream") {
    const auto s = start_stream(f);
    control = s.control;
    index = s.index;
  }
  SECTION("a call") {
    control = std::make_shared<FakeControl>();
    index = start_cancellable(f, control);
  }
  const auto id = sent_id(f);
  cancel(f, control, "the reader left");
  const auto cancels = f.port.take(wire::CANCEL);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].header.id() == id);
  REQUIRE(f.outcomes[index]);
  CHECK(f.outcomes[index]->status == Status::cancelled);
  CHECK(f.outcomes[index]->message == "the reader left");
  CHECK(f.ends[index] == 1);
  CHECK(control->key == 0);
  // The broker's answer, sent before it read the CANCEL, and a second Cancel: nothing.
  feed_chunk(f, id, "c0");
  f.reply(id, wire::OK, "after");
  cancel(f, control, "again");
  CHECK(f.ends[index] == 1);
  CHECK(f.outcomes[index]->status == Status::cancelled);
  CHECK(control->chunks.empty());
  CHECK(f.port.written.empty());
  CHECK(f.host.late == 0);
}

TEST_CASE("Cancel of a request sent again under a fresh id names the fresh id",
          "[session][cancel]") {
  Fixture f;
  f.connect();
  auto control = std::make_shared<FakeControl>();
  const auto c = start_cancellable(f, control);
  const auto first = sent_id(f);
  CHECK(control->key == first);
  // The broker forgot this connection and refuses the request: it goes again after the
  // next WELCOME.
  f.now += 101ms;
  f.turn([&] { f.feed(header_of(wire::HELLO_REQUIRED, first)); });
  CHECK_FALSE(f.outcomes[c]);
  const auto hellos = f.port.take(wire::HELLO);
  REQUIRE(hellos.size() == 1);
  f.welcome(hellos[0].header.id(), "broker-1");
  const auto again = sent_id(f);
  CHECK(again != first);
  CHECK(control->key == again);
  cancel(f, control, "bye");
  const auto cancels = f.port.take(wire::CANCEL);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].header.id() == again);
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::cancelled);
}

TEST_CASE("Cancel before the session takes the request up ends it CANCELLED and it is never sent",
          "[session][cancel]") {
  Fixture f;
  f.connect();
  auto control = std::make_shared<FakeControl>();
  cancel(f, control, "changed my mind");  // the Start is still on its way
  CHECK(control->cancel_early);
  CHECK(f.port.written.empty());
  const auto c = start_cancellable(f, control);
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::cancelled);
  CHECK(f.outcomes[c]->message == "changed my mind");
  CHECK(f.ends[c] == 1);
  f.turn([] {});
  CHECK(f.port.written.empty());
}

TEST_CASE("Cancel of a request not sent yet writes no CANCEL and it is never sent",
          "[session][cancel]") {
  Fixture f;
  auto control = std::make_shared<FakeControl>();
  SECTION("waiting for the connection") {
    const auto c = start_cancellable(f, control, "m", 10s, true);
    cancel(f, control, "no longer");
    REQUIRE(f.outcomes[c]);
    CHECK(f.outcomes[c]->status == Status::cancelled);
    f.connect();
    CHECK(f.port.take(wire::REQUEST).empty());
    CHECK(f.port.take(wire::CANCEL).empty());
    CHECK(f.ends[c] == 1);
  }
  SECTION("waiting for room in the transport's queue") {
    f.connect();
    f.port.full = true;
    const auto c = start_cancellable(f, control);
    cancel(f, control, "no longer");
    REQUIRE(f.outcomes[c]);
    CHECK(f.outcomes[c]->status == Status::cancelled);
    f.port.full = false;
    f.turn([] {});
    CHECK(f.port.written.empty());
    CHECK(f.ends[c] == 1);
  }
}

TEST_CASE("StreamCredit writes CREDIT with the stream's id and the credit", "[session][stream]") {
  Fixture f;
  SECTION("alone") {
    f.connect();
  }
  SECTION("to a broker that reads BATCHes") {
    f.connect("broker-1", true);
  }
  const auto s = start_stream(f, 8);
  const auto id = sent_id(f);
  f.handle(command::StreamCredit{s.control, 4});
  const auto credits = f.port.take(wire::CREDIT);
  REQUIRE(credits.size() == 1);
  CHECK(credits[0].header.id() == id);
  CHECK(credits[0].header.credit() == 4);
  CHECK(credits[0].header.subscription() == 0);
  // Once the stream has ended, credit goes nowhere.
  f.reply(id, wire::OK, "");
  REQUIRE(f.outcomes[s.index]);
  f.handle(command::StreamCredit{s.control, 4});
  CHECK(f.port.written.empty());
}

TEST_CASE("a CREDIT and a CANCEL the full transport refuses wait for room, in order",
          "[session][stream][cancel]") {
  Fixture f;
  SECTION("alone") {
    f.connect();
  }
  SECTION("to a broker that reads BATCHes") {
    f.connect("broker-1", true);
  }
  const auto credited = start_stream(f, 8);
  const auto credited_id = sent_id(f);
  auto cancelled = std::make_shared<FakeControl>();
  start_cancellable(f, cancelled);
  const auto cancelled_id = sent_id(f);
  f.port.full = true;
  f.handle(command::StreamCredit{credited.control, 4});
  cancel(f, cancelled, "the user left");
  CHECK(f.port.written.empty());
  CHECK(f.session.wants_out());
  f.port.full = false;
  f.turn([] {});
  const auto out = f.port.take_all();
  REQUIRE(out.size() == 2);
  CHECK(out[0].header.kind() == wire::CREDIT);
  CHECK(out[0].header.id() == credited_id);
  CHECK(out[0].header.credit() == 4);
  CHECK(out[1].header.kind() == wire::CANCEL);
  CHECK(out[1].header.id() == cancelled_id);
  CHECK_FALSE(f.session.wants_out());
}

TEST_CASE("StreamCredit for a stream not sent yet writes nothing", "[session][stream]") {
  Fixture f;
  f.connect();
  f.port.full = true;
  const auto s = start_stream(f, 8);
  f.handle(command::StreamCredit{s.control, 4});
  f.port.full = false;
  f.turn([] {});
  const auto written = f.port.take_all();
  CHECK(kinds_of(written) == std::vector<wire::Kind>{wire::REQUEST});
}

TEST_CASE(
    "a stream with no chunk for its idle_timeout ends DEADLINE_EXCEEDED then and writes CANCEL",
    "[session][stream]") {
  Fixture f;
  f.connect();
  const auto t0 = f.now;
  const auto s = start_stream(f, 4, 100ms, 10s);
  const auto id = sent_id(f);
  CHECK(f.session.next_wakeup() == t0 + 100ms);
  f.now += 99ms;
  f.turn([] {});
  CHECK_FALSE(f.outcomes[s.index]);
  CHECK(f.port.written.empty());
  f.now += 1ms;
  f.turn([] {});
  REQUIRE(f.outcomes[s.index]);
  CHECK(f.outcomes[s.index]->status == Status::deadline_exceeded);
  CHECK_THAT(f.outcomes[s.index]->message, Catch::Contains("idle_timeout"));
  const auto cancels = f.port.take(wire::CANCEL);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].header.id() == id);
  feed_chunk(f, id, "too late");
  CHECK(s.control->chunks.empty());
  CHECK(f.ends[s.index] == 1);
}

TEST_CASE("chunks that come within a stream's idle_timeout keep it alive", "[session][stream]") {
  Fixture f;
  f.connect();
  const auto t0 = f.now;
  const auto s = start_stream(f, 4, 100ms, 10s);
  const auto id = sent_id(f);
  for (int k = 1; k <= 3; ++k) {
    f.now = t0 + k * 60ms;
    feed_chunk(f, id, "c" + std::to_string(k));
    CHECK_FALSE(f.outcomes[s.index]);
  }
  // The last chunk came at t0 + 180 ms.
  f.now = t0 + 279ms;
  f.turn([] {});
  CHECK_FALSE(f.outcomes[s.index]);
  CHECK(f.session.next_wakeup() == t0 + 280ms);
  CHECK(f.port.written.empty());
  f.now = t0 + 280ms;
  f.turn([] {});
  REQUIRE(f.outcomes[s.index]);
  CHECK(f.outcomes[s.index]->status == Status::deadline_exceeded);
  CHECK(s.control->chunks == std::vector<std::string>{"c1", "c2", "c3"});
  const auto cancels = f.port.take(wire::CANCEL);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].header.id() == id);
}

TEST_CASE(
    "a stream that reaches its deadline writes CANCEL and a call that reaches its deadline none",
    "[session][stream]") {
  Fixture f;
  f.connect();
  const auto t0 = f.now;
  // Its idle timeout is longer than its deadline: the deadline ends it.
  const auto s = start_stream(f, 4, 1s, 200ms);
  const auto stream_id = sent_id(f);
  const auto c = f.call("m", 200ms);
  const auto call_id = sent_id(f);
  f.now = t0 + 100ms;
  feed_chunk(f, stream_id, "c0");
  f.now = t0 + 199ms;
  f.turn([] {});
  CHECK_FALSE(f.outcomes[s.index]);
  CHECK(f.port.written.empty());
  f.now = t0 + 200ms;
  f.turn([] {});
  REQUIRE(f.outcomes[s.index]);
  CHECK(f.outcomes[s.index]->status == Status::deadline_exceeded);
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status == Status::deadline_exceeded);
  const auto cancels = f.port.take(wire::CANCEL);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].header.id() == stream_id);
  CHECK(cancels[0].header.id() != call_id);
  CHECK(f.ends[s.index] == 1);
}

TEST_CASE(
    "a call_all takes what the broker sends at its deadline within the grace and without an "
    "answer ends DEADLINE_EXCEEDED after it",
    "[session][gather]") {
  Fixture f;
  f.connect();
  const auto t0 = f.now;
  const auto start_gather = [&] {
    auto spec = Fixture::spec_of("m", 200ms);
    spec.all = true;
    auto control = std::make_shared<FakeControl>();
    spec.control = control;
    const auto index = f.start(std::move(spec));
    const auto sent = f.port.take(wire::REQUEST);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].header.all());
    CHECK_FALSE(sent[0].header.stream());
    return std::tuple{index, control, sent[0].header.id()};
  };
  const auto [answered, control, answered_id] = start_gather();
  const auto [silent, silent_control, silent_id] = start_gather();
  (void)silent_control;
  (void)silent_id;
  // The broker decides a gather's outcome at its deadline: it is not ended here then.
  f.now = t0 + 200ms;
  f.turn([] {});
  CHECK_FALSE(f.outcomes[answered]);
  CHECK_FALSE(f.outcomes[silent]);
  CHECK(f.port.written.empty());  // and not cancelled
  f.now = t0 + 210ms;
  wire::Header outcome = header_of(wire::CHUNK, answered_id);
  outcome.set_peer("instance-1");
  outcome.set_status(wire::DEADLINE_EXCEEDED);
  f.turn([&] { f.feed(outcome, ""); });
  CHECK(control->chunks.size() == 1);
  f.reply(answered_id, wire::OK, "");
  REQUIRE(f.outcomes[answered]);
  CHECK(f.outcomes[answered]->status == Status::ok);
  CHECK(f.host.late == 0);
  // No answer at all: it ends at the grace's end.
  f.now = t0 + 249ms;
  f.turn([] {});
  CHECK_FALSE(f.outcomes[silent]);
  f.now = t0 + 250ms;
  f.turn([] {});
  REQUIRE(f.outcomes[silent]);
  CHECK(f.outcomes[silent]->status == Status::deadline_exceeded);
  CHECK(f.ends[silent] == 1);
}

TEST_CASE("a stream unsent again after a GOODBYE waits for the next WELCOME past its idle_timeout",
          "[session][stream]") {
  Fixture f;
  f.connect();
  const auto t0 = f.now;
  const auto s = start_stream(f, 4, 100ms, 10s, true);
  const auto first = sent_id(f);
  wire::Header bye = header_of(wire::GOODBYE, 0);
  bye.set_status(wire::UNAVAILABLE);
  bye.set_message("broker shutting down");
  f.turn([&] { f.feed(bye); });
  f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
  // The broker never read it: it waits for the next broker, up to its deadline. The idle
  // timeout counts chunks of a stream sent, not the wait for a connection.
  f.now = t0 + 150ms;
  f.turn([] {});
  if (f.outcomes[s.index]) FAIL_CHECK("it ended at t0 + 150 ms: " << f.outcomes[s.index]->message);
  f.connect("broker-2");
  const auto again = sent_id(f);
  CHECK(again != first);
  CHECK(s.control->key == again);
  CHECK_FALSE(f.outcomes[s.index]);
}

TEST_CASE("a request that ends forgets its control's token registrations", "[session][cancel]") {
  Fixture f;
  f.connect();
  CancelToken token;
  int ran = 0;
  auto control = std::make_shared<FakeControl>();
  control->registrations.emplace_back(token, token.on_cancel([&] { ++ran; }));
  const auto c = start_cancellable(f, control, "m", 200ms);
  const auto id = sent_id(f);
  SECTION("answered") {
    f.reply(id, wire::OK, "x");
  }
  SECTION("cancelled") {
    cancel(f, control, "by another token");
  }
  SECTION("at its deadline") {
    f.now += 200ms;
    f.turn([] {});
  }
  REQUIRE(f.outcomes[c]);
  CHECK(control->key == 0);
  CHECK(control->registrations.empty());
  token.cancel();
  CHECK(ran == 0);
}

TEST_CASE("a request that ends before it is sent forgets its control's token registrations",
          "[session][cancel]") {
  Fixture f;
  CancelToken token;
  int ran = 0;
  auto control = std::make_shared<FakeControl>();
  control->registrations.emplace_back(token, token.on_cancel([&] { ++ran; }));
  auto spec = Fixture::spec_of("m");
  spec.control = control;
  SECTION("its timeout is invalid") {
    f.connect();
    spec.options.timeout = 0ms;
  }
  SECTION("the link is failing") {
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    f.turn([&] { f.session.on_link_event(LinkEvent::connect_failed); });
    f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
  }
  SECTION("its payload exceeds the broker's max-payload") {
    f.turn([&] { f.session.on_link_event(LinkEvent::connected); });
    const auto hellos = f.port.take(wire::HELLO);
    REQUIRE(hellos.size() == 1);
    wire::Header w = header_of(wire::WELCOME, hellos[0].header.id());
    w.mutable_welcome()->set_broker_session("small");
    w.mutable_welcome()->set_heartbeat_ms(60000);
    w.mutable_welcome()->set_liveness(3);
    w.mutable_welcome()->set_max_payload(4);
    f.turn([&] { f.feed(w); });
    REQUIRE(f.host.ready);
    const std::string payload = "more than four bytes";
    spec.payload = zmq::message_t(payload.data(), payload.size());
  }
  SECTION("it was cancelled before it was taken up") {
    f.connect();
    cancel(f, control, "by its stream");
  }
  const auto c = f.start(std::move(spec));
  REQUIRE(f.outcomes[c]);
  CHECK(f.outcomes[c]->status != Status::ok);
  CHECK(f.port.take(wire::REQUEST).empty());
  CHECK(control->key == 0);
  CHECK(control->registrations.empty());
  token.cancel();
  CHECK(ran == 0);
}

// --- the instance's side -------------------------------------------------------------------

TEST_CASE(
    "a dispatched stream's writer writes the chunks its credit in bytes allows at once then "
    "waits for CREDIT",
    "[session][stream]") {
  const auto chunk = static_cast<std::uint32_t>(wire::chunk_cost(2));  // "c0" .. "c4"
  Fixture f(Clock::now());
  f.connect("broker-1", true);  // CHUNKs gather into BATCHes, as replies do
  std::atomic<bool> returned{false};
  std::string seen_trace;
  auto core = make_core(f.link, "svc", ServiceOptions{.workers = 1}, {},
                        {{"s", [&](const Request& r, StreamWriter& out) {
                            seen_trace = r.context.traceparent;
                            for (int i = 0; i < 5; ++i)
                              out.write("c" + std::to_string(i));
                            returned = true;
                          }}});
  Stopper stop{core};
  core->start_workers();
  add_service(f, core);
  f.turn([&] { f.feed(dispatch(7, "s", 5000, true, 3 * chunk), "in"); });
  REQUIRE(f.link.wait_for(3));
  std::this_thread::sleep_for(100ms);
  CHECK(f.link.posted() == 3);  // the caller's window is full: the writer waits
  CHECK_FALSE(returned);
  f.pump();
  int batches = 0;
  auto out = f.port.take_all(&batches);
  CHECK(kinds_of(out) == std::vector<wire::Kind>{wire::CHUNK, wire::CHUNK, wire::CHUNK});
  CHECK(chunks_of(out) == std::vector<std::string>{"c0", "c1", "c2"});
  for (const auto& w : out)
    CHECK(w.header.id() == 7);
  CHECK(batches == 1);

  f.turn([&] { f.feed(broker_credit(7, 2 * chunk)); });
  REQUIRE(f.link.wait_for(3));  // two chunks and the reply
  CHECK(wait_until(returned));
  f.pump();
  out = f.port.take_all();
  CHECK(kinds_of(out) == std::vector<wire::Kind>{wire::CHUNK, wire::CHUNK, wire::REPLY});
  REQUIRE(out.size() == 3);
  CHECK(out[0].payload == "c3");
  CHECK(out[1].payload == "c4");
  CHECK(out[2].header.id() == 7);
  CHECK(out[2].header.status() == wire::OK);
  stop();
  CHECK(seen_trace == kTraceparent);
}

TEST_CASE("SendChunk writes a CHUNK with the dispatch id unless its broker session ended",
          "[session][stream]") {
  Fixture f;
  f.connect("broker-1", true);
  f.turn([&] {
    command::Command a = command::SendChunk{7, 1, "a"};
    command::Command b = command::SendChunk{7, 1, "b"};
    command::Command stale = command::SendChunk{7, 0, "stale"};
    f.session.handle(a);
    f.session.handle(stale);
    f.session.handle(b);
  });
  int batches = 0;
  const auto out = f.port.take_all(&batches);
  CHECK(kinds_of(out) == std::vector<wire::Kind>{wire::CHUNK, wire::CHUNK});
  CHECK(chunks_of(out) == std::vector<std::string>{"a", "b"});
  CHECK(batches == 1);
  for (const auto& w : out)
    CHECK(w.header.id() == 7);
}

TEST_CASE("a small chunk is copied into the batch and its buffer left whole, a large one moved",
          "[session][stream]") {
  Fixture f;
  f.connect("broker-1", true);
  const std::string large(wire::kMaxBatchedChunk + 1, 'L');
  command::Command small_chunk = command::SendChunk{7, 1, "small"};
  command::Command large_chunk = command::SendChunk{7, 1, large};
  f.turn([&] {
    f.session.handle(small_chunk);
    f.session.handle(large_chunk);
  });
  // The driver hands the small one's buffer back to the connection to copy another into.
  CHECK(std::get<command::SendChunk>(small_chunk).payload == "small");
  CHECK(std::get<command::SendChunk>(large_chunk).payload.empty());  // moved into its frame
  const auto out = f.port.take_all();
  CHECK(chunks_of(out) == std::vector<std::string>{"small", large});
}

TEST_CASE("the broker's CANCEL of a queued call means it never runs and nothing answers it",
          "[session][cancel]") {
  Fixture f(Clock::now());
  f.connect();
  std::mutex mutex;
  std::vector<std::string> ran;
  auto core =
      make_core(f.link, "svc", ServiceOptions{.workers = 1}, {{"m", [&](const Request& r) {
                                                                 std::lock_guard lock(mutex);
                                                                 ran.emplace_back(r.payload);
                                                                 return std::string("done");
                                                               }}});
  Stopper stop{core};
  add_service(f, core);
  // The workers are not started yet: the calls wait in the queue.
  f.turn([&] { f.feed(dispatch(7, "m"), "first"); });
  f.turn([&] { f.feed(broker_cancel(7)); });
  f.turn([&] { f.feed(dispatch(8, "m"), "second"); });
  core->start_workers();
  REQUIRE(f.link.wait_for(1));  // the second's reply: the first, ahead of it, is gone
  stop();
  f.pump();
  const auto replies = f.port.take(wire::REPLY);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].header.id() == 8);
  std::lock_guard lock(mutex);
  CHECK(ran == std::vector<std::string>{"second"});
}

TEST_CASE(
    "the broker's CANCEL of a running call: its handler sees cancelled() and nothing answers it",
    "[session][cancel]") {
  Fixture f(Clock::now());
  f.connect();
  std::atomic<bool> started{false};
  std::atomic<bool> saw{false};
  std::string why;
  auto core = make_core(f.link, "svc", ServiceOptions{.workers = 1},
                        {{"m", [&](const Request& r) {
                            started = true;
                            for (auto until = Clock::now() + 5s; Clock::now() < until;) {
                              if (r.cancelled()) {
                                why = r.context.cancel.why();
                                saw = true;
                                break;
                              }
                              std::this_thread::sleep_for(1ms);
                            }
                            return std::string("dropped");
                          }}});
  Stopper stop{core};
  core->start_workers();
  add_service(f, core);
  f.turn([&] { f.feed(dispatch(7, "m")); });
  REQUIRE(wait_until(started));
  std::string message;
  SECTION("with the broker's reason") {
    message = "the caller gave up";
    f.turn([&] { f.feed(broker_cancel(7, message)); });
  }
  SECTION("without") {
    message = "cancelled by its caller";
    f.turn([&] { f.feed(broker_cancel(7)); });
  }
  stop();  // waits for the handler
  CHECK(saw);
  CHECK(why == message);
  f.pump();
  CHECK(f.port.take(wire::REPLY).empty());
}

TEST_CASE("the broker's CANCEL of a stream waiting for credit: its write throws CANCELLED",
          "[session][cancel][stream]") {
  Fixture f(Clock::now());
  f.connect();
  std::atomic<bool> threw{false};
  Status status = Status::ok;
  auto core = make_core(f.link, "svc", ServiceOptions{.workers = 1}, {},
                        {{"s", [&](const Request&, StreamWriter& out) {
                            try {
                              out.write("c0");
                              out.write("c1");
                            } catch (const Error& e) {
                              status = e.status();
                              threw = true;
                              throw;
                            }
                          }}});
  Stopper stop{core};
  core->start_workers();
  add_service(f, core);
  f.turn([&] { f.feed(dispatch(9, "s", 5000, true, 1)); });
  REQUIRE(f.link.wait_for(1));  // c0 overran the credit of 1 byte; c1 waits for credit
  f.turn([&] { f.feed(broker_cancel(9)); });
  CHECK(wait_until(threw));
  stop();
  CHECK(status == Status::cancelled);
  f.pump();
  const auto out = f.port.take_all();
  CHECK(kinds_of(out) == std::vector<wire::Kind>{wire::CHUNK});
  CHECK(chunks_of(out) == std::vector<std::string>{"c0"});
}

TEST_CASE("the broker's CANCEL or CREDIT for a call this instance does not hold changes nothing",
          "[session][cancel][stream]") {
  Fixture f;
  f.connect();
  auto core = make_core(f.link, "svc", ServiceOptions{.on_io_thread = true},
                        {{"m", [](const Request&) { return std::string("x"); }}});
  SECTION("no service") {}
  SECTION("a service") {
    add_service(f, core);
  }
  f.turn([&] {
    f.feed(broker_cancel(41));
    f.feed(broker_credit(42, 5));
    f.feed(broker_credit(43, 0));
  });
  CHECK(f.port.written.empty());
  CHECK(f.link.posted() == 0);
  CHECK(f.host.ready);
}

TEST_CASE("a plain handler called as a stream on the I/O thread answers one CHUNK then the REPLY",
          "[session][stream]") {
  Fixture f;
  f.connect();
  auto core = make_core(f.link, "svc", ServiceOptions{.on_io_thread = true},
                        {{"m", [](const Request&) { return std::string("whole"); }}});
  add_service(f, core);
  f.turn([&] { f.feed(dispatch(7, "m", 1000, true, 4)); });
  f.pump();  // what the handler handed the connection
  const auto out = f.port.take_all();
  CHECK(kinds_of(out) == std::vector<wire::Kind>{wire::CHUNK, wire::REPLY});
  CHECK(chunks_of(out) == std::vector<std::string>{"whole", ""});
}

TEST_CASE("a dispatch id a new broker session gives again names its new call for CREDIT",
          "[session][stream]") {
  Fixture f(Clock::now());
  f.connect("broker-1");
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<bool> streamed{false};
  auto core = make_core(f.link, "svc", ServiceOptions{.workers = 2},
                        {{"slow",
                          [&](const Request&) {
                            started = true;
                            (void)wait_until(release);
                            return std::string();
                          }}},
                        {{"s", [&](const Request&, StreamWriter& out) {
                            out.write("c0");
                            out.write("c1");
                            streamed = true;
                          }}});
  Stopper stop{core};
  core->start_workers();
  add_service(f, core);
  f.turn([&] { f.feed(dispatch(5, "slow")); });
  REQUIRE(wait_until(started));
  // Broker 1 is gone with call 5 still running here; broker 2 numbers its calls afresh.
  f.turn([&] { f.session.on_link_event(LinkEvent::disconnected); });
  f.connect("broker-2");
  REQUIRE(f.port.take(wire::REGISTER).size() == 1);
  f.turn([&] { f.feed(dispatch(5, "s", 1500, true, 1)); });
  REQUIRE(f.link.wait_for(1));  // c0
  f.turn([&] { f.feed(broker_credit(5, static_cast<std::uint32_t>(wire::chunk_cost(2)))); });
  CHECK(wait_until(streamed, 1s));  // the credit was for the stream, not the old call
  release = true;
  stop();
}
