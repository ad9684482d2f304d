// Load balancing across instances of one service: shares, capacity limits, and the
// three strategies.
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// N instances of service `name` in this process, each answering `whoami` with its index.
struct Instances {
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::unique_ptr<Service>> services;

  Instances(const Broker& broker, const std::string& name, int n, ServiceOptions options = {}) {
    for (int i = 0; i < n; ++i)
      add(broker, name, options);
  }
  void add(const Broker& broker, const std::string& name, ServiceOptions options,
           std::function<void()> work = {}) {
    const auto index = std::to_string(services.size());
    clients.push_back(std::make_unique<Client>(
        ClientOptions{.endpoint = broker.endpoint(), .name = name + "-" + index}));
    services.push_back(std::make_unique<Service>(*clients.back(), name, options));
    services.back()->handle("whoami", [index, work](const Request&) {
      if (work) work();
      return index;
    });
    services.back()->start();
    REQUIRE(services.back()->wait_registered(5s));
  }
  ~Instances() {
    for (auto& s : services)
      s->stop();
  }
};

}  // namespace

TEST_CASE("4 instances, 4000 calls: each instance serves 15-35 %", "[balancing]") {
  Broker broker;
  Instances instances(broker, "lb", 4);
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  // One caller at a time, so that the shares measure the balancer (least outstanding,
  // ties taken in turn), not how a loaded test machine schedules the four instances'
  // threads. Balancing under concurrency is the capacity tests' subject.
  std::map<std::string, int> served;
  for (int i = 0; i < 4000; ++i)
    served[caller.call("lb", "whoami", "").payload]++;
  REQUIRE(served.size() == 4);
  for (const auto& [who, count] : served) {
    INFO("instance " << who << " served " << count);
    CHECK(count >= 600);
    CHECK(count <= 1400);
  }
}

TEST_CASE("an instance with max_inflight=1 is never given a second call while busy",
          "[balancing][capacity]") {
  Broker broker;
  Instances instances(broker, "cap", 2, {.max_inflight = 8});
  std::atomic<int> busy{0}, most{0}, slow_served{0};
  // Four workers, so that if the broker ever sent two calls they would run at once.
  instances.add(broker, "cap", {.max_inflight = 1, .workers = 4}, [&] {
    const int now = ++busy;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(20ms);
    --busy;
    ++slow_served;
  });
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 200; ++i)
    calls.push_back(caller.call_async("cap", "whoami", "", {.timeout = 20s}));
  for (auto& c : calls)
    CHECK_NOTHROW(c.get());
  CHECK(slow_served > 0);
  CHECK(most == 1);
}

TEST_CASE("calls beyond total capacity wait for it, and a full wait queue answers OVERLOADED",
          "[balancing][capacity]") {
  Broker broker({"--max-waiting", "4"});
  std::promise<void> release;
  auto released = release.get_future().share();
  Instances instances(broker, "narrow", 0);
  instances.add(broker, "narrow", {.max_inflight = 1}, [released] { released.wait(); });
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  auto busy = caller.call_async("narrow", "whoami", "", {.timeout = 20s});
  REQUIRE(eventually([&] { return in_flight(caller, "narrow") == 1; }, 5s));
  std::vector<std::future<Reply>> waiting;
  for (int i = 0; i < 4; ++i)
    waiting.push_back(caller.call_async("narrow", "whoami", "", {.timeout = 20s}));
  REQUIRE(eventually([&] { return broker_services(caller).services(0).waiting() == 4; }, 5s));
  try {
    caller.call("narrow", "whoami", "", {.timeout = 20s});
    FAIL("a fifth waiting call should not fit");
  } catch (const Error& e) {
    CHECK(e.status() == Status::overloaded);
  }
  release.set_value();
  CHECK(busy.get().payload == "0");
  for (auto& w : waiting)
    CHECK(w.get().payload == "0");
}

TEST_CASE("round-robin gives each instance its turn", "[balancing][strategy]") {
  Broker broker;
  Instances instances(broker, "rr", 3, {.strategy = Strategy::round_robin});
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  std::map<std::string, int> served;
  for (int i = 0; i < 30; ++i)
    served[caller.call("rr", "whoami", "").payload]++;
  REQUIRE(served.size() == 3);
  for (const auto& [who, count] : served)
    CHECK(count == 10);
}

TEST_CASE("consistent hash: the same key reaches the same instance while it lives",
          "[balancing][strategy]") {
  Broker broker;
  Instances instances(broker, "sticky", 4, {.strategy = Strategy::consistent_hash});
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  auto owner = [&](const std::string& key) {
    return caller.call("sticky", "whoami", "", {.routing_key = key}).payload;
  };
  std::map<std::string, std::string> first;
  std::set<std::string> owners;
  for (int k = 0; k < 64; ++k) {
    const auto key = "session-" + std::to_string(k);
    first[key] = owner(key);
    owners.insert(first[key]);
  }
  CHECK(owners.size() >= 3);  // 64 keys spread over the ring
  for (const auto& [key, who] : first)
    CHECK(owner(key) == who);

  // When one instance leaves, only its keys move.
  const std::string gone = first.begin()->second;
  instances.services[std::stoul(gone)]->stop();
  for (const auto& [key, who] : first) {
    const auto now = owner(key);
    if (who == gone)
      CHECK(now != gone);
    else
      CHECK(now == who);
  }
}

TEST_CASE("registering with a strategy other than the live instances' is refused",
          "[balancing][strategy]") {
  Broker broker;
  Instances instances(broker, "mixed", 1, {.strategy = Strategy::round_robin});
  Client other({.endpoint = broker.endpoint(), .name = "other"});
  Service conflicting(other, "mixed", {.strategy = Strategy::consistent_hash});
  conflicting.handle("whoami", [](const Request&) { return std::string("x"); });
  conflicting.start();
  try {
    conflicting.wait_registered(5s);
    FAIL("the registration should have been refused");
  } catch (const Error& e) {
    CHECK(e.status() == Status::invalid_argument);
  }
}
