// Start order, broker restarts, lost instances: the failures the old queue system could
// not survive, each ending in a clear outcome without retry code in the caller.
#include <csignal>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

std::unique_ptr<Process> echo_process(const Broker& broker, const TempDir& dir,
                                      const std::string& log, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv{echo_service_path(), "--endpoint", broker.endpoint()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = std::make_unique<Process>(argv, dir.path() + "/" + log);
  REQUIRE(p->wait_for_log("ready", 10s));
  return p;
}

}  // namespace

TEST_CASE("a caller and a service started 2 s before the broker: the first call succeeds",
          "[lifecycle][startup]") {
  Broker broker({}, /*start_now=*/false);
  Client service_client(at(broker.endpoint(), "early-service"));
  Service service(service_client, "early");
  service.handle("echo", [](const Request& r) { return std::string(r.payload); });
  service.start();
  Client caller(at(broker.endpoint(), "early-caller"));
  auto first =
      caller.call_async("early", "echo", "first", {.timeout = 15s, .wait_for_ready = true});

  std::this_thread::sleep_for(2s);  // the scenario: the broker comes up two seconds later
  CHECK_FALSE(caller.connected());
  broker.start();

  CHECK(first.get().payload == "first");
}

TEST_CASE("without wait_for_ready, a call fails fast with UNAVAILABLE while the broker is down",
          "[lifecycle][startup]") {
  Client caller(at("tcp://127.0.0.1:" + std::to_string(free_port())));
  const auto started = std::chrono::steady_clock::now();
  try {
    caller.call("any", "echo", "x", {.timeout = 10s});
    FAIL("the call should have failed");
  } catch (const Error& e) {
    CHECK(e.status() == Status::unavailable);
    CHECK_THAT(e.what(), Catch::Contains("not connected to sage-busd"));
  }
  CHECK(std::chrono::steady_clock::now() - started < 2s);
}

TEST_CASE(
    "a service SIGKILLed with calls in flight: they end UNAVAILABLE at once, "
    "a second instance serves what follows",
    "[lifecycle][failover]") {
  Broker broker;
  TempDir dir;
  auto doomed = echo_process(broker, dir, "doomed.log", {"--delay-ms", "30000"});
  Client caller(at(broker.endpoint()));

  std::vector<std::future<Reply>> in_flight_calls;
  for (int i = 0; i < 4; ++i)
    in_flight_calls.push_back(caller.call_async("echo", "echo", "x", {.timeout = 10s}));
  REQUIRE(eventually([&] { return in_flight(caller, "echo") == 4; }, 5s));
  auto survivor = echo_process(broker, dir, "survivor.log");

  const auto killed_at = std::chrono::steady_clock::now();
  doomed->signal(SIGKILL);
  for (auto& f : in_flight_calls) {
    try {
      f.get();
      FAIL("a call on the killed instance should have failed");
    } catch (const Error& e) {
      CHECK(e.status() == Status::unavailable);
    }
  }
  const auto detected_after = std::chrono::steady_clock::now() - killed_at;
  INFO("calls ended "
       << std::chrono::duration_cast<std::chrono::milliseconds>(detected_after).count()
       << " ms after the kill");
  CHECK(detected_after < 1s);  // the connection's close is seen, not the 3 s lease

  for (int i = 0; i < 10; ++i)
    CHECK(caller.call("echo", "echo", "after").payload == "after");
}

TEST_CASE("an idempotent call on a lost instance is retried once on another",
          "[lifecycle][failover]") {
  Broker broker;
  TempDir dir;
  auto doomed = echo_process(broker, dir, "doomed.log", {"--delay-ms", "30000"});
  Client caller(at(broker.endpoint()));
  auto call = caller.call_async("echo", "echo", "again", {.timeout = 10s, .idempotent = true});
  REQUIRE(eventually([&] { return in_flight(caller, "echo") == 1; }, 5s));
  auto survivor = echo_process(broker, dir, "survivor.log");
  doomed->signal(SIGKILL);
  CHECK(call.get().payload == "again");
  CHECK(broker_status(caller).counters().retried() == 1);
}

TEST_CASE("after a broker restart, services re-register and callers go on without user code",
          "[lifecycle][restart]") {
  std::vector<std::string> args{"--heartbeat-ms", "200"};
  auto broker = std::make_unique<Broker>(args);
  Client service_client(at(broker->endpoint(), "phoenix-service"));
  Service service(service_client, "phoenix");
  service.handle("echo", [](const Request& r) { return std::string(r.payload); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker->endpoint()));
  REQUIRE(caller.call("phoenix", "echo", "before").payload == "before");

  // Same endpoint, new process.
  const auto endpoint = broker->endpoint();
  REQUIRE(WIFEXITED(broker->stop()));
  REQUIRE(eventually([&] { return !caller.connected(); }, 5s));
  TempDir dir;
  Process again({busd_path(), "--endpoint", endpoint, "--heartbeat-ms", "200"},
                dir.path() + "/b.log");
  REQUIRE(again.wait_for_log("listening on", 10s));

  CHECK(caller.call("phoenix", "echo", "after", {.timeout = 10s, .wait_for_ready = true}).payload ==
        "after");
  service.stop();
}

TEST_CASE("sage-busd exits 0 on SIGTERM and on SIGINT", "[lifecycle][broker]") {
  for (int sig : {SIGTERM, SIGINT}) {
    Broker broker;
    broker.process().signal(sig);
    const int status = broker.process().wait_exit(10s);
    REQUIRE(status != -1);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}
