// busctl against a real broker and service: output, --json, and errors as
// "STATUS_NAME: message" with a non-zero exit code.
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

TEST_CASE("busctl shows status and services, calls, and reports errors", "[busctl]") {
  Broker broker;
  Client instance_client({.endpoint = broker.endpoint(), .name = "busctl-echo"});
  Service echo(instance_client, "echo");
  echo.handle("echo", [](const Request& r) { return std::string(r.payload); });
  echo.start();
  REQUIRE(echo.wait_registered(5s));
  auto busctl = [&](std::vector<std::string> args, std::string_view input = {}) {
    args.insert(args.begin(), {busctl_path(), "--endpoint", broker.endpoint()});
    return run(args, input);
  };

  SECTION("status") {
    const auto r = busctl({"status"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("clients"));
  }
  SECTION("status --json is JSON with the broker's counters") {
    const auto r = busctl({"status", "--json"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::StartsWith("{"));
    CHECK_THAT(r.out, Catch::Contains("\"counters\""));
  }
  SECTION("services lists the instance") {
    const auto r = busctl({"services"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("echo"));
    CHECK_THAT(r.out, Catch::Contains("busctl-echo"));
  }
  SECTION("call prints the reply") {
    const auto r = busctl({"call", "echo", "echo", "hello"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "hello\n");
  }
  SECTION("call reads the payload from stdin with -") {
    const auto r = busctl({"call", "echo", "echo", "-"}, "from stdin");
    CHECK(r.exit_code == 0);
    CHECK(r.out == "from stdin\n");
  }
  SECTION("stats prints the broker's metrics, filtered by a name prefix") {
    const auto r = busctl({"stats", "sagebus_clients"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::StartsWith("METRIC"));
    CHECK_THAT(r.out, Catch::Contains("sagebus_clients"));
    CHECK_THAT(r.out, !Catch::Contains("sagebus_requests"));
    const auto json = busctl({"stats", "--json"});
    CHECK(json.exit_code == 0);
    CHECK_THAT(json.out, Catch::StartsWith("[{\"metric\":"));
  }
  SECTION("a failed call prints STATUS_NAME: message and exits non-zero") {
    const auto r = busctl({"call", "nosuch", "echo", "x"});
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::StartsWith("NO_RESPONDERS: "));
  }
  echo.stop();
}

TEST_CASE("busctl clients shows each connection's lease, and which hold the idle one",
          "[busctl][lease]") {
  // Leases of 400 ms and, idle, 4 s.
  Broker broker({"--heartbeat-ms", "100", "--liveness", "4", "--idle-heartbeat-ms", "1000"});
  Client serving({.endpoint = broker.endpoint(), .name = "busctl-serving"});
  Service echo(serving, "echo");
  echo.handle("echo", [](const Request& r) { return std::string(r.payload); });
  echo.start();
  REQUIRE(echo.wait_registered(5s));
  Client idle({.endpoint = broker.endpoint(), .name = "busctl-idle"});
  REQUIRE(idle.wait_connected(5s));
  // The row of connection `name` in `busctl clients`, or "" when it has none.
  const auto row = [&](const std::string& name) {
    const auto r = run({busctl_path(), "--endpoint", broker.endpoint(), "clients"});
    REQUIRE(r.exit_code == 0);
    REQUIRE_THAT(r.out, Catch::StartsWith("NAME") && Catch::Contains("LEASE"));
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind(name + " ", 0) == 0) return line;
    return std::string();
  };
  // The idle client says idle with its first heartbeat, a heartbeat after its WELCOME.
  CHECK(eventually([&] { return row("busctl-idle").find(" 4s idle ") != std::string::npos; }, 5s));
  const std::string serving_row = row("busctl-serving");
  CHECK_THAT(serving_row, Catch::Contains(" 400ms ") && !Catch::Contains("idle"));
  echo.stop();
}

TEST_CASE("busctl says clearly when the broker cannot be reached", "[busctl]") {
  const auto endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const auto r = run({busctl_path(), "--endpoint", endpoint, "--timeout", "500", "status"});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::StartsWith("UNAVAILABLE: "));
  CHECK_THAT(r.err, Catch::Contains(endpoint));
}
