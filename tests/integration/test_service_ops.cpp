// sage-busd as an operator runs it: the config file and its errors, SIGHUP reload,
// SIGTERM drain, /metrics and /healthz, and the systemd unit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

const std::filesystem::path kDeploy =
    std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "deploy";

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A service "slow" whose method "wait" sleeps `ms` then echoes.
struct SlowService {
  Client client;
  Service service;
  SlowService(const std::string& endpoint, int ms)
      : client(at(endpoint, "slow-instance")), service(client, "slow", {.max_inflight = 16}) {
    service.handle("wait", [ms](const Request& r) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return std::string(r.payload);
    });
    service.start();
    REQUIRE(service.wait_registered(5s));
  }
};

struct HttpResponse {
  int status = 0;
  std::string body;
};

// A minimal HTTP/1.0 GET on 127.0.0.1.
HttpResponse http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return {};
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)::write(fd, request.data(), request.size());
  std::string raw;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    raw.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  HttpResponse r;
  if (raw.rfind("HTTP/1.", 0) == 0) r.status = std::stoi(raw.substr(9, 3));
  if (const auto body = raw.find("\r\n\r\n"); body != std::string::npos)
    r.body = raw.substr(body + 4);
  return r;
}

// The value of the sample `series` (name and labels exactly as printed), or -1.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  return -1;
}

}  // namespace

TEST_CASE(
    "every option is read from the config file, a flag overrides it, and --print-config "
    "reads back the same",
    "[ops][config]") {
  TempDir dir;
  const std::string file = dir.path() + "/busd.toml";
  write(file, "endpoint = [\"tcp://127.0.0.1:7001\", \"ipc://" + dir.path() +
                  "/b.sock\"]\n"
                  "log-level = \"debug\"\nheartbeat-ms = 250\nliveness = 4\nmax-payload = 4096\n"
                  "max-clients = 7\nmax-waiting = 8\nmax-calls = 9\npeer-queue = 10\n"
                  "max-subscriptions = 11\nmax-held = 12\nmax-queue-depth = 13\nmax-queues = 14\n"
                  "queue-topic = [\"jobs=work.jobs\"]\ndrain-timeout-ms = 15\nhttp = \"off\"\n");
  const auto printed = run({busd_path(), "--config", file, "--max-calls", "99", "--print-config"});
  REQUIRE(printed.exit_code == 0);
  for (const char* line :
       {"log-level = \"debug\"", "heartbeat-ms = 250", "liveness = 4", "max-payload = 4096",
        "max-clients = 7", "max-waiting = 8", "max-calls = 99", "peer-queue = 10",
        "max-subscriptions = 11", "max-held = 12", "max-queue-depth = 13", "max-queues = 14",
        "queue-topic = [\"jobs=work.jobs\"]", "drain-timeout-ms = 15", "http = \"off\""})
    CHECK(printed.out.find(std::string("\n") + line + "\n") != std::string::npos);
  CHECK(printed.out.find("endpoint = [\"tcp://127.0.0.1:7001\", \"ipc://" + dir.path() +
                         "/b.sock\"]") != std::string::npos);

  write(dir.path() + "/printed.toml", printed.out);
  const auto again = run({busd_path(), "--config", dir.path() + "/printed.toml", "--print-config"});
  CHECK(again.exit_code == 0);
  CHECK(again.out == printed.out);
}

TEST_CASE(
    "a bad config file fails the start naming the file, the key, the line and what was "
    "expected",
    "[ops][config]") {
  TempDir dir;
  const std::string file = dir.path() + "/bad.toml";
  SECTION("unknown key") {
    write(file, "log-level = \"info\"\nmax-call = 5\n");
    const auto r = run({busd_path(), "--config", file});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find(file + " line 2: unknown key 'max-call'") != std::string::npos);
  }
  SECTION("wrong type") {
    write(file, "# comment\nmax-calls = \"lots\"\n");
    const auto r = run({busd_path(), "--config", file});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find(file + " line 2: key 'max-calls'") != std::string::npos);
    CHECK(r.err.find("not in range 1 to") != std::string::npos);
  }
  SECTION("value out of range") {
    write(file, "heartbeat-ms = 1\n");
    const auto r = run({busd_path(), "--config", file});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find(file + " line 1: key 'heartbeat-ms'") != std::string::npos);
  }
  SECTION("unreadable path") {
    const auto r = run({busd_path(), "--config", dir.path() + "/missing.toml"});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("cannot read config file '" + dir.path() + "/missing.toml'") !=
          std::string::npos);
  }
}

TEST_CASE("SIGHUP changes the log level, spinning and a limit without dropping clients",
          "[ops][reload]") {
  TempDir dir;
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const std::string file = dir.path() + "/busd.toml";
  const std::string base = "endpoint = [\"" + endpoint + "\"]\nhttp = \"off\"\n";
  write(file, base + "log-level = \"info\"\n");
  Process busd({busd_path(), "--config", file}, dir.path() + "/busd.log");
  REQUIRE(busd.wait_for_log("listening on " + endpoint, 10s));
  SlowService slow(endpoint, 400);
  Client caller(at(endpoint, "ops-test"));
  REQUIRE(caller.call("slow", "wait", "before").payload == "before");
  const auto clients = broker_status(caller).clients();

  write(file, base + "log-level = \"debug\"\nmax-calls = 1\nspin-us = 0\n");
  busd.signal(SIGHUP);
  REQUIRE(busd.wait_for_log("reload: max-calls: 100000 -> 1", 5s));
  CHECK(busd.log().find("reload: log-level: info -> debug") != std::string::npos);
  CHECK(busd.log().find("reload: spin-us: 100 -> 0") != std::string::npos);

  // Still connected, and the new limit holds: one call fills the table.
  CHECK(broker_status(caller).clients() == clients);
  auto first = caller.call_async("slow", "wait", "first", {.timeout = 5s});
  REQUIRE(eventually([&] { return in_flight(caller, "slow") == 1; }, 5s));
  CHECK(status_of([&] { caller.call("slow", "wait", "second"); }) == Status::overloaded);
  CHECK(first.get().payload == "first");
  CHECK(busd.log().find("client left") == std::string::npos);
  // debug lines now appear
  REQUIRE(caller.call("slow", "wait", "after").payload == "after");
  CHECK(busd.wait_for_log("dispatched to instance", 5s));
}

TEST_CASE("SIGTERM with calls in flight: they complete, new calls get UNAVAILABLE, exit 0",
          "[ops][drain]") {
  const int http_port = free_port();
  Broker broker({"--http", "127.0.0.1:" + std::to_string(http_port)});
  SlowService slow(broker.endpoint(), 800);
  Client caller(at(broker.endpoint(), "ops-test"));
  auto a = caller.call_async("slow", "wait", "a", {.timeout = 10s});
  auto b = caller.call_async("slow", "wait", "b", {.timeout = 10s});
  REQUIRE(eventually([&] { return in_flight(caller, "slow") == 2; }, 5s));

  broker.process().signal(SIGTERM);
  REQUIRE(broker.process().wait_for_log("draining on SIGTERM: 2 calls in flight", 5s));
  const auto refused = error_of([&] { caller.call("slow", "wait", "late"); });
  CHECK(refused.status() == Status::unavailable);
  CHECK_THAT(refused.message(), Catch::Contains("draining"));
  CHECK(http_get(http_port, "/healthz").status == 503);

  CHECK(a.get().payload == "a");
  CHECK(b.get().payload == "b");
  const int status = broker.process().wait_exit(10s);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(broker.log().find("drained in") != std::string::npos);
  CHECK(broker.log().find("1 new requests refused") != std::string::npos);
}

TEST_CASE("/metrics is Prometheus text whose counters move with traffic, /healthz says ok",
          "[ops][http]") {
  const int http_port = free_port();
  Broker broker({"--http", "127.0.0.1:" + std::to_string(http_port)});
  REQUIRE(broker.process().wait_for_log("serving /metrics and /healthz", 5s));
  const auto health = http_get(http_port, "/healthz");
  CHECK(health.status == 200);
  CHECK(health.body == "ok\n");

  SlowService slow(broker.endpoint(), 1);
  Client caller(at(broker.endpoint(), "ops-test"));
  const std::string calls = "sagebus_calls_total{service=\"slow\",method=\"wait\"}";
  const std::string ok =
      "sagebus_call_outcomes_total{service=\"slow\",method=\"wait\",status=\"OK\"}";
  caller.call("slow", "wait", "x");
  const auto before = http_get(http_port, "/metrics");
  REQUIRE(before.status == 200);
  for (int i = 0; i < 3; ++i)
    caller.call("slow", "wait", "x");
  const auto after = http_get(http_port, "/metrics");
  CHECK(sample(before.body, calls) == 1);
  CHECK(sample(after.body, calls) == 4);
  CHECK(sample(after.body, ok) == 4);
  CHECK(sample(after.body,
               "sagebus_call_duration_seconds_count{service=\"slow\",method=\"wait\"}") == 4);
  CHECK(sample(after.body, "sagebus_clients_connected") == 2);
  CHECK(sample(after.body, "sagebus_resident_memory_bytes") > 0);

  // The line grammar of the text format, and a TYPE before every family's samples.
  const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+)");
  const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  const std::regex value(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? -?[0-9.e+-]+)");
  std::istringstream in(after.body);
  std::string family;
  int samples = 0;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, help)) continue;
    if (std::regex_match(line, m, type)) {
      family = m[1];
      continue;
    }
    INFO(line);
    REQUIRE(std::regex_match(line, m, value));
    CHECK(std::string(m[1]).rfind(family, 0) == 0);
    ++samples;
  }
  CHECK(samples > 20);
}

TEST_CASE("systemd-analyze verify passes on the unit file", "[ops][systemd]") {
  if (::access("/usr/bin/systemd-analyze", X_OK) != 0 &&
      ::access("/bin/systemd-analyze", X_OK) != 0) {
    WARN("systemd-analyze is not installed: the unit file is not verified");
    return;
  }
  TempDir dir;
  std::string unit = read((kDeploy / "sage-busd.service").string());
  const std::string config = dir.path() + "/sage-busd.toml";
  std::filesystem::copy_file(kDeploy / "sage-busd.toml", config);
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"/usr/bin/sage-busd", busd_path()},
        {"/etc/sage-bus/sage-busd.toml", config}}) {
    const auto at_pos = unit.find(from);
    REQUIRE(at_pos != std::string::npos);
    unit.replace(at_pos, from.size(), to);
  }
  write(dir.path() + "/sage-busd.service", unit);
  const auto r = run({"/usr/bin/systemd-analyze", "verify", dir.path() + "/sage-busd.service"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  // The default config it names is one sage-busd reads.
  CHECK(run({busd_path(), "--config", config, "--print-config"}).exit_code == 0);
}
