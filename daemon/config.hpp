// BrokerConfig: every setting of sage-busd, with its default. A plain value type; main.cpp
// fills it from the command line and the Broker copies it at construction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sagebus::broker {

struct BrokerConfig {
  // tcp:// or ipc:// endpoints to bind; "tcp://127.0.0.1:*" picks a free port.
  std::vector<std::string> endpoints{"tcp://127.0.0.1:5555"};
  // Clients heartbeat this often; a client silent for heartbeat_ms * liveness loses its
  // lease and is removed as if it had disconnected.
  std::uint32_t heartbeat_ms = 1000;
  std::uint32_t liveness = 3;
  // Largest frame (header or payload) the broker accepts, set as ZMQ_MAXMSGSIZE on the
  // ROUTER. libzmq enforces it by dropping the connection of a peer that sends a larger
  // frame; the broker then removes that client as for any closed connection.
  std::uint64_t max_payload = 16 * 1024 * 1024;
  // Calls queued per service while no instance has capacity; beyond it: OVERLOADED.
  std::size_t max_waiting_per_service = 1024;
  // Calls in the whole call table (waiting + dispatched); beyond it: OVERLOADED.
  std::size_t max_calls = 100000;
  // ZMQ_SNDHWM / ZMQ_RCVHWM: messages queued per peer connection in each direction.
  int peer_queue = 10000;
  // trace | debug | info | warn | error | off
  std::string log_level = "info";
};

}  // namespace sagebus::broker
