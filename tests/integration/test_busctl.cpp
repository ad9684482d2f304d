// busctl against a real broker and service: output, --json, and errors as
// "STATUS_NAME: message" with a non-zero exit code.
#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <future>
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

namespace {

// The first line of `text` that begins with `prefix`, without its '\n'; "" when none.
std::string line_starting(const std::string& text, const std::string& prefix) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(prefix, 0) == 0) return line;
  return {};
}

}  // namespace

TEST_CASE("busctl queue ls stat peek purge declare and store compact with a store",
          "[busctl][store]") {
  TempDir dir;
  const std::string store = dir.path() + "/store.db";
  Broker broker({"--store", store});
  auto busctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {busctl_path(), "--endpoint", broker.endpoint()});
    return run(args);
  };
  for (const std::string item : {"item-1", "item-2", "item-3"})
    REQUIRE(busctl({"queue", "put", "jobs", item}).exit_code == 0);

  // queue ls, and queues as before: the queue durable, its 18 bytes, then the store.
  for (const std::string command : {"ls", "queues"}) {
    const auto ls = command == "ls" ? busctl({"queue", "ls"}) : busctl({"queues"});
    INFO(ls.out << ls.err);
    CHECK(ls.exit_code == 0);
    CHECK_THAT(ls.out, Catch::StartsWith("NAME ") && Catch::Contains(" DURABLE ") &&
                           Catch::Contains(" BYTES "));
    CHECK_THAT(line_starting(ls.out, "jobs "),
               Catch::Matches("jobs +legacy\\.jobs +yes +3/[0-9]+ +18 .*"));
    CHECK_THAT(
        line_starting(ls.out, "store "),
        Catch::StartsWith("store " + store + ": ") &&
            Catch::Matches("store .*: [0-9]+ bytes, [0-9]+ commits?, last commit [0-9]+ µs"));
  }
  const auto status = busctl({"status"});
  CHECK(status.exit_code == 0);
  CHECK_THAT(status.out, Catch::Contains("\nstore " + store + ": "));

  const auto stat = busctl({"queue", "stat", "jobs"});
  INFO(stat.out << stat.err);
  CHECK(stat.exit_code == 0);
  CHECK_THAT(line_starting(stat.out, "depth:"), Catch::Matches("depth: +3"));
  CHECK_THAT(line_starting(stat.out, "durable:"), Catch::Matches("durable: +true"));
  CHECK_THAT(busctl({"queue", "stat", "jobs", "--json"}).out,
             Catch::StartsWith("{\"name\":\"jobs\"") && Catch::Contains("\"depth\":3"));
  CHECK_THAT(busctl({"queue", "stat", "nosuch"}).err, Catch::StartsWith("NOT_FOUND: "));

  // peek: the first two in order, never handed out, and nothing taken.
  const auto peek = busctl({"queue", "peek", "jobs", "-n", "2"});
  INFO(peek.out << peek.err);
  CHECK(peek.exit_code == 0);
  std::istringstream lines(peek.out);
  std::string header, first, second, rest;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  CHECK_THAT(header, Catch::Matches("SEQ +DELIVERIES +PAYLOAD"));
  CHECK_THAT(first, Catch::Matches("[0-9]+ +0 +item-1"));
  CHECK_THAT(second, Catch::Matches("[0-9]+ +0 +item-2"));
  CHECK_FALSE(std::getline(lines, rest));
  if (!first.empty() && !second.empty()) CHECK(std::stoull(first) < std::stoull(second));
  CHECK_THAT(busctl({"queue", "peek", "jobs", "--json"}).out,
             Catch::Matches("\\[\\{\"seq\":[0-9]+,\"deliveries\":0,\"payload\":\"item-1\"\\},"
                            "\\{\"seq\":[0-9]+,\"deliveries\":0,\"payload\":\"item-2\"\\},"
                            "\\{\"seq\":[0-9]+,\"deliveries\":0,\"payload\":\"item-3\"\\}\\]\n"));
  CHECK_THAT(line_starting(busctl({"queue", "stat", "jobs"}).out, "depth:"),
             Catch::Matches("depth: +3"));

  // Durable is the default: declaring it so only checks.
  const auto durable = busctl({"queue", "declare", "jobs"});
  CHECK(durable.exit_code == 0);
  CHECK(durable.out == "jobs is durable: its items are in the broker's store\n");
  CHECK(busctl({"queue", "declare", "later", "--json"}).out ==
        "{\"queue\":\"later\",\"durable\":true,\"exists\":false}\n");

  const auto purge = busctl({"queue", "purge", "jobs"});
  CHECK(purge.exit_code == 0);
  CHECK(purge.out == "purged 3 items from jobs\n");
  CHECK_THAT(line_starting(busctl({"queue", "stat", "jobs"}).out, "depth:"),
             Catch::Matches("depth: +0"));
  CHECK(busctl({"queue", "purge", "jobs", "--json"}).out == "{\"queue\":\"jobs\",\"purged\":0}\n");

  const auto declared = busctl({"queue", "declare", "scratch", "--transient"});
  CHECK(declared.exit_code == 0);
  CHECK_THAT(declared.out, Catch::StartsWith("declared scratch transient"));
  const auto json = busctl({"queue", "ls", "--json"});
  INFO(json.out);
  CHECK_THAT(json.out, Catch::Matches(".*\\{\"name\":\"scratch\",[^}]*\"durable\":false.*\n"));
  CHECK_THAT(json.out, Catch::Matches(".*\\{\"name\":\"jobs\",[^}]*\"durable\":true.*\n"));
  const auto not_durable = busctl({"queue", "declare", "scratch"});
  CHECK(not_durable.exit_code == 1);
  CHECK_THAT(not_durable.err,
             Catch::StartsWith("INVALID_ARGUMENT: ") && Catch::Contains("declared transient"));

  const auto compact = busctl({"store", "compact"});
  INFO(compact.out << compact.err);
  CHECK(compact.exit_code == 0);
  CHECK_THAT(compact.out, Catch::StartsWith("compacted " + store));
  CHECK_THAT(
      line_starting(compact.out, "store "),
      Catch::StartsWith("store " + store + ": ") && Catch::Matches("store .*: [0-9]+ bytes, .*"));
  CHECK_THAT(
      busctl({"store", "compact", "--json"}).out,
      Catch::StartsWith("{\"path\":\"" + store + "\"") && Catch::Contains("\"available\":true"));
}

TEST_CASE("busctl says when the broker has no store and store compact fails UNAVAILABLE",
          "[busctl][store]") {
  Broker broker;
  auto busctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {busctl_path(), "--endpoint", broker.endpoint()});
    return run(args);
  };
  REQUIRE(busctl({"queue", "put", "jobs", "x"}).exit_code == 0);
  const auto ls = busctl({"queue", "ls"});
  INFO(ls.out << ls.err);
  CHECK(ls.exit_code == 0);
  CHECK_THAT(line_starting(ls.out, "jobs "), Catch::Matches("jobs +legacy\\.jobs +no +1/.*"));
  CHECK_THAT(ls.out, Catch::EndsWith("\nno store: queues live in memory\n"));
  CHECK_THAT(busctl({"status"}).out, Catch::Contains("\nno store: queues live in memory\n"));

  const auto compact = busctl({"store", "compact"});
  CHECK(compact.exit_code == 1);
  CHECK(compact.out.empty());
  CHECK_THAT(compact.err, Catch::StartsWith("UNAVAILABLE: ") && Catch::Contains("--store"));
  const auto declare = busctl({"queue", "declare", "jobs"});
  CHECK(declare.exit_code == 1);
  CHECK_THAT(declare.err, Catch::StartsWith("UNAVAILABLE: ") && Catch::Contains("--store"));
  CHECK(busctl({"queue", "declare", "jobs", "--transient"}).exit_code == 0);
}

TEST_CASE("busctl calls lists the calls in flight and filters them by service", "[busctl][calls]") {
  Broker broker;
  GatedService gated(broker.endpoint(), "gated", 1);
  Client caller(at(broker, "busctl-caller"));
  auto first = caller.call_async("gated", "wait", "one", {.timeout = 20s});
  auto second = caller.call_async("gated", "wait", "two", {.timeout = 20s});
  Client observer(at(broker, "busctl-observer"));
  REQUIRE(eventually([&] { return in_flight(observer, "gated") == 1; }, 5s));
  auto busctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {busctl_path(), "--endpoint", broker.endpoint()});
    return run(args);
  };

  const auto table = busctl({"calls"});
  INFO(table.out << table.err);
  CHECK(table.exit_code == 0);
  CHECK_THAT(table.out, Catch::StartsWith("SERVICE  METHOD  CALLER"));
  CHECK_THAT(table.out, Catch::Contains("STATE") && Catch::Contains("TRACE"));
  CHECK_THAT(line_starting(table.out, "gated "),
             Catch::Matches("gated +wait +busctl-caller +gated-instance +dispatched .*"));
  CHECK_THAT(table.out, Catch::Contains("waiting"));

  const auto json = busctl({"calls", "--json"});
  CHECK(json.exit_code == 0);
  CHECK_THAT(json.out, Catch::Contains("\"state\":\"CALL_DISPATCHED\"") &&
                           Catch::Contains("\"state\":\"CALL_WAITING\"") &&
                           Catch::Contains("\"total\":2") &&
                           Catch::Contains("\"instance_client\":\"gated-instance\""));

  const auto other = busctl({"calls", "--service", "other"});
  CHECK(other.exit_code == 0);
  CHECK(line_starting(other.out, "gated ").empty());

  gated.open();
  CHECK(first.get().payload == "one");
  CHECK(second.get().payload == "two");
}

TEST_CASE("busctl call streams chunks with --stream and gathers with --all", "[busctl][stream]") {
  Broker broker;
  Client instance_client(at(broker, "busctl-streamer"));
  Service svc(instance_client, "gen", {.max_inflight = 4});
  svc.handle_stream("count", [](const Request& req, StreamWriter& out) {
    for (int i = 1; i <= std::stoi(std::string(req.payload)); ++i)
      out.write(std::to_string(i) + "\n");
  });
  svc.handle("who", [](const Request& req) {
    std::string answer = "busctl-streamer";
    for (const auto& [k, v] : req.headers)
      answer += " " + k + "=" + v;
    return answer + " " + std::string(req.trace_id());
  });
  svc.start();
  REQUIRE(svc.wait_registered(5s));
  auto busctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {busctl_path(), "--endpoint", broker.endpoint()});
    return run(args);
  };

  const auto streamed = busctl({"call", "gen", "count", "3", "--stream"});
  INFO(streamed.out << streamed.err);
  CHECK(streamed.exit_code == 0);
  CHECK(streamed.out == "1\n2\n3\n");
  const auto streamed_json = busctl({"call", "gen", "count", "2", "--stream", "--json"});
  CHECK(streamed_json.out ==
        "{\"chunk\":true,\"payload\":\"1\\n\"}\n{\"chunk\":true,\"payload\":\"2\\n\"}\n"
        "{\"status\":\"OK\"}\n");

  const auto gathered = busctl({"call", "gen", "who", "--all", "--header", "k=v", "--traceparent",
                                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
  INFO(gathered.out << gathered.err);
  CHECK(gathered.exit_code == 0);
  CHECK_THAT(gathered.out, Catch::StartsWith("asked 1 instance\nINSTANCE"));
  CHECK_THAT(gathered.out, Catch::Contains("busctl-streamer  OK      busctl-streamer k=v "
                                           "4bf92f3577b34da6a3ce929d0e0e4736"));

  CHECK(busctl({"call", "gen", "count", "--stream", "--all"}).exit_code == 2);
  CHECK(busctl({"call", "gen", "who", "--header", "novalue"}).exit_code == 2);
}

TEST_CASE("busctl call interrupted by SIGINT cancels the call at the instance",
          "[busctl][cancel]") {
  Broker broker;
  Client instance_client(at(broker, "busctl-holder"));
  Service svc(instance_client, "hold", {.max_inflight = 1});
  std::atomic<bool> started{false}, cancelled{false};
  svc.handle("wait", [&](const Request& req) {
    started = true;
    std::promise<void> gone;
    auto registration = req.context.cancel.on_cancel([&] { gone.set_value(); });
    if (gone.get_future().wait_for(10s) == std::future_status::ready) cancelled = true;
    req.context.cancel.forget(registration);
    return std::string("late");
  });
  svc.start();
  REQUIRE(svc.wait_registered(5s));
  TempDir dir;
  Process call({busctl_path(), "--endpoint", broker.endpoint(), "--timeout", "20000", "call",
                "hold", "wait"},
               dir.path() + "/busctl.log");
  REQUIRE(eventually([&] { return started.load(); }, 5s));
  call.signal(SIGINT);
  const int status = call.wait_exit(5s);
  REQUIRE(status != -1);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK_THAT(call.log(), Catch::Contains("CANCELLED"));
  CHECK(eventually([&] { return cancelled.load(); }, 5s));
}
