// The balancer: which instance takes a call, for each strategy, and when a call waits.
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "routing/balancer.hpp"

using namespace sagebus;
using namespace sagebus::broker;
using Outcome = Pick::Outcome;

namespace {

std::vector<std::string> ids_ = {"inst-a", "inst-b", "inst-c", "inst-d", "inst-e", "inst-f"};

std::vector<InstanceLoad> idle(std::size_t n, std::uint32_t max_inflight = 4) {
  std::vector<InstanceLoad> v;
  for (std::size_t i = 0; i < n; ++i)
    v.push_back({ids_[i], 0, max_inflight, false, true});
  return v;
}

// Picks `calls` times, counting each pick as a call that stays in flight.
std::map<std::size_t, int> run_calls(Balancer& b, std::vector<InstanceLoad>& loads, int calls,
                                     bool complete_each = false) {
  std::map<std::size_t, int> per_instance;
  for (int k = 0; k < calls; ++k) {
    const Pick p = b.pick(loads, {});
    if (p.outcome != Outcome::chosen) break;
    ++per_instance[p.index];
    if (!complete_each) ++loads[p.index].in_flight;
  }
  return per_instance;
}

std::string key(int i) {
  return "user-" + std::to_string(i);
}

}  // namespace

TEST_CASE("least-outstanding picks the instance with the fewest calls in flight", "[balancer]") {
  Balancer b;
  auto loads = idle(3);
  loads[0].in_flight = 3;
  loads[1].in_flight = 1;
  loads[2].in_flight = 2;
  const Pick p = b.pick(loads, {});
  CHECK(p.outcome == Outcome::chosen);
  CHECK(p.index == 1);
}

TEST_CASE("least-outstanding spreads sequential calls to idle instances evenly", "[balancer]") {
  Balancer b;
  auto loads = idle(4);
  // Each call completes before the next: every instance is always idle.
  const auto counts = run_calls(b, loads, 400, /*complete_each=*/true);
  REQUIRE(counts.size() == 4);
  for (const auto& [index, n] : counts)
    CHECK(n == 100);
}

TEST_CASE("least-outstanding never gives an instance more than its max_inflight", "[balancer]") {
  Balancer b;
  auto loads = idle(3, 2);
  loads[1].max_inflight = 1;
  const auto counts = run_calls(b, loads, 100);
  CHECK(counts.at(0) == 2);
  CHECK(counts.at(1) == 1);
  CHECK(counts.at(2) == 2);
  for (const auto& l : loads)
    CHECK(l.in_flight <= l.max_inflight);
  CHECK(b.pick(loads, {}).outcome == Outcome::busy);
}

TEST_CASE("a draining instance is never chosen", "[balancer]") {
  for (auto strategy : {wire::LEAST_OUTSTANDING, wire::ROUND_ROBIN, wire::CONSISTENT_HASH}) {
    INFO(wire::Strategy_Name(strategy));
    Balancer b(strategy);
    auto loads = idle(3);
    loads[1].draining = true;
    for (int k = 0; k < 300; ++k) {
      const Pick p = b.pick(loads, key(k));
      REQUIRE(p.outcome == Outcome::chosen);
      CHECK(p.index != 1);
    }
  }
}

TEST_CASE("only instances that have the method are chosen", "[balancer]") {
  for (auto strategy : {wire::LEAST_OUTSTANDING, wire::ROUND_ROBIN, wire::CONSISTENT_HASH}) {
    INFO(wire::Strategy_Name(strategy));
    Balancer b(strategy);
    auto loads = idle(3);
    loads[0].has_method = false;
    loads[2].has_method = false;
    for (int k = 0; k < 50; ++k) {
      const Pick p = b.pick(loads, key(k));
      REQUIRE(p.outcome == Outcome::chosen);
      CHECK(p.index == 1);
    }
  }
}

TEST_CASE("no live instance and no instance with the method are told apart", "[balancer]") {
  Balancer b;
  CHECK(b.pick({}, {}).outcome == Outcome::no_instance);
  auto loads = idle(2);
  loads[0].draining = true;
  loads[1].draining = true;
  CHECK(b.pick(loads, {}).outcome == Outcome::no_instance);
  loads = idle(2);
  loads[0].has_method = false;
  loads[1].has_method = false;
  CHECK(b.pick(loads, {}).outcome == Outcome::no_method);
}

TEST_CASE("round-robin takes instances in turn and skips the full ones", "[balancer]") {
  Balancer b(wire::ROUND_ROBIN);
  auto loads = idle(3);
  std::vector<std::size_t> order;
  for (int k = 0; k < 6; ++k)
    order.push_back(b.pick(loads, {}).index);
  CHECK(order == std::vector<std::size_t>{0, 1, 2, 0, 1, 2});

  loads[1].in_flight = loads[1].max_inflight;
  order.clear();
  for (int k = 0; k < 4; ++k)
    order.push_back(b.pick(loads, {}).index);
  CHECK(order == std::vector<std::size_t>{0, 2, 0, 2});
}

TEST_CASE("consistent hash sends the same key to the same instance", "[balancer]") {
  Balancer b(wire::CONSISTENT_HASH);
  auto loads = idle(4);
  for (int k = 0; k < 200; ++k) {
    const Pick first = b.pick(loads, key(k));
    REQUIRE(first.outcome == Outcome::chosen);
    for (int again = 0; again < 3; ++again)
      CHECK(b.pick(loads, key(k)).index == first.index);
  }
}

TEST_CASE("consistent hash spreads keys over all instances", "[balancer]") {
  Balancer b(wire::CONSISTENT_HASH);
  auto loads = idle(4);
  std::map<std::size_t, int> counts;
  for (int k = 0; k < 4000; ++k)
    ++counts[b.pick(loads, key(k)).index];
  REQUIRE(counts.size() == 4);
  for (const auto& [index, n] : counts) {
    CHECK(n > 600);  // 25% would be 1000
    CHECK(n < 1400);
  }
}

TEST_CASE("consistent hash moves only the lost instance's keys", "[balancer]") {
  Balancer b(wire::CONSISTENT_HASH);
  auto loads = idle(4);
  std::map<int, std::string> owner;
  for (int k = 0; k < 2000; ++k)
    owner[k] = std::string(loads[b.pick(loads, key(k)).index].instance_id);

  loads.erase(loads.begin() + 2);  // inst-c is lost
  b.membership_changed();
  int moved = 0;
  for (int k = 0; k < 2000; ++k) {
    const std::string now(loads[b.pick(loads, key(k)).index].instance_id);
    if (owner[k] == "inst-c")
      ++moved;
    else
      CHECK(now == owner[k]);
  }
  CHECK(moved > 0);
}

TEST_CASE("consistent hash places a key by instance id, not by position", "[balancer]") {
  Balancer b(wire::CONSISTENT_HASH);
  auto loads = idle(3);
  const std::string owner(loads[b.pick(loads, "session-42").index].instance_id);
  std::swap(loads[0], loads[2]);  // same instances, another order
  b.membership_changed();
  CHECK(std::string(loads[b.pick(loads, "session-42").index].instance_id) == owner);
}

TEST_CASE("consistent hash without a routing key is placed as least-outstanding", "[balancer]") {
  Balancer b(wire::CONSISTENT_HASH);
  auto loads = idle(3);
  loads[0].in_flight = 2;
  loads[1].in_flight = 0;
  loads[2].in_flight = 1;
  CHECK(b.pick(loads, {}).index == 1);
  const auto counts = run_calls(b, loads, 1000);
  for (const auto& l : loads)
    CHECK(l.in_flight == l.max_inflight);
  CHECK(counts.size() == 3);
}

TEST_CASE("consistent hash makes a call wait when the key's owner is at capacity", "[balancer]") {
  Balancer b(wire::CONSISTENT_HASH);
  auto loads = idle(3, 1);
  const Pick first = b.pick(loads, "session-42");
  REQUIRE(first.outcome == Outcome::chosen);
  loads[first.index].in_flight = 1;
  const Pick second = b.pick(loads, "session-42");
  CHECK(second.outcome == Outcome::busy);
  CHECK(second.index == first.index);  // waits for its owner, not for another instance
}

TEST_CASE("ring hash differs for keys that differ in one trailing byte", "[balancer]") {
  CHECK(ring_hash("inst-a#1") != ring_hash("inst-a#2"));
  CHECK((ring_hash("inst-a#1") >> 60) != (ring_hash("inst-a#2") >> 60));
}
