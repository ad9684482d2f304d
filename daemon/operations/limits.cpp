#include "operations/limits.hpp"

#include <algorithm>

#include "operations/config.hpp"

namespace sagebus::broker {

std::string_view limit_key(Limit limit) {
  switch (limit) {
    case Limit::max_payload:
      return "max-payload";
    case Limit::max_header:
      return "max-header";
    case Limit::max_clients:
      return "max-clients";
    case Limit::max_calls:
      return "max-calls";
    case Limit::max_calls_per_client:
      return "max-calls-per-client";
    case Limit::max_waiting:
      return "max-waiting";
    case Limit::peer_queue:
      return "peer-queue";
    case Limit::max_subscriptions:
      return "max-subscriptions";
    case Limit::max_held:
      return "max-held";
    case Limit::max_queue_depth:
      return "max-queue-depth";
    case Limit::max_queues:
      return "max-queues";
    case Limit::max_queue_waiters:
      return "max-queue-waiters";
    case Limit::max_unacked:
      return "max-unacked";
  }
  return "unknown";
}

std::uint64_t limit_value(const BrokerConfig& c, Limit limit) {
  switch (limit) {
    case Limit::max_payload:
      return c.max_payload;
    case Limit::max_header:
      return c.max_header;
    case Limit::max_clients:
      return c.max_clients;
    case Limit::max_calls:
      return c.max_calls;
    case Limit::max_calls_per_client:
      return c.max_calls_per_client;
    case Limit::max_waiting:
      return c.max_waiting_per_service;
    case Limit::peer_queue:
      return static_cast<std::uint64_t>(c.peer_queue);
    case Limit::max_subscriptions:
      return c.max_subscriptions_per_client;
    case Limit::max_held:
      return c.max_held_per_peer;
    case Limit::max_queue_depth:
      return c.max_queue_depth;
    case Limit::max_queues:
      return c.max_queues;
    case Limit::max_queue_waiters:
      return c.max_queue_waiters;
    case Limit::max_unacked:
      return c.max_unacked;
  }
  return 0;
}

std::uint64_t frame_limit(const BrokerConfig& c) {
  return 2 * std::max<std::uint64_t>(c.max_payload, c.max_header);
}

}  // namespace sagebus::broker
