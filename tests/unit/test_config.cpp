// read_config and to_toml: the command line, the --config file, and their round trip.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "operations/config.hpp"
#include "operations/limits.hpp"

using namespace sagebus::broker;

namespace {

ConfigRead parse(std::vector<std::string> args) {
  args.insert(args.begin(), "sage-busd");
  std::vector<const char*> argv;
  for (const auto& a : args)
    argv.push_back(a.c_str());
  return read_config(static_cast<int>(argv.size()), argv.data());
}

std::string temp_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("sagebus-config-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST_CASE("without options the configuration is the defaults", "[config]") {
  const ConfigRead r = parse({});
  REQUIRE(r.action == ConfigRead::Action::run);
  CHECK(to_toml(r.config) == to_toml(BrokerConfig{}));
  CHECK_FALSE(r.config.http_chosen);
}

TEST_CASE("a flag overrides the same key of the file", "[config]") {
  const auto file = temp_file("override.toml", "max-calls = 5\nmax-waiting = 6\n");
  const ConfigRead r = parse({"--config", file, "--max-calls", "7"});
  REQUIRE(r.action == ConfigRead::Action::run);
  CHECK(r.config.max_calls == 7);
  CHECK(r.config.max_waiting_per_service == 6);
  CHECK(r.config_path == file);
  std::filesystem::remove(file);
}

TEST_CASE("to_toml reads back to the same configuration", "[config]") {
  BrokerConfig c;
  c.endpoints = {"tcp://127.0.0.1:1", "ipc:///run/sage-bus/x.sock"};
  c.log_level = "warn";
  c.max_clients = 3;
  c.queue_topics = {{"jobs", "work.jobs"}, {"a", "b"}};
  c.drain_timeout_ms = 0;
  c.http = "off";
  c.max_header = 4096;
  c.max_calls_per_client = 17;
  c.max_queue_waiters = 18;
  c.max_unacked = 19;
  c.spin_us = 0;
  c.idle_heartbeat_ms = 20000;
  const auto file = temp_file("roundtrip.toml", to_toml(c));
  const ConfigRead r = parse({"--config", file});
  REQUIRE(r.action == ConfigRead::Action::run);
  CHECK(to_toml(r.config) == to_toml(c));
  CHECK(r.config.max_header == 4096);
  CHECK(r.config.max_calls_per_client == 17);
  CHECK(r.config.max_queue_waiters == 18);
  CHECK(r.config.max_unacked == 19);
  CHECK(r.config.spin_us == 0);
  CHECK(r.config.idle_heartbeat_ms == 20000);
  std::filesystem::remove(file);
}

TEST_CASE("the idle heartbeat is offered only when it is longer than the heartbeat", "[config]") {
  BrokerConfig c;
  CHECK(c.idle_offered());
  CHECK(c.idle_heartbeat() == 10000);
  CHECK(c.lease(false) == std::chrono::milliseconds(3000));
  CHECK(c.lease(true) == std::chrono::milliseconds(30000));
  c.heartbeat_ms = 20000;  // longer than the idle heartbeat: idle clients keep it too
  CHECK_FALSE(c.idle_offered());
  CHECK(c.idle_heartbeat() == 20000);
  CHECK(c.lease(true) == std::chrono::milliseconds(60000));
}

TEST_CASE("every limit is a flag and a key named as it is reported, and reads back its value",
          "[config][limits]") {
  std::set<std::string> keys;
  for (const Limit limit : kLimits) {
    const std::string key(limit_key(limit));
    INFO(key);
    CHECK(keys.insert(key).second);
    const ConfigRead flag = parse({"--" + key, "4321"});
    REQUIRE(flag.action == ConfigRead::Action::run);
    CHECK(limit_value(flag.config, limit) == 4321);
    CHECK(to_toml(flag.config).find("\n" + key + " = 4321\n") != std::string::npos);
    CHECK(limit_value(BrokerConfig{}, limit) > 0);
  }
}

TEST_CASE("the defaults of the new limits", "[config][limits]") {
  const BrokerConfig c;
  CHECK(c.max_calls_per_client == 10000);
  CHECK(c.max_header == 64 * 1024);
  CHECK(frame_limit(c) == 2 * c.max_payload);
  CHECK(parse({"--max-header", "100"}).action == ConfigRead::Action::exit);
  CHECK(parse({"--max-calls-per-client", "0"}).action == ConfigRead::Action::exit);
}

TEST_CASE("deploy/sage-busd.toml is the default configuration with a store", "[config]") {
  const auto path = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() /
                    "deploy" / "sage-busd.toml";
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  // The system service keeps its queues in its StateDirectory (deploy/sage-busd.service).
  BrokerConfig service;
  service.store = "/var/lib/sage-busd/store.db";
  CHECK(ss.str() == to_toml(service));
}

TEST_CASE("an unknown key names the file, the line and the key, and fails", "[config]") {
  const auto file = temp_file("unknown.toml", "\n\nmax-callz = 5\n");
  const ConfigRead r = parse({"--config", file});
  CHECK(r.action == ConfigRead::Action::exit);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find(file + " line 3: unknown key 'max-callz'") != std::string::npos);
  std::filesystem::remove(file);
}

TEST_CASE("a queue mapped twice to different topics is refused", "[config]") {
  const ConfigRead r = parse({"--queue-topic", "q=a.b", "--queue-topic", "q=c.d"});
  CHECK(r.action == ConfigRead::Action::exit);
  CHECK(r.err.find("queue 'q' is mapped twice") != std::string::npos);
}

TEST_CASE("the http option takes HOST:PORT or off", "[config]") {
  CHECK(parse({"--http", "off"}).action == ConfigRead::Action::run);
  CHECK(parse({"--http", "127.0.0.1:9"}).config.http_chosen);
  CHECK(parse({"--http", "127.0.0.1"}).action == ConfigRead::Action::exit);
  CHECK(parse({"--http", "127.0.0.1:70000"}).action == ConfigRead::Action::exit);
}

TEST_CASE("print-config prints the TOML and exits 0", "[config]") {
  const ConfigRead r = parse({"--max-held", "3", "--print-config"});
  CHECK(r.action == ConfigRead::Action::exit);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\nmax-held = 3\n") != std::string::npos);
}

TEST_CASE(
    "without auth, only endpoints this host alone reaches are bound, unless "
    "allow-anonymous says otherwise",
    "[config][auth]") {
  for (const char* local :
       {"tcp://127.0.0.1:5555", "tcp://127.1.2.3:*", "tcp://localhost:1", "tcp://[::1]:5555",
        "tcp://lo:5555", "ipc:///run/sage-bus/bus", "inproc://x"})
    CHECK(is_local_endpoint(local));
  for (const char* wide : {"tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555",
                           "tcp://eth0:5555", "tcp://[::]:5555", "tcp://bus.example:5555"})
    CHECK_FALSE(is_local_endpoint(wide));

  ConfigRead r = parse({"--endpoint", "tcp://0.0.0.0:5555"});
  CHECK(r.action == ConfigRead::Action::exit);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("tcp://0.0.0.0:5555 is reachable from other hosts") != std::string::npos);
  r = parse({"--endpoint", "tcp://0.0.0.0:5555", "--allow-anonymous"});
  CHECK(r.action == ConfigRead::Action::run);
  CHECK(r.config.allow_anonymous);
}
