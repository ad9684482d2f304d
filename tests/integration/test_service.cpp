// sagebus::Service: graceful stop, registration rules, handler outcomes.
#include <cctype>
#include <future>
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

TEST_CASE("handlers on the I/O thread answer, fail, call onward, and refuse to deadlock",
          "[service][io-thread]") {
  Broker broker;
  Client downstream_client({.endpoint = broker.endpoint(), .name = "downstream"});
  Service downstream(downstream_client, "downstream");
  downstream.handle("upper", [](const Request& r) {
    std::string out(r.payload);
    for (char& c : out)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
  });
  downstream.start();
  REQUIRE(downstream.wait_registered(5s));

  Client instance_client({.endpoint = broker.endpoint(), .name = "instance"});
  Service service(instance_client, "inline", {.max_inflight = 8, .on_io_thread = true});
  service.handle("echo", [](const Request& r) { return std::string(r.payload); });
  service.handle("fail", [](const Request&) -> std::string {
    throw Error(Status::not_found, "no such thing");
  });
  // A synchronous call through its own client would wait for the thread it runs on (that
  // it is refused shows where the handlers run).
  service.handle("nested-sync", [&](const Request& r) {
    return instance_client.call("downstream", "upper", r.payload).payload;
  });
  // Through call_async it is fine: the answer comes on the callback thread.
  std::promise<std::string> onward;
  service.handle("nested-async", [&](const Request& r) {
    instance_client.call_async("downstream", "upper", r.payload, {},
                               [&](Reply reply) { onward.set_value(reply.payload); });
    return std::string("asked");
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller({.endpoint = broker.endpoint(), .name = "caller"});

  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 200; ++i)
    calls.push_back(caller.call_async("inline", "echo", "m" + std::to_string(i)));
  for (int i = 0; i < 200; ++i)
    CHECK(calls[static_cast<std::size_t>(i)].get().payload == "m" + std::to_string(i));
  CHECK(service.served() == 200);

  const Error failed = error_of([&] { caller.call("inline", "fail", ""); });
  CHECK(failed.status() == Status::not_found);
  CHECK(failed.message() == "no such thing");

  const auto started = std::chrono::steady_clock::now();
  const Error nested = error_of([&] { caller.call("inline", "nested-sync", "x"); });
  CHECK(nested.status() == Status::invalid_argument);
  CHECK_THAT(nested.message(), Catch::Contains("would wait for that thread forever"));
  CHECK(std::chrono::steady_clock::now() - started < 2s);

  CHECK(caller.call("inline", "nested-async", "quiet").payload == "asked");
  auto result = onward.get_future();
  REQUIRE(result.wait_for(5s) == std::future_status::ready);
  CHECK(result.get() == "QUIET");

  service.stop();
  CHECK(status_of([&] { caller.call("inline", "echo", ""); }) == Status::no_responders);
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
