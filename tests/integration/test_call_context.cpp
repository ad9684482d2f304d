// Call context through the real broker: a chain of calls made through each request's
// context shares one deadline, one trace id and one cancellation (docs/sdk.md, "Call
// context").
#include <atomic>
#include <future>
#include <mutex>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

struct Seen {
  std::string trace_id;
  std::chrono::steady_clock::time_point deadline;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> started{false};
};

}  // namespace

TEST_CASE("a chain of three services shares one deadline and one trace id and "
          "cancelling the first stops all three",
          "[context]") {
  Broker broker;
  Seen a, b, c;
  std::mutex mutex;
  auto record = [&](Seen& seen, const Request& req) {
    std::lock_guard lock(mutex);
    seen.trace_id = std::string(req.trace_id());
    seen.deadline = req.deadline;
    seen.started = true;
  };
  // Each stage calls the next through its request's context and reports whether its
  // call ended CANCELLED; the last waits for its cancellation.
  Client host(at(broker, "host"));
  Service sa(host, "stage-a", {.max_inflight = 2}), sb(host, "stage-b", {.max_inflight = 2}),
      sc(host, "stage-c", {.max_inflight = 2});
  auto forward = [&](Seen& seen, const std::string& next) {
    return [&, next](const Request& req) -> std::string {
      record(seen, req);
      try {
        return host.call(next, "run", req.payload, {.context = req.context}).payload;
      } catch (const Error& e) {
        if (e.status() == Status::cancelled) seen.cancelled = true;
        throw;
      }
    };
  };
  sa.handle("run", forward(a, "stage-b"));
  sb.handle("run", forward(b, "stage-c"));
  sc.handle("run", [&](const Request& req) -> std::string {
    record(c, req);
    std::promise<void> gone;
    auto registration = req.context.cancel.on_cancel([&] { gone.set_value(); });
    if (gone.get_future().wait_for(10s) == std::future_status::ready) c.cancelled = true;
    req.context.cancel.forget(registration);
    return "done";
  });
  for (Service* s : {&sa, &sb, &sc}) {
    s->start();
    REQUIRE(s->wait_registered(5s));
  }
  Client caller(at(broker, "caller"));
  CancelToken token;
  auto reply = caller.call_async("stage-a", "run", "", {.timeout = 8s, .cancel = token});
  REQUIRE(eventually([&] { return c.started.load(); }, 5s));
  {
    std::lock_guard lock(mutex);
    CHECK(a.trace_id.size() == 32);
    CHECK(b.trace_id == a.trace_id);
    CHECK(c.trace_id == a.trace_id);
    // One deadline: each stage's is its caller's (same host: carried exactly, to the µs).
    CHECK(b.deadline == a.deadline);
    CHECK(c.deadline == a.deadline);
  }
  token.cancel();
  CHECK(status_of([&] { reply.get(); }) == Status::cancelled);
  CHECK(eventually([&] { return c.cancelled.load(); }, 5s));
  CHECK(eventually([&] { return b.cancelled.load(); }, 5s));
  CHECK(eventually([&] { return a.cancelled.load(); }, 5s));
}

TEST_CASE("a call made within a context whose deadline passed is refused",
          "[context]") {
  Broker broker;
  Client caller(at(broker, "caller"));
  CallContext context{std::chrono::steady_clock::now() - 1ms, {}, {}};
  CHECK(status_of([&] { caller.call("anything", "m", "", {.context = context}); }) ==
        Status::deadline_exceeded);
}

TEST_CASE("a caller's traceparent reaches the handler's trace id", "[context]") {
  Broker broker;
  Client instance(at(broker, "instance"));
  Service service(instance, "traced", {.max_inflight = 1});
  service.handle("id", [](const Request& req) { return std::string(req.trace_id()); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  CHECK(caller.call("traced", "id", "", {.traceparent = tp}).payload ==
        "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(status_of([&] { caller.call("traced", "id", "", {.traceparent = "00-nonsense"}); }) ==
        Status::invalid_argument);
}
