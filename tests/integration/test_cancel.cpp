// Cancellation through the real broker: a caller's CancelToken or Stream::cancel reaches
// the handler and frees the instance's slot at once; a caller that dies cancels its calls
// at the services (docs/protocol.md, "Cancellation").
#include <algorithm>
#include <atomic>
#include <csignal>
#include <future>
#include <mutex>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

using Clock = std::chrono::steady_clock;

// Service `name` (max_inflight 1, two workers) whose method "hold" runs until its call
// is cancelled (or 10 s), recording when each call started and when it saw the cancel;
// "echo" answers at once.
class Holder {
 public:
  Holder(const Broker& broker, const std::string& name, std::size_t max_inflight = 1)
      : client_(at(broker, name + "-instance")),
        service_(client_, name, {.max_inflight = max_inflight, .workers = max_inflight + 1}) {
    service_.handle("hold", [this](const Request& req) -> std::string {
      std::promise<void> cancelled;
      auto registration = req.context.cancel.on_cancel([&] {
        record_(cancelled_at_, Clock::now());
        cancelled.set_value();
      });
      record_(started_at_, Clock::now());
      (void)cancelled.get_future().wait_for(10s);
      req.context.cancel.forget(registration);
      return "held";
    });
    service_.handle("echo", [](const Request& req) { return std::string(req.payload); });
    service_.start();
    REQUIRE(service_.wait_registered(5s));
  }
  std::size_t started() const { return size_(started_at_); }
  std::size_t cancelled() const { return size_(cancelled_at_); }
  Clock::time_point cancelled_at(std::size_t i) const {
    std::lock_guard lock(mutex_);
    return cancelled_at_.at(i);
  }

 private:
  void record_(std::vector<Clock::time_point>& list, Clock::time_point t) {
    std::lock_guard lock(mutex_);
    list.push_back(t);
  }
  std::size_t size_(const std::vector<Clock::time_point>& list) const {
    std::lock_guard lock(mutex_);
    return list.size();
  }
  mutable std::mutex mutex_;
  std::vector<Clock::time_point> started_at_, cancelled_at_;
  Client client_;
  Service service_;
};

}  // namespace

TEST_CASE("a cancel token ends a call CANCELLED at once", "[cancel]") {
  Broker broker;
  Holder holder(broker, "work");
  Client caller(at(broker, "caller"));
  CancelToken token;
  auto reply = caller.call_async("work", "hold", "", {.timeout = 10s, .cancel = token});
  REQUIRE(eventually([&] { return holder.started() == 1; }, 5s));
  token.cancel("the user closed the page");
  REQUIRE(reply.wait_for(1s) == std::future_status::ready);
  const Error e = error_of([&] { reply.get(); });
  CHECK(e.status() == Status::cancelled);
  CHECK(e.message() == "the user closed the page");
}

TEST_CASE("cancel reaches the handler within 10 ms and frees the instance", "[cancel]") {
  Broker broker;
  Holder holder(broker, "work");
  Client caller(at(broker, "caller"));
  std::vector<double> latencies_ms;
  for (std::size_t i = 0; i < 20; ++i) {
    CancelToken token;
    auto reply = caller.call_async("work", "hold", "", {.timeout = 10s, .cancel = token});
    REQUIRE(eventually([&] { return holder.started() == i + 1; }, 5s));
    const auto cancelled = Clock::now();
    token.cancel();
    REQUIRE(eventually([&] { return holder.cancelled() == i + 1; }, 5s));
    latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(holder.cancelled_at(i) - cancelled).count());
    // The instance (max_inflight 1) takes new work at once: its slot is free.
    CHECK(caller.call("work", "echo", "next", {.timeout = 2s}).payload == "next");
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  INFO("cancel to handler, ms: median " << latencies_ms[10] << ", max " << latencies_ms.back());
  CHECK(latencies_ms[10] < 10.0);
}

TEST_CASE("the slot is free while a cancelled handler still runs", "[cancel]") {
  Broker broker;
  Client instance(at(broker, "instance"));
  // A handler that ignores the cancel: the broker must not wait for it.
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  Service service(instance, "stubborn", {.max_inflight = 1, .workers = 2});
  service.handle("wait", [&](const Request&) {
    (void)opened.wait_for(10s);
    return std::string("late");
  });
  service.handle("echo", [](const Request& req) { return std::string(req.payload); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  CancelToken token;
  auto first = caller.call_async("stubborn", "wait", "", {.timeout = 10s, .cancel = token});
  REQUIRE(eventually([&] { return in_flight(caller, "stubborn") == 1; }, 5s));
  token.cancel();
  CHECK(caller.call("stubborn", "echo", "now", {.timeout = 2s}).payload == "now");
  gate.set_value();
  CHECK(status_of([&] { first.get(); }) == Status::cancelled);
}

TEST_CASE("a cancelled stream stops its writer", "[cancel][stream]") {
  Broker broker;
  Client instance(at(broker, "instance"));
  Service service(instance, "tokens", {.max_inflight = 1});
  std::promise<Status> writer_end;
  service.handle_stream("forever", [&](const Request&, StreamWriter& out) {
    try {
      for (;;)
        out.write("token");
    } catch (const Error& e) {
      writer_end.set_value(e.status());
      throw;
    }
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  Stream stream = caller.stream("tokens", "forever", "", {.timeout = 10s, .window_bytes = 256});
  REQUIRE(stream.next().has_value());
  stream.cancel();
  CHECK(status_of([&] { (void)stream.next(); }) == Status::cancelled);
  auto ended = writer_end.get_future();
  REQUIRE(ended.wait_for(5s) == std::future_status::ready);
  CHECK(ended.get() == Status::cancelled);
}

TEST_CASE("a caller killed with calls in flight cancels them at the services", "[cancel]") {
  Broker broker;
  Holder holder(broker, "work", 3);
  TempDir dir;
  Process doomed(
      {test_peer_path(), broker.endpoint(), "call", "doomed", "work", "hold", "3", "20000"},
      dir.path() + "/doomed.log");
  REQUIRE(doomed.wait_for_log("called 3", 10s));
  REQUIRE(eventually([&] { return holder.started() == 3; }, 5s));
  doomed.signal(SIGKILL);
  REQUIRE(doomed.wait_exit(5s) != -1);
  CHECK(eventually([&] { return holder.cancelled() == 3; }, 5s));
  Client probe(at(broker, "probe"));
  CHECK(eventually([&] { return in_flight(probe, "work") == 0; }, 5s));
}
