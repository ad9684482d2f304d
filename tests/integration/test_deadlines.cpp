// The deadline's edges: no outcome later than the deadline, no handler deadline later than
// its caller's, wait_for_ready across a connection just lost, and a burst of calls that
// outruns the socket's queue.
#include <csignal>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "fake_broker.hpp"
#include "harness.hpp"
#include "sagebus/wire/host_clock.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

using Clock = std::chrono::steady_clock;

// How late an outcome may come after its deadline, in these tests: the client's thread
// wakes for the deadline (rounded up to a whole millisecond), then hands the outcome on.
// docs/sdk.md ("Deadlines") gives the margin measured on an idle machine; this bound
// leaves room for a loaded CI machine and the sanitizer build.
constexpr auto kMargin = 25ms;

// A service whose handler "sleep" sleeps for the number of milliseconds in its payload.
struct SleepyService {
  Client client;
  Service service;
  explicit SleepyService(const Broker& broker)
      : client(at(broker, "sleepy-instance")), service(client, "sleepy", {.max_inflight = 64}) {
    service.handle("sleep", [](const Request& r) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(std::string(r.payload))));
      return std::string("slept");
    });
    service.start();
    REQUIRE(service.wait_registered(5s));
  }
};

// One outcome and when it came, measured against the deadline the caller set.
struct Timed {
  Status status = Status::ok;
  Clock::duration late{};  // outcome time - deadline (negative: before it)
};

}  // namespace

TEST_CASE("a handler slower than the timeout by a few ms ends DEADLINE_EXCEEDED at the deadline",
          "[deadline]") {
  Broker broker;
  SleepyService sleepy(broker);
  Client caller(at(broker));
  constexpr auto timeout = 100ms;
  const CallOptions options{.timeout = timeout};
  std::vector<Timed> outcomes;

  for (int over : {2, 3, 5, 8}) {
    const std::string payload = std::to_string(timeout.count() + over);
    {  // call()
      const auto deadline = Clock::now() + timeout;
      const Status s = status_of([&] { caller.call("sleepy", "sleep", payload, options); });
      outcomes.push_back({s, Clock::now() - deadline});
    }
    {  // the future
      const auto deadline = Clock::now() + timeout;
      auto future = caller.call_async("sleepy", "sleep", payload, options);
      future.wait();
      const auto at = Clock::now();
      outcomes.push_back({status_of([&] { future.get(); }), at - deadline});
    }
    {  // the callback
      std::promise<Timed> done;
      const auto deadline = Clock::now() + timeout;
      caller.call_async("sleepy", "sleep", payload, options, [&](Reply r) {
        done.set_value({r.status, Clock::now() - deadline});
      });
      outcomes.push_back(done.get_future().get());
    }
  }
  Clock::duration latest{};
  for (const auto& o : outcomes) {
    CHECK(o.status == Status::deadline_exceeded);
    latest = std::max(latest, o.late);
  }
  const auto latest_us = std::chrono::duration_cast<std::chrono::microseconds>(latest).count();
  CHECK(latest_us <= std::chrono::duration_cast<std::chrono::microseconds>(kMargin).count());
  // Every late reply was dropped (by the broker, or by the client when it came first).
  const auto counted =
      caller.stats().late_replies + broker_status(caller).counters().late_replies();
  CHECK(counted <= outcomes.size());
}

TEST_CASE("a handler faster than the timeout by a margin returns its reply", "[deadline]") {
  Broker broker;
  SleepyService sleepy(broker);
  Client caller(at(broker));
  // The margin absorbs a loaded machine's scheduling (an ASan build under CI missed 30 ms).
  for (int i = 0; i < 5; ++i)
    CHECK(caller.call("sleepy", "sleep", "70", {.timeout = 300ms}).payload == "slept");
  CHECK(caller.stats().late_replies == 0);
}

TEST_CASE("a reply sent after the deadline is never delivered as success", "[deadline][sdk]") {
  FakeBroker broker;
  Client client(at(broker.endpoint(), "client"));
  const std::string rid = broker.welcome();
  REQUIRE(eventually([&] { return client.connected(); }, 5s));
  for (int after_ms : {0, 1, 2, 5}) {
    const auto deadline = Clock::now() + 50ms;
    auto call = client.call_async("svc", "m", "x", {.timeout = 50ms});
    auto request = broker.expect(wire::REQUEST);
    REQUIRE(request);
    std::this_thread::sleep_until(deadline + std::chrono::milliseconds(after_ms));
    broker.reply(rid, request->header.id(), wire::OK, "too late");
    CHECK(status_of([&] { call.get(); }) == Status::deadline_exceeded);
    CHECK(Clock::now() - deadline < kMargin + std::chrono::milliseconds(after_ms));
  }
}

TEST_CASE("a handler's deadline is never later than its caller's", "[deadline]") {
  Broker broker;
  Client instance_client(at(broker, "deadline-instance"));
  Service service(instance_client, "clock", {.max_inflight = 16});
  service.handle("deadline", [](const Request& r) {
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(r.deadline.time_since_epoch());
    return std::to_string(us.count());
  });
  service.start();
  REQUIRE(service.wait_registered(5s));

  Client caller(at(broker));
  std::vector<std::thread> threads;
  std::atomic<int> later{0}, done{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto reply = caller.call_async("clock", "deadline", "", {.timeout = 1s});
        // The client set the deadline before call_async returned: this is later.
        const auto bound = Clock::now() + 1s;
        const Clock::time_point seen{std::chrono::microseconds(std::stoll(reply.get().payload))};
        if (seen > bound) ++later;
        ++done;
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(done == 200);
  CHECK(later == 0);
}

TEST_CASE("a client on this host sends its call's deadline itself, and its handlers use it",
          "[deadline][sdk]") {
  FakeBroker broker;
  broker.share_host = true;
  Client client(at(broker.endpoint(), "client"));
  const std::string rid = broker.welcome();
  REQUIRE(eventually([&] { return client.connected(); }, 5s));
  auto call = client.call_async("svc", "m", "x", {.timeout = 2s});
  const auto bound = Clock::now() + 2s;
  auto request = broker.expect(wire::REQUEST);
  REQUIRE(request);
  const Clock::time_point sent{std::chrono::microseconds(request->header.deadline_us())};
  CHECK(sent <= bound);
  CHECK(sent > bound - 100ms);
  broker.reply(rid, request->header.id(), wire::OK, "ok");
  CHECK(call.get().payload == "ok");
}

TEST_CASE("a burst of 10,000 call_async from one thread all succeed on a default client",
          "[deadline][burst]") {
  Broker broker;
  Client instance_client(at(broker, "burst-instance"));
  Service service(instance_client, "echo", {.max_inflight = 10000, .on_io_thread = true});
  service.handle("echo", [](const Request& r) { return std::string(r.payload); });
  service.start();
  REQUIRE(service.wait_registered(5s));

  Client caller(at(broker));
  std::vector<std::future<Reply>> calls;
  calls.reserve(10000);
  for (int i = 0; i < 10000; ++i)
    calls.push_back(caller.call_async("echo", "echo", std::to_string(i), {.timeout = 60s}));
  int wrong = 0, failed = 0;
  for (int i = 0; i < 10000; ++i) {
    try {
      if (calls[static_cast<std::size_t>(i)].get().payload != std::to_string(i)) ++wrong;
    } catch (const Error& e) {
      if (failed++ == 0) UNSCOPED_INFO("first failure: " << e.what());
    }
  }
  CHECK(failed == 0);
  CHECK(wrong == 0);
}

TEST_CASE("a wait_for_ready call made as the broker restarts waits for it and succeeds",
          "[deadline][restart]") {
  auto broker = std::make_unique<Broker>(std::vector<std::string>{"--heartbeat-ms", "200"});
  const auto endpoint = broker->endpoint();
  Client service_client(at(endpoint, "phoenix-service"));
  Service service(service_client, "phoenix");
  service.handle("echo", [](const Request& r) { return std::string(r.payload); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(endpoint));
  REQUIRE(caller.call("phoenix", "echo", "before").payload == "before");

  // SIGTERM: the broker drains and says GOODBYE; the call goes while it does.
  broker->process().signal(SIGTERM);
  auto call =
      caller.call_async("phoenix", "echo", "after", {.timeout = 20s, .wait_for_ready = true});
  REQUIRE(broker->process().wait_exit(10s) != -1);
  TempDir dir;
  Process again({busd_path(), "--endpoint", endpoint, "--heartbeat-ms", "200"},
                dir.path() + "/b.log");
  REQUIRE(again.wait_for_log("listening on", 10s));
  CHECK(call.get().payload == "after");
  service.stop();
}

// Not a test: measures how late outcomes come after their deadline, for docs/sdk.md
// ("Deadlines"). Run it alone on a quiet machine:
//   build/tests/integration/sagebus_integration_tests '[.margin]'
TEST_CASE("how late a DEADLINE_EXCEEDED outcome comes after its deadline", "[.margin]") {
  Broker broker;
  GatedService hung(broker.endpoint(), "hung", 400);
  Client caller(at(broker));
  std::vector<Clock::duration> late[3];
  const CallOptions options{.timeout = 20ms};
  for (int i = 0; i < 100; ++i) {
    auto deadline = Clock::now() + options.timeout;
    (void)status_of([&] { caller.call("hung", "wait", "", options); });
    late[0].push_back(Clock::now() - deadline);

    deadline = Clock::now() + options.timeout;
    auto future = caller.call_async("hung", "wait", "", options);
    future.wait();
    late[1].push_back(Clock::now() - deadline);

    std::promise<Clock::time_point> done;
    deadline = Clock::now() + options.timeout;
    caller.call_async("hung", "wait", "", options, [&](Reply) { done.set_value(Clock::now()); });
    late[2].push_back(done.get_future().get() - deadline);
  }
  const char* forms[] = {"call()", "future", "callback"};
  for (int f = 0; f < 3; ++f) {
    auto& v = late[f];
    std::sort(v.begin(), v.end());
    const auto us = [](Clock::duration d) {
      return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
    };
    WARN(forms[f] << ": after the deadline by p50 " << us(v[v.size() / 2]) << " us, p99 "
                  << us(v[v.size() * 99 / 100]) << " us, max " << us(v.back()) << " us");
  }
  hung.open();
}
