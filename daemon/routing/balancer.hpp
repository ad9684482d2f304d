// Balancer: chooses the instance of one service that takes a call. Pure logic, no
// sockets and no clock, so that every strategy is unit-testable.
//
// The caller describes the service's instances as a span of InstanceLoad, always in the
// same order for as long as the membership does not change, and calls
// membership_changed() when an instance joins, leaves, or starts/stops draining.
// pick() never returns an instance that is draining, lacks the method, or already holds
// max_inflight calls.
//
// One Balancer per service, used by the broker's loop thread only; not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sagebus/wire.pb.h"

namespace sagebus::broker {

struct InstanceLoad {
  std::string_view instance_id;  // stable identity: places the instance on the hash ring
  std::uint32_t in_flight = 0;
  std::uint32_t max_inflight = 1;
  bool draining = false;
  bool has_method = true;
};

struct Pick {
  enum class Outcome {
    chosen,       // `index` takes the call
    busy,         // a live instance has the method but none may take more now: wait
    no_instance,  // the service has no live (non-draining) instance
    no_method,    // live instances exist, none has the method
  };
  Outcome outcome = Outcome::no_instance;
  std::size_t index = 0;
};

class Balancer {
 public:
  // Points each instance has on the consistent-hash ring.
  static constexpr int kVirtualNodes = 100;

  explicit Balancer(wire::Strategy strategy = wire::LEAST_OUTSTANDING) : strategy_(strategy) {}

  wire::Strategy strategy() const noexcept { return strategy_; }

  // Chooses among `instances`. `routing_key` is used by CONSISTENT_HASH only; an empty
  // key falls back to least-outstanding.
  Pick pick(std::span<const InstanceLoad> instances, std::string_view routing_key);

  // Forgets the hash ring; the next consistent-hash pick rebuilds it.
  void membership_changed() noexcept { ring_valid_ = false; }

 private:
  Pick least_outstanding_(std::span<const InstanceLoad> instances);
  Pick round_robin_(std::span<const InstanceLoad> instances);
  Pick consistent_hash_(std::span<const InstanceLoad> instances, std::string_view key);
  void rebuild_ring_(std::span<const InstanceLoad> instances);

  wire::Strategy strategy_;
  std::size_t cursor_ = 0;  // rotates ties (least-outstanding) and turns (round-robin)
  // (point, instance index), sorted by point; built from non-draining instances.
  std::vector<std::pair<std::uint64_t, std::size_t>> ring_;
  std::vector<std::string> ring_ids_;  // instance_id at each index when the ring was built
  bool ring_valid_ = false;
};

// FNV-1a 64 followed by a 64-bit finalizer (so that keys differing in one trailing byte
// still land far apart on the ring).
std::uint64_t ring_hash(std::string_view bytes) noexcept;

}  // namespace sagebus::broker
