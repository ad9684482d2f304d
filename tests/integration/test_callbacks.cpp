// call_async callbacks, on the callback thread or (ClientOptions::inline_callbacks) on the
// client's I/O thread: each runs exactly once, in the order the replies came, never on the
// caller's thread; calls made from an inline callback go out from there.
#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

ClientOptions with_inline(ClientOptions options, bool inline_callbacks) {
  options.inline_callbacks = inline_callbacks;
  return options;
}

// An echo service whose handler runs on its I/O thread: it answers in arrival order.
struct OrderedEcho {
  Client client;
  Service service;
  explicit OrderedEcho(const Broker& broker)
      : client(at(broker, "echo-instance")), service(client, "echo", {.on_io_thread = true}) {
    service.handle("echo", [](const Request& r) { return std::string(r.payload); });
    service.start();
    REQUIRE(service.wait_registered(5s));
  }
};

}  // namespace

TEST_CASE("callbacks run once each, in reply order, off the caller's thread",
          "[reqrep][async][callbacks]") {
  const bool inline_callbacks = GENERATE(false, true);
  CAPTURE(inline_callbacks);
  Broker broker;
  OrderedEcho echo(broker);
  Client caller(with_inline(at(broker), inline_callbacks));

  constexpr int kCalls = 200;
  std::mutex mutex;
  std::vector<std::string> payloads;
  std::vector<std::thread::id> threads;
  std::promise<void> all_done;
  for (int i = 0; i < kCalls; ++i)
    caller.call_async("echo", "echo", std::to_string(i), {.timeout = 10s}, [&](Reply r) {
      std::lock_guard lock(mutex);
      payloads.push_back(r.ok() ? r.payload : "failed: " + r.message);
      threads.push_back(std::this_thread::get_id());
      if (payloads.size() == kCalls) all_done.set_value();
    });
  REQUIRE(all_done.get_future().wait_for(10s) == std::future_status::ready);

  std::lock_guard lock(mutex);
  for (int i = 0; i < kCalls; ++i)
    REQUIRE(payloads[static_cast<std::size_t>(i)] == std::to_string(i));
  for (const auto& thread : threads) {
    CHECK(thread == threads.front());  // one thread runs them, one at a time
    CHECK(thread != std::this_thread::get_id());
  }
}

TEST_CASE("an inline callback's own calls: call_async goes out, a synchronous call is refused",
          "[reqrep][async][callbacks]") {
  Broker broker;
  OrderedEcho echo(broker);
  Client caller(with_inline(at(broker), true));

  SECTION("chains of calls, each made from the callback of the one before") {
    constexpr int kChains = 8, kLinks = 300;
    std::atomic<int> wrong{0}, ended{0};
    std::promise<void> all_done;
    std::function<void(int, int)> link = [&](int chain, int n) {
      const std::string token = std::to_string(chain) + "/" + std::to_string(n);
      caller.call_async("echo", "echo", token, {.timeout = 10s}, [&, chain, n, token](Reply r) {
        if (!r.ok() || r.payload != token) ++wrong;
        if (n + 1 < kLinks) return link(chain, n + 1);
        if (++ended == kChains) all_done.set_value();
      });
    };
    for (int chain = 0; chain < kChains; ++chain)
      link(chain, 0);
    REQUIRE(all_done.get_future().wait_for(20s) == std::future_status::ready);
    CHECK(wrong == 0);
  }
  SECTION("a synchronous call from the callback fails INVALID_ARGUMENT at once") {
    std::promise<Status> nested;
    caller.call_async("echo", "echo", "x", {}, [&](Reply) {
      nested.set_value(status_of([&] { caller.call("echo", "echo", "y"); }));
    });
    auto outcome = nested.get_future();
    REQUIRE(outcome.wait_for(5s) == std::future_status::ready);
    CHECK(outcome.get() == Status::invalid_argument);
    // The client still works.
    CHECK(caller.call("echo", "echo", "z").payload == "z");
  }
}

// A thread in call() may be the one reading the client's socket (Engine::call): the inline
// callbacks of the replies it reads are the I/O thread's to run, not that caller's.
TEST_CASE("inline callbacks of replies a synchronous caller reads run on the I/O thread",
          "[reqrep][async][callbacks][threads]") {
  Broker broker;
  OrderedEcho echo(broker);
  Client caller(with_inline(at(broker), true));

  constexpr int kCalls = 300;
  std::atomic<bool> stop{false};
  std::atomic<int> sync_calls{0}, sync_failed{0};
  std::promise<std::thread::id> sync_thread;
  std::thread sync([&] {
    sync_thread.set_value(std::this_thread::get_id());
    while (!stop) {
      try {
        caller.call("echo", "echo", "sync", {.timeout = 10s});
        ++sync_calls;
      } catch (const Error&) {
        ++sync_failed;
      }
    }
  });
  const auto sync_id = sync_thread.get_future().get();

  std::mutex mutex;
  std::vector<std::thread::id> threads;
  int wrong = 0;
  std::promise<void> all_done;
  for (int i = 0; i < kCalls; ++i) {
    const std::string token = "async-" + std::to_string(i);
    caller.call_async("echo", "echo", token, {.timeout = 10s}, [&, token](Reply r) {
      std::lock_guard lock(mutex);
      if (!r.ok() || r.payload != token) ++wrong;
      threads.push_back(std::this_thread::get_id());
      if (threads.size() == kCalls) all_done.set_value();
    });
    if (i % 10 == 0) std::this_thread::yield();
  }
  const bool done = all_done.get_future().wait_for(20s) == std::future_status::ready;
  stop = true;
  sync.join();
  REQUIRE(done);

  std::lock_guard lock(mutex);
  CHECK(wrong == 0);
  CHECK(sync_failed == 0);
  CHECK(sync_calls > 0);
  for (const auto& thread : threads) {
    CHECK(thread == threads.front());
    CHECK(thread != sync_id);
    CHECK(thread != std::this_thread::get_id());
  }
}

TEST_CASE("a client destroyed with calls outstanding runs each callback once, CANCELLED",
          "[reqrep][async][callbacks][lifecycle]") {
  const bool inline_callbacks = GENERATE(false, true);
  CAPTURE(inline_callbacks);
  Broker broker;
  GatedService held(broker.endpoint(), "held", 8);
  Client admin(at(broker, "admin"));

  constexpr int kCalls = 5;
  std::atomic<int> cancelled{0}, other{0};
  auto doomed = std::make_unique<Client>(with_inline(at(broker, "doomed"), inline_callbacks));
  for (int i = 0; i < kCalls; ++i)
    doomed->call_async("held", "wait", "", {.timeout = 20s},
                       [&](Reply r) { ++(r.status == Status::cancelled ? cancelled : other); });
  REQUIRE(eventually([&] { return in_flight(admin, "held") == kCalls; }, 5s));
  doomed.reset();  // returns after every callback has run
  CHECK(cancelled == kCalls);
  CHECK(other == 0);
}

TEST_CASE("call_async with an invalid name runs its callback with INVALID_ARGUMENT",
          "[reqrep][async][callbacks][errors]") {
  const bool inline_callbacks = GENERATE(false, true);
  CAPTURE(inline_callbacks);
  Broker broker;
  Client caller(with_inline(at(broker), inline_callbacks));
  std::promise<Reply> outcome;
  caller.call_async("bad name!", "echo", "x", {}, [&](Reply r) { outcome.set_value(r); });
  auto reply = outcome.get_future();
  REQUIRE(reply.wait_for(5s) == std::future_status::ready);
  const auto r = reply.get();
  CHECK(r.status == Status::invalid_argument);
  CHECK_THAT(r.message, Catch::Contains("service name"));
}
