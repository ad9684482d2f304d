// ConnectionMonitor: tells the broker when a connection to its ROUTER opens or closes,
// using the ZeroMQ socket monitor (zmq_socket_monitor + an inproc PAIR socket).
// Connections are known by their file descriptor, which the broker maps to the routing
// id of the client that said HELLO on it.
//
// Owned and used by the broker's loop thread only (like every socket); not thread safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace sagebus::broker {

struct ConnectionEvent {
  enum class Kind { accepted, disconnected };
  Kind kind;
  int fd;
  std::string endpoint;
};

class ConnectionMonitor {
 public:
  // Starts monitoring `router`; throws zmq::error_t when the monitor cannot be set up.
  ConnectionMonitor(zmq::context_t& context, zmq::socket_t& router);
  // Stops the monitor before the PAIR socket closes.
  ~ConnectionMonitor();
  ConnectionMonitor(const ConnectionMonitor&) = delete;
  ConnectionMonitor& operator=(const ConnectionMonitor&) = delete;

  // For zmq::poll.
  zmq::socket_ref socket() noexcept { return pair_; }

  // Reads every event queued now, without blocking, oldest first.
  std::vector<ConnectionEvent> drain();

 private:
  zmq::socket_t& router_;
  zmq::socket_t pair_;
};

}  // namespace sagebus::broker
