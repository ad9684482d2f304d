// What the tests of detail::Session share (test_session.cpp, test_session_streams.cpp): a
// fake transport (it records what the session writes, and can refuse like a full socket),
// a fake host, a fake CoreLink that queues what services hand their connection (as
// Connection::post_ does) for the test to hand the session, and a clock that moves only
// when the test says.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"
#include "service_core.hpp"
#include "session/session.hpp"
#include "subscription_core.hpp"

namespace sagebus::session_test {

using namespace sagebus::detail;
using namespace std::chrono_literals;

struct Written {
  wire::Header header;
  std::string payload;
};

// The transport: what the session wrote, in order. While `full`, it refuses everything.
class FakePort final : public Port {
 public:
  bool write(zmq::message_t& header, zmq::message_t* payload) override {
    if (full) return false;
    Written w;
    REQUIRE(wire::decode(header, w.header) == wire::DecodeResult::ok);
    if (payload) w.payload = payload->to_string();
    written.push_back(std::move(w));
    return true;
  }
  // Every message written since the last take, in order, with the records of a BATCH in
  // its place; `batches` counts the BATCHes.
  std::vector<Written> take_all(int* batches = nullptr) {
    std::vector<Written> out;
    for (auto& w : written) {
      if (w.header.kind() != wire::BATCH) {
        out.push_back(std::move(w));
        continue;
      }
      if (batches != nullptr) ++*batches;
      wire::BatchReader reader(w.payload.data(), w.payload.size());
      for (wire::MessageRecord r; reader.next(r);) {
        Written record;
        REQUIRE(wire::decode(r.header.data(), r.header.size(), record.header) ==
                wire::DecodeResult::ok);
        record.payload = std::string(r.payload);
        out.push_back(std::move(record));
      }
      REQUIRE_FALSE(reader.malformed());
    }
    written.clear();
    return out;
  }
  // The messages of `kind` written since the last take, in order, alone or as records of
  // a BATCH; the rest are dropped. `batches` counts the BATCHes that held any.
  std::vector<Written> take(wire::Kind kind, int* batches = nullptr) {
    std::vector<Written> out;
    for (auto& w : written) {
      if (w.header.kind() == kind) out.push_back(std::move(w));
      if (w.header.kind() != wire::BATCH) continue;
      bool held = false;
      wire::BatchReader reader(w.payload.data(), w.payload.size());
      for (wire::MessageRecord r; reader.next(r);) {
        Written record;
        REQUIRE(wire::decode(r.header.data(), r.header.size(), record.header) ==
                wire::DecodeResult::ok);
        record.payload = std::string(r.payload);
        if (record.header.kind() != kind) continue;
        out.push_back(std::move(record));
        held = true;
      }
      REQUIRE_FALSE(reader.malformed());
      if (held && batches != nullptr) ++*batches;
    }
    written.clear();
    return out;
  }
  bool full = false;
  std::vector<Written> written;
};

class FakeHost final : public SessionHost {
 public:
  void link_changed(bool is_ready, std::optional<Error> why) override {
    ready = is_ready;
    error = std::move(why);
  }
  void max_payload_changed(std::uint64_t) override {}
  bool offer_to_inbox(Message message) override {
    inbox.push_back(std::move(message));
    return true;
  }
  bool reads_inbox() const override { return !inbox.empty(); }
  void publishes_sent(std::size_t count) override { published += count; }
  void late_reply() override { ++late; }
  bool ready = false;
  std::optional<Error> error;  // what the last change said, when not ready
  std::vector<Message> inbox;
  std::size_t published = 0;
  int late = 0;
};

// What services and subscriptions ask of their connection. Replies and chunks are queued
// as the commands Connection would post (Fixture::pump hands them to the session); the
// rest is not acted on. Service workers call it from their threads.
class FakeLink final : public CoreLink {
 public:
  void unregister_service(const std::string&) override {}
  void remove_service(const std::string&) override {}
  void send_reply(std::uint64_t id, std::uint64_t epoch, Status status, std::string message,
                  std::string payload) override {
    post(command::SendReply{id, epoch, status, std::move(message), std::move(payload)});
  }
  void send_chunk(std::uint64_t id, std::uint64_t epoch, std::string_view chunk) override {
    post(command::SendChunk{id, epoch, std::string(chunk)});
  }
  std::uint64_t max_payload() const override { return kDefaultMaxPayload; }
  void remove_subscription(std::shared_ptr<SubscriptionCore>) override {}
  void return_credit(std::shared_ptr<SubscriptionCore>, std::uint32_t) override {}

  // The commands posted since the last take, in order.
  std::vector<command::Command> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(commands_, {});
  }
  // How many are waiting to be taken.
  std::size_t posted() const {
    std::lock_guard lock(mutex_);
    return commands_.size();
  }
  // Waits until at least `count` are waiting to be taken; false if that takes `timeout`.
  bool wait_for(std::size_t count, std::chrono::milliseconds timeout = 5s) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return commands_.size() >= count; });
  }

 private:
  void post(command::Command c) {
    {
      std::lock_guard lock(mutex_);
      commands_.push_back(std::move(c));
    }
    cv_.notify_all();
  }
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<command::Command> commands_;
};

inline std::shared_ptr<ServiceCore> make_core(CoreLink& link, const std::string& name,
                                              ServiceOptions options,
                                              std::map<std::string, Handler> handlers,
                                              std::map<std::string, StreamHandler> streams = {}) {
  return std::make_shared<ServiceCore>(link, name, std::move(options), std::move(handlers),
                                       std::move(streams));
}

// A request's control as the session sees it, recording the chunks it is given.
struct FakeControl final : CallControl {
  void on_chunk(const wire::Header& header, std::string_view chunk) override {
    (void)header;
    chunks.emplace_back(chunk);
  }
  std::vector<std::string> chunks;
};

// A session, its fakes, and the test's clock (from `start`: an arbitrary time by default;
// tests whose service handlers wait on their deadline start at Clock::now()).
struct Fixture {
  explicit Fixture(Clock::time_point start = Clock::time_point{} + 1000h) : now(start) {}

  ClientOptions options{.endpoint = "tcp://127.0.0.1:1", .name = "tester"};
  FakePort port;
  FakeHost host;
  FakeLink link;
  Clock::time_point now;
  Session session{options, port, host, now};

  // Outcomes of the requests start() made, by the order they were made.
  std::vector<std::optional<Outcome>> outcomes;
  std::vector<int> ends;  // how many outcomes each request had

  // A turn at the current time in which `act` happens.
  template <class Act>
  void turn(const Act& act) {
    session.begin_turn(now);
    act();
    session.end_of_input();
    session.end_turn(now);
  }
  void feed(wire::Header header, std::optional<std::string> payload = {}) {
    const zmq::message_t frame = wire::encode(header);
    std::vector<zmq::message_t> frames;
    if (payload) frames.emplace_back(payload->data(), payload->size());
    session.advance(now);
    session.on_message(frame, frames);
  }
  // A command, in a turn of its own.
  void handle(command::Command c) {
    turn([&] { session.handle(c); });
  }
  // Hands the session, in one turn, what services posted to the link.
  void pump() {
    turn([&] {
      for (auto& c : link.take())
        session.handle(c);
    });
  }
  // The transport connects; the broker welcomes the HELLO with `broker_session`, saying it
  // reads BATCHes if `batches`.
  void connect(const std::string& broker_session = "broker-1", bool batches = false) {
    turn([&] { session.on_link_event(LinkEvent::connected); });
    auto hellos = port.take(wire::HELLO);  // one, or more after a GOODBYE
    REQUIRE(!hellos.empty());
    welcome(hellos.back().header.id(), broker_session, batches);
  }
  void welcome(std::uint64_t hello_id, const std::string& broker_session, bool batches = false) {
    wire::Header w;
    w.set_kind(wire::WELCOME);
    w.set_id(hello_id);
    w.mutable_welcome()->set_batches(batches);
    w.mutable_welcome()->set_broker_session(broker_session);
    w.mutable_welcome()->set_heartbeat_ms(60000);
    w.mutable_welcome()->set_liveness(3);
    turn([&] { feed(w); });
    REQUIRE(host.ready);
  }
  // Starts `spec`; returns its index in outcomes. `more`: as from a callback, with others
  // to follow (Session::start).
  std::size_t start(RequestSpec spec, bool more = false) {
    const std::size_t index = outcomes.size();
    outcomes.emplace_back();
    ends.push_back(0);
    command::Start start;
    start.spec = std::move(spec);
    start.spec.asked = now;
    start.done = Done([this, index](Outcome o) {
      outcomes[index] = std::move(o);
      ++ends[index];
    });
    session.advance(now);
    session.start(start, more);
    return index;
  }
  static RequestSpec spec_of(const std::string& method, std::chrono::milliseconds timeout = 1s,
                             bool wait_for_ready = false) {
    RequestSpec spec;
    spec.kind = wire::REQUEST;
    spec.service = "svc";
    spec.method = method;
    spec.options.timeout = timeout;
    spec.options.wait_for_ready = wait_for_ready;
    return spec;
  }
  // Starts a call of `method` on service "svc"; returns its index in outcomes.
  std::size_t call(const std::string& method, std::chrono::milliseconds timeout = 1s,
                   bool wait_for_ready = false, bool more = false) {
    return start(spec_of(method, timeout, wait_for_ready), more);
  }
  // The call at `index`, sent as `id`, is answered `payload` and has it as its outcome.
  void check_answered(std::size_t index, std::uint64_t id, const std::string& payload) {
    reply(id, wire::OK, payload);
    REQUIRE(outcomes[index]);
    CHECK(outcomes[index]->payload == payload);
  }
  void reply(std::uint64_t id, wire::Status status, const std::string& payload) {
    wire::Header r;
    r.set_kind(wire::REPLY);
    r.set_id(id);
    r.set_status(status);
    turn([&] { feed(r, payload); });
  }
};

// `sent` are the calls of methods m0, m1, ... in that order.
inline void check_in_order(const std::vector<Written>& sent, std::size_t count) {
  REQUIRE(sent.size() == count);
  for (std::size_t i = 0; i < count; ++i)
    CHECK(sent[i].header.method() == "m" + std::to_string(i));
}

}  // namespace sagebus::session_test
