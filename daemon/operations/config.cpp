#include "operations/config.hpp"

#include <CLI/CLI.hpp>
#include <fstream>
#include <sstream>
#include <string_view>

#include "sagebus/wire/topic.hpp"

namespace sagebus::broker {

namespace {

constexpr const char* kAbout =
    "sage-busd: the sage-bus message broker. Services register with it; callers' requests are "
    "routed to a live instance and exactly one outcome comes back. It also fans published "
    "messages out to subscribers, hands point-to-point messages to named connections, and "
    "keeps the legacy named queues.\n\nEvery option is also a key of the --config file "
    "(TOML, the option without its dashes: max-calls = 5); options given here override the "
    "file. SIGHUP re-reads the file; SIGTERM or SIGINT drain calls in flight, then stop.";

constexpr const char* kFixHint = "sage-busd --print-config prints every key with its value";

std::string check_queue_topic(std::string& value) {
  const auto eq = value.find('=');
  if (eq == std::string::npos) return "expected NAME=TOPIC, got '" + value + "'";
  if (auto error = wire::check_topic(value.substr(0, eq), "queue name")) return *error;
  if (auto error = wire::check_topic(value.substr(eq + 1))) return *error;
  return {};
}

std::string check_http(std::string& value) {
  if (value == "off") return {};
  const auto colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return "expected HOST:PORT (e.g. 127.0.0.1:9464) or off, got '" + value + "'";
  const std::string port = value.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535)
    return "expected a port 1-65535 after the colon in '" + value + "'";
  return {};
}

void add_options(CLI::App& app, BrokerConfig& c, std::vector<std::string>& queue_topics,
                 bool& print_config) {
  app.set_config("--config", "", "TOML file of settings; options given here override it", false)
      ->type_name("FILE");
  app.allow_config_extras(false);
  app.add_flag("--print-config", print_config,
               "Print the effective configuration (file and options) as TOML, then exit")
      ->configurable(false);
  app.add_option("--endpoint", c.endpoints,
                 "Endpoint to bind, tcp://HOST:PORT or ipc://PATH; repeat for several. "
                 "tcp://127.0.0.1:* picks a free port (the log says which)")
      ->capture_default_str();
  app.add_option("--log-level", c.log_level, "Log level")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  app.add_option("--heartbeat-ms", c.heartbeat_ms,
                 "Heartbeat interval clients are told to keep, in milliseconds")
      ->check(CLI::Range(10u, 3600000u))
      ->capture_default_str();
  app.add_option("--liveness", c.liveness,
                 "Heartbeats a client may miss before it loses its lease and is removed")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  app.add_option("--idle-heartbeat-ms", c.idle_heartbeat_ms,
                 "Heartbeat interval a client with nothing at stake (no service, subscription "
                 "or request in flight) may keep instead, in milliseconds; its lease is this "
                 "times liveness until it sends anything else. At most heartbeat-ms turns "
                 "this off")
      ->check(CLI::Range(10u, 3600000u))
      ->capture_default_str();
  app.add_option("--spin-us", c.spin_us,
                 "For this many microseconds after a message, look for the next one without "
                 "sleeping while the host has an idle CPU: lower latency for some CPU; 0: "
                 "always sleep until woken")
      ->check(CLI::Range(0u, 10000u))
      ->capture_default_str();
  app.add_option("--max-payload", c.max_payload,
                 "Largest payload of one message, in bytes; a larger one is answered "
                 "INVALID_ARGUMENT. A frame over twice this (or twice max-header) makes ZeroMQ "
                 "disconnect its sender")
      ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-header", c.max_header,
                 "Largest header frame, in bytes; a larger one cannot be read, so it is "
                 "dropped and counted")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-clients", c.max_clients,
                 "Connections the broker serves at once; a HELLO beyond it is answered "
                 "OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-waiting", c.max_waiting_per_service,
                 "Calls that may wait per service while no instance has capacity; more are "
                 "answered OVERLOADED")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-calls", c.max_calls,
                 "Calls the broker tracks at once (waiting and in flight); more are answered "
                 "OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 26))
      ->capture_default_str();
  app.add_option("--max-calls-per-client", c.max_calls_per_client,
                 "Calls and sends one connection may have pending at once; more are answered "
                 "OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 26))
      ->capture_default_str();
  app.add_option("--peer-queue", c.peer_queue,
                 "Messages queued per connection and direction (ZeroMQ high-water mark)")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--max-subscriptions", c.max_subscriptions_per_client,
                 "Subscriptions one connection may hold; more are answered OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-held", c.max_held_per_peer,
                 "Point-to-point messages held per peer name while that peer is not "
                 "connected; more are answered OVERLOADED")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-queue-depth", c.max_queue_depth,
                 "Items a legacy queue holds before puts wait for room (then OVERLOADED)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-queues", c.max_queues,
                 "Legacy queues the broker keeps; an idle one is forgotten for a new one")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-queue-waiters", c.max_queue_waiters,
                 "Gets waiting for an item, and puts waiting for room, per legacy queue; more "
                 "are answered OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-unacked", c.max_unacked,
                 "Legacy-queue items one connection may hold unacknowledged; a get beyond it "
                 "is answered OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--queue-topic", queue_topics,
                 "NAME=TOPIC: publish the items of legacy queue NAME on TOPIC instead of "
                 "legacy.NAME; repeat for several queues (default: none)")
      ->check(CLI::Validator(check_queue_topic, "NAME=TOPIC"));
  app.add_option("--drain-timeout-ms", c.drain_timeout_ms,
                 "On SIGTERM/SIGINT, how long calls in flight may take to finish before they "
                 "are answered UNAVAILABLE")
      ->check(CLI::Range(0u, 3600000u))
      ->capture_default_str();
  app.add_option("--http", c.http,
                 "HOST:PORT of the HTTP endpoint serving /metrics and /healthz, or off")
      ->check(CLI::Validator(check_http, "HOST:PORT|off"))
      ->capture_default_str();
  app.add_option("--auth", c.auth,
                 "Rules file (TOML: the broker's key pair, principals, their keys and rules; "
                 "docs/security.md): every endpoint then takes CURVE clients whose key a "
                 "principal holds, and checks what they do against its rules (default: none)")
      ->check(CLI::ExistingFile);
  app.add_option("--store", c.store,
                 "File of the durable store (SQLite; created if missing): legacy queues not "
                 "declared transient keep their items there, and a put is confirmed once "
                 "stored (default: none, every queue lives in memory)");
  app.add_flag("--allow-anonymous", c.allow_anonymous,
               "Without --auth, bind endpoints other than loopback and ipc:// too, letting "
               "anyone who reaches them act as any service");
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The 1-based line of `path` that sets `key`, or 0.
int line_of(const std::string& path, std::string_view key) {
  std::istringstream in(slurp(path));
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.compare(start, key.size(), key) != 0) continue;
    const auto rest = line.find_first_not_of(" \t", start + key.size());
    if (rest != std::string::npos && line[rest] == '=') return n;
  }
  return 0;
}

bool given_on_command_line(int argc, const char* const* argv, const std::string& flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == flag || arg.starts_with(flag + "=")) return true;
  }
  return false;
}

// Says where a parse error came from: the file (with key and line) or the command line.
std::string describe(const CLI::ParseError& e, const CLI::App& app, const std::string& file,
                     int argc, const char* const* argv) {
  const std::string what = e.what();
  if (dynamic_cast<const CLI::FileError*>(&e) != nullptr)
    return "sage-busd: cannot read config file '" + file +
           "': it is missing, not a regular file, or not readable by this user. Check the "
           "path given to --config.";
  std::string key;
  if (const auto p = what.find("INI was not able to parse "); p != std::string::npos) {
    key = what.substr(p + 26);
    if (key.ends_with(".++"))
      return "sage-busd: " + file + ": unknown table [" + key.substr(0, key.size() - 3) +
             "]: sage-busd's settings are top-level keys, with no [tables]. Remove the table "
             "header; " +
             kFixHint + ".";
    const int line = line_of(file, key);
    return "sage-busd: " + file + (line > 0 ? " line " + std::to_string(line) : "") +
           ": unknown key '" + key +
           "': sage-busd has no such setting (keys are the options without their dashes, "
           "e.g. max-calls). Remove it or fix its spelling; " +
           kFixHint + ".";
  }
  for (const CLI::Option* opt : app.get_options()) {
    const std::string& name = opt->get_single_name();
    if (what.find("--" + name) != std::string::npos || what.find(name + ":") == 0) {
      key = name;
      break;
    }
  }
  if (!key.empty() && !file.empty() && !given_on_command_line(argc, argv, "--" + key)) {
    const int line = line_of(file, key);
    return "sage-busd: " + file + (line > 0 ? " line " + std::to_string(line) : "") + ": key '" +
           key + "': " + what + ". Fix the value in the file; " + kFixHint + ".";
  }
  return "sage-busd: " + what + ". Run sage-busd --help for the options.";
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

std::string array(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i)
    out += (i ? ", " : "") + quoted(items[i]);
  return out + "]";
}

}  // namespace

bool is_local_endpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  host = host.substr(0, host.rfind(':'));  // the port (or "*")
  return host.starts_with("127.") || host == "[::1]" || host == "localhost" || host == "lo";
}

ConfigRead read_config(int argc, const char* const* argv) {
  ConfigRead r;
  CLI::App app{kAbout, "sage-busd"};
  app.set_version_flag("--version", std::string("sage-busd ") + SAGEBUS_VERSION);
  std::vector<std::string> queue_topics;
  bool print_config = false;
  add_options(app, r.config, queue_topics, print_config);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    r.exit_code = app.exit(e, out, err);
    r.out = out.str();
    r.config_path = app.get_config_ptr()->as<std::string>();
    r.err = r.exit_code == 0 ? err.str() : describe(e, app, r.config_path, argc, argv) + "\n";
    return r;
  }
  r.config_path = app.get_config_ptr()->count() > 0 ? app.get_config_ptr()->as<std::string>() : "";
  for (const auto& mapping : queue_topics) {
    const auto eq = mapping.find('=');
    auto [it, added] = r.config.queue_topics.emplace(mapping.substr(0, eq), mapping.substr(eq + 1));
    if (!added && it->second != mapping.substr(eq + 1)) {
      r.err = "sage-busd: queue-topic: queue '" + it->first + "' is mapped twice ('" + it->second +
              "' and '" + mapping.substr(eq + 1) + "'); keep one mapping per queue\n";
      return r;
    }
  }
  r.config.http_chosen = app.get_option("--http")->count() > 0;
  if (r.config.auth.empty() && !r.config.allow_anonymous) {
    for (const auto& endpoint : r.config.endpoints) {
      if (is_local_endpoint(endpoint)) continue;
      r.err = "sage-busd: endpoint " + endpoint +
              " is reachable from other hosts, and without auth anyone who reaches it may act "
              "as any service; set auth = FILE (--auth, docs/security.md), bind loopback or "
              "ipc:// only, or set allow-anonymous = true (--allow-anonymous) to accept that\n";
      return r;
    }
  }
  if (print_config) {
    r.out = to_toml(r.config);
    r.exit_code = 0;
    return r;
  }
  r.action = ConfigRead::Action::run;
  r.exit_code = 0;
  return r;
}

std::string to_toml(const BrokerConfig& c) {
  std::vector<std::string> mappings;
  for (const auto& [name, topic] : c.queue_topics)
    mappings.push_back(name + "=" + topic);
  std::ostringstream o;
  o << "# sage-busd configuration (TOML). Options on the command line override these keys.\n"
       "# SIGHUP re-reads this file: log-level, the limits, spin-us, drain-timeout-ms and\n"
       "# queue-topic change at once; endpoint, http, heartbeat-ms, idle-heartbeat-ms,\n"
       "# liveness, max-payload and peer-queue need a restart. A refusal by any limit is\n"
       "# counted by its key in /metrics (sagebus_limit_refusals_total) and in busctl status.\n\n"
    << "# Endpoints to bind, tcp://HOST:PORT or ipc://PATH (ipc:///run/sage-bus/... under "
       "systemd).\n"
    << "endpoint = " << array(c.endpoints) << "\n"
    << "# trace, debug, info, warn, error or off.\n"
    << "log-level = " << quoted(c.log_level) << "\n"
    << "# Heartbeat interval clients are told to keep, in milliseconds (10-3600000).\n"
    << "heartbeat-ms = " << c.heartbeat_ms << "\n"
    << "# Heartbeats a client may miss before it loses its lease (1-1000).\n"
    << "liveness = " << c.liveness << "\n"
    << "# Heartbeat interval of a client with nothing at stake (no service, subscription or\n"
    << "# request in flight), in milliseconds (10-3600000); its lease is this times liveness\n"
    << "# until it sends anything else. At most heartbeat-ms turns this off.\n"
    << "idle-heartbeat-ms = " << c.idle_heartbeat_ms << "\n"
    << "# Microseconds after a message the loop looks for the next one without sleeping,\n"
    << "# while the host has an idle CPU (0-10000; 0: always sleep until woken).\n"
    << "spin-us = " << c.spin_us << "\n"
    << "# Largest payload of one message, in bytes; more: INVALID_ARGUMENT. ZeroMQ disconnects\n"
    << "# a peer sending a frame over twice this (or twice max-header).\n"
    << "max-payload = " << c.max_payload << "\n"
    << "# Largest header frame, in bytes; a larger one is dropped and counted.\n"
    << "max-header = " << c.max_header << "\n"
    << "# Connections served at once; a HELLO beyond it is answered OVERLOADED.\n"
    << "max-clients = " << c.max_clients << "\n"
    << "# Calls waiting per service while no instance has capacity; more: OVERLOADED.\n"
    << "max-waiting = " << c.max_waiting_per_service << "\n"
    << "# Calls tracked at once (waiting and in flight); more: OVERLOADED.\n"
    << "max-calls = " << c.max_calls << "\n"
    << "# Calls and sends one connection may have pending; more: OVERLOADED.\n"
    << "max-calls-per-client = " << c.max_calls_per_client << "\n"
    << "# Messages queued per connection and direction (ZeroMQ high-water mark).\n"
    << "peer-queue = " << c.peer_queue << "\n"
    << "# Subscriptions one connection may hold; more: OVERLOADED.\n"
    << "max-subscriptions = " << c.max_subscriptions_per_client << "\n"
    << "# Point-to-point messages held per absent peer name; more: OVERLOADED.\n"
    << "max-held = " << c.max_held_per_peer << "\n"
    << "# Items a legacy queue holds before puts wait for room.\n"
    << "max-queue-depth = " << c.max_queue_depth << "\n"
    << "# Legacy queues kept; an idle one is forgotten to make room for a new one.\n"
    << "max-queues = " << c.max_queues << "\n"
    << "# Gets and puts that may wait per legacy queue; more: OVERLOADED.\n"
    << "max-queue-waiters = " << c.max_queue_waiters << "\n"
    << "# Legacy-queue items one connection may hold unacknowledged; more: OVERLOADED.\n"
    << "max-unacked = " << c.max_unacked << "\n"
    << "# Legacy queue NAME=TOPIC mappings (default topic: legacy.NAME).\n"
    // CLI11 reads an empty array as a missing value, so no mapping is a commented example.
    << (mappings.empty() ? "# queue-topic = [\"jobs=work.jobs\"]"
                         : "queue-topic = " + array(mappings))
    << "\n"
    << "# On SIGTERM/SIGINT, milliseconds calls in flight get to finish (0-3600000).\n"
    << "drain-timeout-ms = " << c.drain_timeout_ms << "\n"
    << "# HOST:PORT serving /metrics and /healthz over HTTP, or \"off\".\n"
    << "http = " << quoted(c.http) << "\n"
    << "# Rules file: the broker's CURVE key pair, principals, their keys and rules\n"
    << "# (docs/security.md). Without it, only loopback and ipc:// endpoints are bound.\n"
    << (c.auth.empty() ? "# auth = \"/etc/sage-bus/auth.toml\"" : "auth = " + quoted(c.auth))
    << "\n"
    << "# Without auth, bind other endpoints too: anyone reaching them may act as any service.\n"
    << "allow-anonymous = " << (c.allow_anonymous ? "true" : "false") << "\n"
    << "# Durable store of legacy queues (SQLite). Without it, queues live in memory only.\n"
    << (c.store.empty() ? "# store = \"/var/lib/sage-busd/store.db\""
                        : "store = " + quoted(c.store))
    << "\n";
  return o.str();
}

}  // namespace sagebus::broker
