// BrokerConfig: every setting of sage-busd, with its default. A plain value type; main.cpp
// fills it from the command line and the Broker copies it at construction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
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
  // Also what bounds the events queued for one subscriber: beyond it they are dropped.
  int peer_queue = 10000;
  // Subscriptions per connection; beyond it SUBSCRIBE is answered OVERLOADED.
  std::size_t max_subscriptions_per_client = 1000;
  // Point-to-point messages held per peer name while that peer is not connected; beyond
  // it SEND is answered OVERLOADED.
  std::size_t max_held_per_peer = 100;
  // Items per legacy queue before puts wait for room.
  std::size_t max_queue_depth = 10000;
  // Legacy queues the broker keeps; an idle one is forgotten to make room for a new one.
  std::size_t max_queues = 10000;
  // Legacy queue name -> topic its items are published on (default: "legacy.<name>").
  std::map<std::string, std::string, std::less<>> queue_topics;
  // trace | debug | info | warn | error | off
  std::string log_level = "info";
};

}  // namespace sagebus::broker
