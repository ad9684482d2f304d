// What a detail::Session (session.hpp) writes to and tells: the transport it writes its
// messages to (Port), and the rest of the client (SessionHost, which detail::Connection
// is). Both are called on the thread that feeds the session, and must not block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include <zmq.hpp>

#include "sagebus/status.hpp"
#include "sagebus/subscription.hpp"

namespace sagebus::detail {

// Where the session's messages go: the driver's DEALER socket, or a test's recorder.
class Port {
 public:
  // Hands one message (its header frame, then its payload frame if any) to the transport
  // without waiting. False, with nothing taken, when the transport's queue is full; the
  // frames are emptied once taken.
  virtual bool write(zmq::message_t& header, zmq::message_t* payload) = 0;

 protected:
  ~Port() = default;
};

// What the session tells the rest of the client (detail::Connection, for user threads).
class SessionHost {
 public:
  // The link became ready (welcomed), or not; `error` says why it is failing, if it is.
  virtual void link_changed(bool ready, std::optional<Error> error) = 0;
  // The broker's max-payload, from a WELCOME.
  virtual void max_payload_changed(std::uint64_t max_payload) = 0;
  // A point-to-point message arrived; false when the inbox is full.
  virtual bool offer_to_inbox(Message message) = 0;
  // receive() was called or a message offered: items taken here may wait on this
  // connection's loss (leases.cpp).
  virtual bool reads_inbox() const = 0;
  // `count` unconfirmed publishes left for the broker (their slots free up).
  virtual void publishes_sent(std::size_t count) = 0;
  // A service's reply came after its call's deadline and was dropped.
  virtual void late_reply() = 0;

 protected:
  ~SessionHost() = default;
};

// What the transport says about the connection to the broker (ZeroMQ's socket monitor).
// The last three end a handshake that failed; a disconnect follows them.
enum class LinkEvent {
  connected,
  connect_failed,
  disconnected,
  key_refused,         // the broker's authenticator refused this client's key
  handshake_failed,    // no detail: with CURVE, most likely the wrong server key
  mechanism_mismatch,  // one side uses CURVE, the other does not
};

}  // namespace sagebus::detail
