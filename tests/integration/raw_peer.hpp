// RawPeer: a raw ZeroMQ DEALER connection to the broker, for tests that send what no SDK
// would (hostile input) or look at the wire itself (batches): whatever frames the test
// wants, and what comes back, with timeouts. A failed expectation is a Catch2 failure.
// Not thread safe: use from the test's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include "harness.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/frame.hpp"

namespace sagebus::test {

class RawPeer {
 public:
  explicit RawPeer(const std::string& endpoint) : RawPeer(endpoint, [](zmq::socket_t&) {}) {}
  // `configure` sets options on the socket before it connects (CURVE keys).
  RawPeer(const std::string& endpoint, const std::function<void(zmq::socket_t&)>& configure)
      : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    configure(socket_);
    socket_.connect(endpoint);
  }

  void send_frames(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i)
      socket_.send(zmq::buffer(frames[i]),
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  // Sends `header` (version stamped by encode) and `payload` frames; returns header.id().
  std::uint64_t send(wire::Header header, const std::vector<std::string>& payload = {}) {
    if (header.id() == 0) header.set_id(++next_id_);
    const zmq::message_t frame = wire::encode(header);
    std::vector<std::string> frames{frame.to_string()};
    frames.insert(frames.end(), payload.begin(), payload.end());
    send_frames(frames);
    return header.id();
  }

  // The next message's header, or nothing within `timeout`.
  std::optional<wire::Header> receive(std::chrono::milliseconds timeout = 5s) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    for (bool more = true; more;) {
      zmq::message_t part;
      (void)socket_.recv(part);
      more = part.more();
      frames.push_back(std::move(part));
    }
    wire::Header h;
    REQUIRE(wire::decode(frames.front(), h) == wire::DecodeResult::ok);
    payload_.clear();
    for (std::size_t i = 1; i < frames.size(); ++i)
      payload_.push_back(frames[i].to_string());
    return h;
  }
  // The next message of kind `kind` with id `id`, skipping others.
  std::optional<wire::Header> answer(wire::Kind kind, std::uint64_t id,
                                     std::chrono::milliseconds timeout = 5s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      auto h = receive(std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now()));
      if (!h) break;
      if (h->kind() == kind && h->id() == id) return h;
    }
    return std::nullopt;
  }
  std::optional<wire::Header> reply_to(std::uint64_t id) { return answer(wire::REPLY, id); }

  // Says HELLO as `name` (reading EVENT_BATCH if `event_batches`, BATCH if
  // `batches`); true once WELCOMEd.
  bool hello(const std::string& name, bool event_batches = false, bool batches = false) {
    wire::Header h;
    h.set_kind(wire::HELLO);
    h.mutable_hello()->set_name(name);
    h.mutable_hello()->set_instance_id("raw-" + name);
    h.mutable_hello()->set_event_batches(event_batches);
    h.mutable_hello()->set_batches(batches);
    return answer(wire::WELCOME, send(h)).has_value();
  }
  // A HEARTBEAT and its answer. The broker handles one connection's messages in order, so
  // when this returns true, every message sent before it has been handled, and anything
  // the broker sent for them has been received first (and skipped, unless counted here).
  bool sync(int* other_messages = nullptr) {
    wire::Header h;
    h.set_kind(wire::HEARTBEAT);
    const std::uint64_t id = send(h);
    for (;;) {
      auto got = receive();
      if (!got) return false;
      if (got->kind() == wire::HEARTBEAT && got->id() == id) return true;
      if (other_messages != nullptr) ++*other_messages;
    }
  }
  const std::vector<std::string>& payload() const { return payload_; }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::uint64_t next_id_ = 0;
  std::vector<std::string> payload_;
};

// A header of kind `kind`, for the test to fill in.
inline wire::Header header(wire::Kind kind) {
  wire::Header h;
  h.set_kind(kind);
  return h;
}

}  // namespace sagebus::test
