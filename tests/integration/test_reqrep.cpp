// Request-response through the real broker: every call ends with exactly its own
// outcome, whoever shares the client and however calls nest.
#include <atomic>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// A started service on its own client; stops before its client goes.
struct EchoService {
  Client client;
  Service service;
  EchoService(const Broker& broker, const std::string& name, ServiceOptions options = {})
      : client(at(broker, name + "-instance")), service(client, name, options) {
    service.handle("echo", [](const Request& r) { return std::string(r.payload); });
    service.handle("fail", [](const Request&) -> std::string {
      throw std::runtime_error("the disk is on fire");
    });
  }
  void start() {
    service.start();
    REQUIRE(service.wait_registered(5s));
  }
};

}  // namespace

TEST_CASE("a call returns the reply of the service's handler", "[reqrep]") {
  Broker broker;
  EchoService echo(broker, "echo");
  echo.start();
  Client caller(at(broker));
  CHECK(caller.call("echo", "echo", "hello").payload == "hello");
}

TEST_CASE("unknown service, unknown method and throwing handler each end with their status",
          "[reqrep][errors]") {
  Broker broker;
  EchoService echo(broker, "echo");
  echo.start();
  Client caller(at(broker));

  SECTION("a service with no live instance answers NO_RESPONDERS at once") {
    const auto started = std::chrono::steady_clock::now();
    CHECK(status_of([&] { caller.call("nosuch", "echo", "x", {.timeout = 10s}); }) ==
          Status::no_responders);
    CHECK(std::chrono::steady_clock::now() - started < 2s);
  }
  SECTION("an unknown method answers NOT_FOUND") {
    CHECK(status_of([&] { caller.call("echo", "nosuch", "x"); }) == Status::not_found);
  }
  SECTION("a throwing handler answers HANDLER_ERROR with the exception's text") {
    try {
      caller.call("echo", "fail", "x");
      FAIL("the call should have thrown");
    } catch (const Error& e) {
      CHECK(e.status() == Status::handler_error);
      CHECK_THAT(e.what(), Catch::Contains("the disk is on fire"));
    }
  }
  SECTION("an invalid name answers INVALID_ARGUMENT without reaching the broker") {
    CHECK(status_of([&] { caller.call("bad name!", "echo", "x"); }) == Status::invalid_argument);
  }
}

TEST_CASE("one client shared by 64 threads gives each thread exactly its own replies",
          "[reqrep][threads]") {
  Broker broker;
  EchoService echo(broker, "echo", {.max_inflight = 64});
  echo.start();
  Client shared(at(broker));
  constexpr int kThreads = 64, kCalls = 100;
  std::atomic<int> wrong{0}, failed{0}, right{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const auto token = "thread-" + std::to_string(t) + "-call-" + std::to_string(i);
        try {
          (shared.call("echo", "echo", token, {.timeout = 20s}).payload == token ? right : wrong)++;
        } catch (const Error&) {
          failed++;
        }
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(wrong == 0);
  CHECK(failed == 0);
  CHECK(right == kThreads * kCalls);
}

// A thread in a synchronous call may be the one waiting on the client's socket
// (Engine::call); the client must still outlive it, and end its call as any other.
TEST_CASE("a client destroyed while threads are in calls on it ends each call CANCELLED",
          "[reqrep][threads][lifecycle]") {
  Broker broker;
  GatedService held(broker.endpoint(), "held", 8);
  Client admin(at(broker, "admin"));

  auto doomed = std::make_unique<Client>(at(broker, "doomed"));
  // A synchronous call that ends leaves the socket to the next caller (Engine::run).
  CHECK(status_of([&] { doomed->call("held", "unknown", ""); }) == Status::not_found);
  constexpr int kCallers = 4;
  std::vector<std::future<Status>> calls;
  for (int i = 0; i < kCallers; ++i)
    calls.push_back(std::async(std::launch::async, [&client = *doomed] {
      return status_of([&] { client.call("held", "wait", "", {.timeout = 20s}); });
    }));
  REQUIRE(eventually([&] { return in_flight(admin, "held") == kCallers; }, 5s));

  doomed.reset();
  for (auto& call : calls) {
    REQUIRE(call.wait_for(5s) == std::future_status::ready);
    CHECK(call.get() == Status::cancelled);
  }
}

TEST_CASE("nested calls: a handler that calls another service gets its own answers",
          "[reqrep][nested]") {
  Broker broker;
  EchoService inner(broker, "inner", {.max_inflight = 32});
  inner.start();
  Client outer_client(at(broker, "outer-instance"));
  Service outer(outer_client, "outer", {.max_inflight = 32});
  outer.handle("relay", [&](const Request& r) {
    // The outer handler calls the inner service through its own client.
    return "outer(" + outer_client.call("inner", "echo", r.payload, {.timeout = 20s}).payload + ")";
  });
  outer.start();
  REQUIRE(outer.wait_registered(5s));

  Client caller(at(broker));
  constexpr int kThreads = 8, kCalls = 500;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const auto token = std::to_string(t) + ":" + std::to_string(i);
        try {
          if (caller.call("outer", "relay", token, {.timeout = 20s}).payload !=
              "outer(" + token + ")")
            wrong++;
        } catch (const Error& e) {
          UNSCOPED_INFO(e.what());
          failed++;
        }
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(wrong == 0);
  CHECK(failed == 0);
  outer.stop();
}

TEST_CASE("a handler that replies after the deadline: one DEADLINE_EXCEEDED, one late reply",
          "[reqrep][deadline]") {
  Broker broker;
  Client instance_client(at(broker, "slow-instance"));
  Service slow(instance_client, "slow");
  std::atomic<bool> replied{false};
  slow.handle("wait", [&](const Request&) {
    std::this_thread::sleep_for(600ms);
    replied = true;
    return std::string("too late");
  });
  slow.start();
  REQUIRE(slow.wait_registered(5s));

  Client caller(at(broker));
  std::atomic<int> outcomes{0};
  std::promise<Reply> outcome;
  const auto started = std::chrono::steady_clock::now();
  caller.call_async("slow", "wait", "", {.timeout = 200ms}, [&](Reply r) {
    if (outcomes++ == 0) outcome.set_value(std::move(r));
  });
  const auto reply = outcome.get_future().get();
  const auto elapsed = std::chrono::steady_clock::now() - started;
  CHECK(reply.status == Status::deadline_exceeded);
  CHECK(elapsed >= 200ms);
  CHECK(elapsed < 200ms + 150ms);

  // The handler's reply reaches the broker after the caller's outcome; it is counted, and
  // the caller hears nothing more.
  REQUIRE(eventually([&] { return broker_status(caller).counters().late_replies() == 1; }, 5s));
  CHECK(replied);
  CHECK(outcomes == 1);
}

TEST_CASE("call_async returns a future holding the reply or the error", "[reqrep][async]") {
  Broker broker;
  EchoService echo(broker, "echo");
  echo.start();
  Client caller(at(broker));
  auto ok = caller.call_async("echo", "echo", "a");
  auto bad = caller.call_async("echo", "fail", "b");
  CHECK(ok.get().payload == "a");
  CHECK_THROWS_AS(bad.get(), Error);
}

TEST_CASE("a large payload passes through unchanged", "[reqrep][payload]") {
  Broker broker;
  EchoService echo(broker, "echo");
  echo.start();
  Client caller(at(broker));
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>(i * 31 + 7);
  CHECK(caller.call("echo", "echo", big).payload == big);
}

TEST_CASE(
    "an interruptible call ends CANCELLED soon after its check says so while the broker's "
    "call goes on and unasked it returns its reply",
    "[reqrep][sdk]") {
  Broker broker;
  GatedService gated(broker.endpoint(), "gated", 4);
  Client caller(at(broker, "interrupted-caller"));
  std::atomic<int> asked{0};
  std::atomic<bool> stop{false};
  auto waiting = std::async(std::launch::async, [&] {
    return status_of([&] {
      caller.call(
          "gated", "wait", "x", {.timeout = 30s},
          [&] {
            ++asked;
            return stop.load();
          },
          20ms);
    });
  });
  // Asked while it waits: at least every 20 ms.
  REQUIRE(eventually([&] { return asked.load() >= 3; }, 5s));
  const auto stopped = std::chrono::steady_clock::now();
  stop = true;
  REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
  CHECK(waiting.get() == Status::cancelled);
  CHECK(std::chrono::steady_clock::now() - stopped < 1s);
  // The broker still holds the call for the instance; once answered, the client goes on.
  Client observer(at(broker, "interrupted-observer"));
  CHECK(in_flight(observer, "gated") == 1);
  gated.open();
  REQUIRE(eventually([&] { return in_flight(observer, "gated") == 0; }, 5s));
  const Reply reply = caller.call("gated", "wait", "after", {.timeout = 5s}, [] { return false; });
  CHECK(reply.payload == "after");
  CHECK_THROWS_AS(caller.call(
                      "gated", "wait", "x", {}, [] { return false; }, 0ms),
                  Error);
}
