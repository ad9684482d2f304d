// FakeBroker: a broker played by the test, for the SDK's faults and edges that the real
// broker cannot be made to show on demand (which messages it "forgot", a reply exactly
// when the test chooses). A ROUTER socket on a free loopback port; not thread safe: drive
// it from the test's thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include "harness.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"

namespace sagebus::test {

// A message as the fake broker received it.
struct Received {
  std::string from;  // routing id
  wire::Header header;
  std::string payload;
};

// A broker played by the test: it answers HEARTBEATs (those that want an answer) and
// otherwise does only what the test tells it.
class FakeBroker {
 public:
  FakeBroker() : router_(context_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  const std::string& endpoint() const { return endpoint_; }

  // The next message of `kind`, waiting up to `timeout`; other kinds are dropped.
  std::optional<Received> expect(wire::Kind kind, std::chrono::milliseconds timeout = 5s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(10));
      if ((item.revents & ZMQ_POLLIN) == 0) continue;
      std::vector<zmq::message_t> frames;
      for (bool more = true; more;) {
        frames.emplace_back();
        (void)router_.recv(frames.back());
        more = frames.back().more();
      }
      Received r;
      r.from = frames[0].to_string();
      if (frames.size() < 2 || wire::decode(frames[1], r.header) != wire::DecodeResult::ok)
        continue;
      if (frames.size() > 2) r.payload = frames[2].to_string();
      if (r.header.kind() == wire::HELLO) ++hellos_;
      if (r.header.kind() == wire::HEARTBEAT && !r.header.no_answer()) {
        wire::Header beat;
        beat.set_kind(wire::HEARTBEAT);
        beat.set_id(r.header.id());
        send(r.from, beat);
      }
      if (r.header.kind() == kind) return r;
    }
    return std::nullopt;
  }

  void send(const std::string& to, wire::Header header, std::optional<std::string> payload = {}) {
    router_.send(zmq::buffer(to), zmq::send_flags::sndmore);
    router_.send(wire::encode(header), payload ? zmq::send_flags::sndmore : zmq::send_flags::none);
    if (payload) router_.send(zmq::buffer(*payload), zmq::send_flags::none);
  }

  // Answers the next HELLO with a WELCOME of session `session`; the heartbeat defaults to
  // a minute, for no heartbeat traffic, and no idle heartbeat is offered.
  std::string welcome(const std::string& session = "fake-session",
                      std::uint32_t heartbeat_ms = 60000, std::uint32_t liveness = 3,
                      std::uint32_t idle_heartbeat_ms = 0) {
    auto hello = expect(wire::HELLO);
    REQUIRE(hello);
    wire::Header w;
    w.set_kind(wire::WELCOME);
    w.set_id(hello->header.id());
    w.mutable_welcome()->set_broker_session(session);
    w.mutable_welcome()->set_heartbeat_ms(heartbeat_ms);
    w.mutable_welcome()->set_liveness(liveness);
    w.mutable_welcome()->set_idle_heartbeat_ms(idle_heartbeat_ms);
    w.mutable_welcome()->set_batches(offer_batches);
    if (share_host) w.mutable_welcome()->set_host(wire::host_id());
    send(hello->from, w);
    return hello->from;
  }

  void reply(const std::string& to, std::uint64_t id, wire::Status status,
             std::optional<std::string> payload = {}) {
    wire::Header r;
    r.set_kind(wire::REPLY);
    r.set_id(id);
    r.set_status(status);
    send(to, r, std::move(payload));
  }

  void hello_required(const std::string& to, std::uint64_t id) {
    wire::Header h;
    h.set_kind(wire::HELLO_REQUIRED);
    h.set_id(id);
    send(to, h);
  }

  // HELLOs seen by expect() so far.
  int hellos() const { return hellos_; }

  // Whether welcome() says this broker reads BATCH.
  bool offer_batches = false;
  // Whether welcome() names this host's boot id (the client then sends deadline_us).
  bool share_host = false;

 private:
  zmq::context_t context_{1};
  zmq::socket_t router_;
  std::string endpoint_;
  int hellos_ = 0;
};

}  // namespace sagebus::test
