// The drain half of the Broker: what happens between the first stop signal and the
// shutdown. New calls, sends and queue operations are answered UNAVAILABLE; calls
// already accepted (dispatched, or waiting for capacity) may finish until
// drain_timeout_ms; a second stop signal cuts the drain short. Admin calls ("$broker")
// are still answered, so that busctl and /healthz can see the drain.
#include <csignal>

#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "operations/notify.hpp"
#include "sagebus/wire/frame.hpp"

namespace sagebus::broker {

namespace {

std::string signal_name(int signal) {
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGINT) return "SIGINT";
  return signal > 0 ? "signal " + std::to_string(signal) : "a stop request";
}

}  // namespace

std::size_t Broker::calls_in_flight_() const {
  // Held sends wait for a peer that may never come; they are not worth waiting for.
  std::size_t n = 0;
  calls_.for_each([&](const Call& call) {
    if (call.outcome_claimed()) return;
    if (call.kind == CallKind::send && call.state == CallState::waiting) return;
    ++n;
  });
  // Store writes in flight: their answers (a put's OK) come when they are committed.
  return n + tickets_.size();
}

void Broker::start_drain_(int signal) {
  draining_ = true;
  drain_started_ = now_;
  drain_deadline_ = now_ + std::chrono::milliseconds(config_.drain_timeout_ms);
  const std::size_t in_flight = calls_in_flight_();
  spdlog::info(
      "draining on {}: {} calls in flight may finish within {} ms; new calls, sends and queue "
      "operations are answered UNAVAILABLE (a second SIGTERM or SIGINT stops at once)",
      signal_name(signal), in_flight, config_.drain_timeout_ms);
  notify_stopping("draining " + std::to_string(in_flight) + " calls");
}

bool Broker::drain_over_(bool cut_short) {
  const std::size_t left = calls_in_flight_();
  const auto took = millis_between(drain_started_, now_);
  if (left == 0) {
    spdlog::info("drained in {} ms: no call left in flight; {} new requests refused meanwhile",
                 took, metrics_.refused_draining);
    return true;
  }
  if (cut_short) {
    spdlog::warn(
        "drain cut short after {} ms by a second stop signal: {} calls still in flight will be "
        "answered UNAVAILABLE; {} new requests refused meanwhile",
        took, left, metrics_.refused_draining);
    shutdown_reason_ = "sage-busd is shutting down (stopped before the call finished)";
    return true;
  }
  if (now_ >= drain_deadline_) {
    spdlog::warn(
        "drain timed out after {} ms: {} calls still in flight will be answered UNAVAILABLE; "
        "{} new requests refused meanwhile",
        took, left, metrics_.refused_draining);
    shutdown_reason_ =
        "sage-busd is shutting down: the call did not finish within its drain "
        "timeout (" +
        std::to_string(config_.drain_timeout_ms) + " ms)";
    return true;
  }
  return false;
}

bool Broker::refuse_while_draining_(const RoutingId& from, const KindRow& row) {
  switch (row.draining) {
    case Draining::taken:
      return false;
    case Draining::admin_only:
      if (in_.service() == wire::kBrokerService) return false;
      break;
    case Draining::refused:
      break;
  }
  ++metrics_.refused_draining;
  refuse_(from, wire::UNAVAILABLE, row.draining_refusal);
  return true;
}

}  // namespace sagebus::broker
