#include "routing/balancer.hpp"

#include <algorithm>
#include <limits>

namespace sagebus::broker {

namespace {

bool usable(const InstanceLoad& i) {
  return !i.draining && i.has_method;
}
bool has_room(const InstanceLoad& i) {
  return usable(i) && i.in_flight < i.max_inflight;
}

// Why nothing was chosen, once no usable instance had room.
Pick nothing_free(std::span<const InstanceLoad> instances) {
  bool live = false;
  for (const auto& i : instances) {
    if (i.draining) continue;
    live = true;
    if (i.has_method) return {Pick::Outcome::busy, 0};
  }
  return {live ? Pick::Outcome::no_method : Pick::Outcome::no_instance, 0};
}

}  // namespace

std::uint64_t ring_hash(std::string_view bytes) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  // murmur3 fmix64
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

Pick Balancer::pick(std::span<const InstanceLoad> instances, std::string_view routing_key) {
  switch (strategy_) {
    case wire::ROUND_ROBIN:
      return round_robin_(instances);
    case wire::CONSISTENT_HASH:
      if (!routing_key.empty()) return consistent_hash_(instances, routing_key);
      return least_outstanding_(instances);
    default:
      return least_outstanding_(instances);
  }
}

Pick Balancer::least_outstanding_(std::span<const InstanceLoad> instances) {
  const std::size_t n = instances.size();
  std::size_t best = n;
  std::uint32_t best_load = std::numeric_limits<std::uint32_t>::max();
  // Scanning from the cursor makes the first of several equally loaded instances a
  // different one each time, so sequential calls to idle instances spread evenly.
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (cursor_ + k) % n;
    if (has_room(instances[i]) && instances[i].in_flight < best_load) {
      best = i;
      best_load = instances[i].in_flight;
    }
  }
  if (best == n) return nothing_free(instances);
  cursor_ = best + 1;
  return {Pick::Outcome::chosen, best};
}

Pick Balancer::round_robin_(std::span<const InstanceLoad> instances) {
  const std::size_t n = instances.size();
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (cursor_ + k) % n;
    if (has_room(instances[i])) {
      cursor_ = i + 1;
      return {Pick::Outcome::chosen, i};
    }
  }
  return nothing_free(instances);
}

void Balancer::rebuild_ring_(std::span<const InstanceLoad> instances) {
  ring_.clear();
  ring_ids_.clear();
  for (std::size_t i = 0; i < instances.size(); ++i) {
    ring_ids_.emplace_back(instances[i].instance_id);
    if (instances[i].draining) continue;
    std::string point(instances[i].instance_id);
    point += '#';
    const std::size_t prefix = point.size();
    for (int v = 0; v < kVirtualNodes; ++v) {
      point.resize(prefix);
      point += std::to_string(v);
      ring_.emplace_back(ring_hash(point), i);
    }
  }
  std::sort(ring_.begin(), ring_.end());
  ring_valid_ = true;
}

Pick Balancer::consistent_hash_(std::span<const InstanceLoad> instances, std::string_view key) {
  // The ring is rebuilt on membership changes only; the id check is a cheap guard against
  // a caller that forgot to say so.
  bool stale = !ring_valid_ || ring_ids_.size() != instances.size();
  for (std::size_t i = 0; !stale && i < instances.size(); ++i)
    stale = ring_ids_[i] != instances[i].instance_id;
  if (stale) rebuild_ring_(instances);
  if (ring_.empty()) return nothing_free(instances);

  // The owner is the first instance clockwise from the key that has the method: instances
  // without it do not own keys for it. An owner at capacity makes the call wait for it.
  const std::uint64_t h = ring_hash(key);
  auto it =
      std::lower_bound(ring_.begin(), ring_.end(), std::pair<std::uint64_t, std::size_t>{h, 0});
  for (std::size_t step = 0; step < ring_.size(); ++step, ++it) {
    if (it == ring_.end()) it = ring_.begin();
    const InstanceLoad& owner = instances[it->second];
    if (!usable(owner)) continue;
    if (owner.in_flight < owner.max_inflight) return {Pick::Outcome::chosen, it->second};
    return {Pick::Outcome::busy, it->second};
  }
  return nothing_free(instances);
}

}  // namespace sagebus::broker
