// Registration rules (docs/protocol.md, "Registration"), leases and instance lifetimes.
#include <algorithm>
#include <chrono>

#include <catch2/catch.hpp>

#include "routing/registry.hpp"

using namespace sagebus;
using namespace sagebus::broker;
using namespace std::chrono_literals;

namespace {

const TimePoint t0{};

wire::Hello hello(const std::string& name) {
  wire::Hello h;
  h.set_name(name);
  h.set_instance_id(name + "-id");
  h.set_sdk_version("0.1.0");
  return h;
}

wire::Registration registration(std::uint32_t max_inflight = 4,
                                wire::Strategy strategy = wire::LEAST_OUTSTANDING) {
  wire::Registration r;
  r.add_methods("retrieve");
  r.add_methods("store");
  r.set_version("1.2");
  r.set_max_inflight(max_inflight);
  r.set_strategy(strategy);
  return r;
}

}  // namespace

TEST_CASE("a valid registration makes the connection an instance of the service", "[registry]") {
  Registry reg;
  reg.hello("A", hello("memory-1"), 10, t0);
  const RegisterResult r = reg.register_instance("A", "memory", registration());
  CHECK(r.status == wire::OK);
  CHECK(r.created);
  Service* s = reg.service("memory");
  REQUIRE(s != nullptr);
  REQUIRE(s->instances.size() == 1);
  CHECK(s->instances[0].instance_id == "memory-1-id");
  CHECK(s->instances[0].has_method("store"));
  CHECK_FALSE(s->instances[0].has_method("delete"));
}

TEST_CASE("registration refuses invalid input with INVALID_ARGUMENT", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  auto no_methods = registration();
  no_methods.clear_methods();
  auto bad_method = registration();
  bad_method.add_methods("has space");
  CHECK(reg.register_instance("A", "bad name", registration()).status == wire::INVALID_ARGUMENT);
  CHECK(reg.register_instance("A", "", registration()).status == wire::INVALID_ARGUMENT);
  CHECK(reg.register_instance("A", "memory", no_methods).status == wire::INVALID_ARGUMENT);
  CHECK(reg.register_instance("A", "memory", bad_method).status == wire::INVALID_ARGUMENT);
  CHECK(reg.register_instance("A", "memory", registration(0)).status == wire::INVALID_ARGUMENT);
  CHECK(reg.services().empty());
}

TEST_CASE("names starting with $ are reserved for the broker", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  const RegisterResult r = reg.register_instance("A", "$broker", registration());
  CHECK(r.status == wire::PERMISSION_DENIED);
  CHECK(reg.services().empty());
}

TEST_CASE("a strategy different from the live instances' is refused", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.hello("B", hello("b"), -1, t0);
  REQUIRE(reg.register_instance("A", "memory", registration(4, wire::CONSISTENT_HASH)).status ==
          wire::OK);
  const RegisterResult r = reg.register_instance("B", "memory", registration(4));
  CHECK(r.status == wire::INVALID_ARGUMENT);
  CHECK(r.message.find("CONSISTENT_HASH") != std::string::npos);
  // The sole instance may change its own service's strategy.
  CHECK(reg.register_instance("A", "memory", registration(4, wire::ROUND_ROBIN)).status ==
        wire::OK);
  CHECK(reg.service("memory")->strategy() == wire::ROUND_ROBIN);
}

TEST_CASE("registering again on the same connection replaces the instance", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  REQUIRE(reg.register_instance("A", "memory", registration(4)).created);
  const RegisterResult again = reg.register_instance("A", "memory", registration(8));
  CHECK(again.status == wire::OK);
  CHECK_FALSE(again.created);
  REQUIRE(reg.service("memory")->instances.size() == 1);
  CHECK(reg.service("memory")->instances[0].max_inflight == 8);
}

TEST_CASE("unregistering an idle instance removes it at once", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.register_instance("A", "memory", registration());
  CHECK(reg.unregister_instance("A", "memory"));
  CHECK(reg.service("memory")->instances.empty());
  reg.prune("memory");
  CHECK(reg.service("memory") == nullptr);
  CHECK_FALSE(reg.unregister_instance("A", "memory"));
}

TEST_CASE("unregistering a busy instance drains it", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.register_instance("A", "memory", registration());
  reg.service("memory")->instances[0].in_flight = 2;
  CHECK(reg.unregister_instance("A", "memory"));
  REQUIRE(reg.service("memory")->instances.size() == 1);
  CHECK(reg.service("memory")->instances[0].draining);
  CHECK(reg.service("memory")->live_instances() == 0);
}

TEST_CASE("a silent client's lease expires after the lease time", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.hello("B", hello("b"), -1, t0 + 2s);
  CHECK(reg.expired(t0 + 3s, 3000ms, 30s).empty());
  CHECK(reg.expired(t0 + 3001ms, 3000ms, 30s) == std::vector<RoutingId>{"A"});
}

TEST_CASE("a client holding the idle lease expires after the idle lease", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.hello("B", hello("b"), -1, t0);
  reg.client("B")->idle = true;
  CHECK(reg.expired(t0 + 3001ms, 3000ms, 30s) == std::vector<RoutingId>{"A"});
  CHECK(reg.expired(t0 + 30s, 3000ms, 30s) == std::vector<RoutingId>{"A"});
  auto both = reg.expired(t0 + 30001ms, 3000ms, 30s);
  std::sort(both.begin(), both.end());
  CHECK(both == std::vector<RoutingId>{"A", "B"});
}

TEST_CASE("time the broker itself was stopped does not count against leases", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.extend_leases(10s);  // the broker was frozen for 10 s
  CHECK(reg.expired(t0 + 12s, 3000ms, 30s).empty());
  CHECK(reg.expired(t0 + 13001ms, 3000ms, 30s) == std::vector<RoutingId>{"A"});
}

TEST_CASE("removing a client removes its instances and its fd", "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), 10, t0);
  reg.register_instance("A", "memory", registration());
  reg.register_instance("A", "search", registration());
  CHECK(reg.client_by_fd(10) == RoutingId("A"));
  const auto left = reg.remove_client("A");
  CHECK(left.size() == 2);
  CHECK(reg.client("A") == nullptr);
  CHECK_FALSE(reg.client_by_fd(10));
  CHECK(reg.instance_count() == 0);
}

TEST_CASE("a second HELLO keeps the registrations", "[registry]") {
  Registry reg;
  CHECK(reg.hello("A", hello("a"), 10, t0));
  reg.register_instance("A", "memory", registration());
  CHECK_FALSE(reg.hello("A", hello("a"), 10, t0 + 1s));
  CHECK(reg.instance_count() == 1);
}

TEST_CASE("a client is found by its name until it leaves", "[registry]") {
  Registry reg;
  reg.hello("A", hello("node-7"), -1, t0);
  CHECK(reg.client_by_name("node-7") == RoutingId("A"));
  CHECK_FALSE(reg.client_by_name("node-8"));
  reg.remove_client("A");
  CHECK_FALSE(reg.client_by_name("node-7"));
}

TEST_CASE("a client that says HELLO with another name gives up its old one", "[registry]") {
  Registry reg;
  reg.hello("A", hello("old"), -1, t0);
  reg.hello("A", hello("new"), -1, t0 + 1s);
  CHECK_FALSE(reg.client_by_name("old"));
  CHECK(reg.client_by_name("new") == RoutingId("A"));
  reg.hello("A", hello("new"), -1, t0 + 2s);  // the same name again is fine
  CHECK(reg.client_by_name("new") == RoutingId("A"));
}

TEST_CASE("removing a client whose name was taken over leaves the new owner's name", "[registry]") {
  Registry reg;
  reg.hello("A", hello("node"), -1, t0);
  reg.remove_client("A");  // the broker removes the old connection first on takeover
  reg.hello("B", hello("node"), -1, t0);
  reg.remove_client("A");  // a second removal of the old one changes nothing
  CHECK(reg.client_by_name("node") == RoutingId("B"));
}

TEST_CASE("a client is found by its handle until it leaves, and a HELLO again keeps the handle",
          "[registry][handles]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  const ClientHandle a = reg.client("A")->handle;
  CHECK(a);
  CHECK(reg.client(a) == reg.client("A"));
  reg.hello("A", hello("a-renamed"), -1, t0 + 1s);
  CHECK(reg.client("A")->handle == a);
  CHECK(reg.client(a)->name == "a-renamed");
  reg.remove_client("A");
  CHECK(reg.client(a) == nullptr);
}

TEST_CASE("a new client with a gone one's routing id gets a new handle, and the old stays dead",
          "[registry][handles]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  const ClientHandle old = reg.client("A")->handle;
  reg.remove_client("A");
  reg.hello("A", hello("a"), -1, t0 + 1s);
  const ClientHandle fresh = reg.client("A")->handle;
  CHECK(fresh != old);
  CHECK(reg.client(old) == nullptr);
  CHECK(reg.client(fresh) == reg.client("A"));
}

TEST_CASE("an instance is known by its client's handle", "[registry][handles]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.hello("B", hello("b"), -1, t0);
  reg.register_instance("A", "memory", registration());
  Service* s = reg.service("memory");
  REQUIRE(s != nullptr);
  CHECK(s->find(reg.client("A")->handle) == &s->instances[0]);
  CHECK(s->instances[0].client == "A");
  CHECK(s->find(reg.client("B")->handle) == nullptr);
}

TEST_CASE("a service entry is found by its handle until it is pruned, never by a new entry's",
          "[registry][handles]") {
  Registry reg;
  reg.hello("A", hello("memory-1"), 10, t0);
  reg.register_instance("A", "memory", registration());
  const ServiceHandle handle = reg.service("memory")->handle;
  CHECK(reg.service(handle) == reg.service("memory"));
  reg.unregister_instance("A", "memory");
  reg.prune("memory");
  CHECK(reg.service("memory") == nullptr);
  CHECK(reg.service(handle) == nullptr);
  Service& again = reg.ensure_service("memory");
  CHECK(again.handle != handle);
  CHECK(reg.service(handle) == nullptr);
  CHECK(reg.service(again.handle) == &again);
}

TEST_CASE("services are found by name whichever was found last, and not after pruning",
          "[registry]") {
  Registry reg;
  reg.hello("A", hello("a"), -1, t0);
  reg.register_instance("A", "memory", registration());
  reg.register_instance("A", "search", registration());
  Service* memory = reg.service("memory");
  Service* search = reg.service("search");
  REQUIRE(memory != nullptr);
  REQUIRE(search != nullptr);
  CHECK(memory != search);
  CHECK(reg.service("memory") == memory);
  CHECK(reg.service("memory") == memory);
  CHECK(reg.service("search") == search);
  CHECK(reg.service("memor") == nullptr);
  reg.unregister_instance("A", "search");
  reg.prune("search");
  CHECK(reg.service("search") == nullptr);
  Service& again = reg.ensure_service("search");
  CHECK(reg.service("search") == &again);
  CHECK(again.instances.empty());
}

TEST_CASE("routing ids that differ only in length or trailing zeros are different clients",
          "[registry]") {
  Registry reg;
  const RoutingId zero_counter("\0\0\0\0\1", 5);  // libzmq's own: a zero and a counter
  const RoutingId longer("\0\0\0\0\1\0", 6);
  const RoutingId long_id(40, 'x');  // over a word: hashed as bytes
  reg.hello(zero_counter, hello("a"), -1, t0);
  reg.hello(longer, hello("b"), -1, t0);
  reg.hello(long_id, hello("c"), -1, t0);
  CHECK(reg.clients().size() == 3);
  CHECK(reg.client(zero_counter)->name == "a");
  CHECK(reg.client(longer)->name == "b");
  CHECK(reg.client(long_id)->name == "c");
  CHECK(RoutingIdHash{}(zero_counter) != RoutingIdHash{}(longer));
}

TEST_CASE("routing ids of every length up to a word compare by every byte", "[registry]") {
  const RoutingIdEqual equal;
  for (const std::string id :
       {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh", "abcdefghi"}) {
    CHECK(equal(id, id));
    for (std::size_t i = 0; i < id.size(); ++i) {
      std::string other = id;
      other[i] = 'z';
      CHECK_FALSE(equal(id, other));
    }
    CHECK_FALSE(equal(id, id + "a"));
  }
}
