// Limits: every bound of the broker that can refuse something, named by its config key.
// One enum, so that every refusal is counted the same way (Metrics::refused, rendered as
// sagebus_limit_refusals_total{limit="KEY"}) and every configured value is reported the
// same way (sagebus_limit{limit="KEY"}, and the status reply's `limits`).
//
// What each one refuses, and how (docs/operations.md, "Limits", has the table):
// OVERLOADED for the capacity limits, INVALID_ARGUMENT for max-payload, a counted drop
// for what cannot be answered (an oversized header, an event for a full subscriber).
//
// Plain values and functions; thread safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sagebus::broker {

struct BrokerConfig;

enum class Limit : std::size_t {
  max_payload,
  max_header,
  max_clients,
  max_calls,
  max_calls_per_client,
  max_waiting,
  peer_queue,
  max_subscriptions,
  max_held,
  max_queue_depth,
  max_queues,
  max_queue_waiters,
  max_unacked,
};

inline constexpr std::size_t kLimitCount = static_cast<std::size_t>(Limit::max_unacked) + 1;

// Every limit, in the order they are reported.
inline constexpr std::array<Limit, kLimitCount> kLimits{
    Limit::max_payload,     Limit::max_header,           Limit::max_clients,
    Limit::max_calls,       Limit::max_calls_per_client, Limit::max_waiting,
    Limit::peer_queue,      Limit::max_subscriptions,    Limit::max_held,
    Limit::max_queue_depth, Limit::max_queues,           Limit::max_queue_waiters,
    Limit::max_unacked};

// The limit's config key ("max-calls-per-client").
std::string_view limit_key(Limit limit);

// The limit's value in `config`.
std::uint64_t limit_value(const BrokerConfig& config, Limit limit);

// The largest frame libzmq lets in (ZMQ_MAXMSGSIZE): twice the larger of max-payload and
// max-header, so that a message a little over either is read and refused with an answer;
// a peer that sends a larger frame is disconnected by libzmq.
std::uint64_t frame_limit(const BrokerConfig& config);

}  // namespace sagebus::broker
