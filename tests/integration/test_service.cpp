// sagebus::Service: graceful stop, registration rules, handler outcomes.
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

TEST_CASE("stop() finishes the calls in flight, then the service takes no more",
          "[service][stop]") {
  Broker broker;
  Client instance_client({.endpoint = broker.endpoint(), .name = "instance"});
  Service service(instance_client, "draining");
  std::promise<void> entered;
  service.handle("slow", [&](const Request&) {
    entered.set_value();
    std::this_thread::sleep_for(300ms);
    return std::string("finished");
  });
  service.start();
  REQUIRE(service.wait_registered(5s));

  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  auto call = caller.call_async("draining", "slow", "", {.timeout = 10s});
  entered.get_future().wait();
  service.stop();
  CHECK(call.get().payload == "finished");
  CHECK(service.served() == 1);
  try {
    caller.call("draining", "slow", "");
    FAIL("a stopped service should not be called");
  } catch (const Error& e) {
    CHECK(e.status() == Status::no_responders);
  }
}

TEST_CASE("a handler may choose the status it fails with", "[service][errors]") {
  Broker broker;
  Client instance_client({.endpoint = broker.endpoint(), .name = "instance"});
  Service service(instance_client, "picky");
  service.handle("check", [](const Request& r) -> std::string {
    if (r.payload.empty()) throw Error(Status::invalid_argument, "payload must not be empty");
    return "fine";
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  try {
    caller.call("picky", "check", "");
    FAIL("expected INVALID_ARGUMENT");
  } catch (const Error& e) {
    CHECK(e.status() == Status::invalid_argument);
    CHECK(e.message() == "payload must not be empty");
  }
}

TEST_CASE("service names starting with '$' are reserved for the broker", "[service][names]") {
  Broker broker;
  Client client({.endpoint = broker.endpoint(), .name = "instance"});
  CHECK_THROWS_AS(Service(client, "$broker"), Error);
  CHECK_THROWS_AS(Service(client, ""), Error);
  Service ok(client, "fine");
  CHECK_THROWS_AS(ok.handle("bad method", [](const Request&) { return std::string(); }), Error);
  CHECK_THROWS_AS(ok.start(), Error);  // no methods
}

TEST_CASE("the broker lists services with their instances", "[service][discovery]") {
  Broker broker;
  Client instance_client({.endpoint = broker.endpoint(), .name = "lister"});
  Service service(instance_client, "listed", {.max_inflight = 3, .version = "1.2.3"});
  service.handle("a", [](const Request&) { return std::string(); });
  service.handle("b", [](const Request&) { return std::string(); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});
  caller.call("listed", "a", "");
  const auto list = broker_services(caller);
  REQUIRE(list.services_size() == 1);
  const auto& s = list.services(0);
  CHECK(s.name() == "listed");
  REQUIRE(s.instances_size() == 1);
  const auto& i = s.instances(0);
  CHECK(i.client() == "lister");
  CHECK(i.version() == "1.2.3");
  CHECK(i.max_inflight() == 3);
  CHECK(i.methods_size() == 2);
  CHECK(i.served() == 1);
  CHECK(i.in_flight() == 0);
}
