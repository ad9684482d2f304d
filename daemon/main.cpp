// sage-busd: the sage-bus broker daemon. Parses options, sets up logging and signals,
// binds, and runs the Broker loop on the main thread until SIGINT or SIGTERM.
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "broker.hpp"
#include "config.hpp"
#include "sagebus/wire/topic.hpp"

namespace {

// Set by the signal handler, acted on by the loop (between ticks).
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_signal(int /*signum*/) {
  g_stop.store(true, std::memory_order_relaxed);
}

void set_signal_mask(int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(how, &set, nullptr);
}

const char* bind_advice(int code) {
  switch (code) {
    case EADDRINUSE:
      return "Another program (perhaps another sage-busd) is using it: stop it, or choose "
             "another --endpoint.";
    case EPROTONOSUPPORT:
      return "Use tcp://HOST:PORT or ipc://PATH.";
    case EADDRNOTAVAIL:
    case ENODEV:
      return "No interface of this host has that address: use one it has, e.g. 127.0.0.1.";
    case ENOENT:
      return "The directory of the ipc:// path does not exist: create it or choose another.";
    case EACCES:
      return "Permission denied: use a port above 1023 or a writable ipc:// path.";
    default:
      return "Check the address, or choose another --endpoint.";
  }
}

}  // namespace

int main(int argc, char** argv) {
  sagebus::broker::BrokerConfig config;
  CLI::App app{
      "sage-busd: the sage-bus message broker. Services register with it; callers' "
      "requests are routed to a live instance and exactly one outcome comes back. It also "
      "fans published messages out to subscribers, hands point-to-point messages to named "
      "connections, and keeps the legacy named queues."};
  app.set_version_flag("--version", std::string("sage-busd ") + SAGEBUS_VERSION);
  app.add_option("--endpoint", config.endpoints,
                 "Endpoint to bind, tcp://HOST:PORT or ipc://PATH; repeat for several. "
                 "tcp://127.0.0.1:* picks a free port (the log says which)")
      ->capture_default_str();
  app.add_option("--log-level", config.log_level, "Log level")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  app.add_option("--heartbeat-ms", config.heartbeat_ms,
                 "Heartbeat interval clients are told to keep, in milliseconds")
      ->check(CLI::Range(10u, 3600000u))
      ->capture_default_str();
  app.add_option("--liveness", config.liveness,
                 "Heartbeats a client may miss before it loses its lease and is removed")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  app.add_option("--max-payload", config.max_payload,
                 "Largest frame accepted, in bytes; a peer sending a larger one is "
                 "disconnected by ZeroMQ")
      ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-waiting", config.max_waiting_per_service,
                 "Calls that may wait per service while no instance has capacity; more are "
                 "answered OVERLOADED")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--max-calls", config.max_calls,
                 "Calls the broker tracks at once (waiting and in flight); more are answered "
                 "OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 26))
      ->capture_default_str();
  app.add_option("--peer-queue", config.peer_queue,
                 "Messages queued per connection and direction (ZeroMQ high-water mark)")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--max-subscriptions", config.max_subscriptions_per_client,
                 "Subscriptions one connection may hold; more are answered OVERLOADED")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-held", config.max_held_per_peer,
                 "Point-to-point messages held per peer name while that peer is not "
                 "connected; more are answered OVERLOADED")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-queue-depth", config.max_queue_depth,
                 "Items a legacy queue holds before puts wait for room (then OVERLOADED)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  std::vector<std::string> queue_topics;
  app.add_option("--queue-topic", queue_topics,
                 "NAME=TOPIC: publish the items of legacy queue NAME on TOPIC instead of "
                 "legacy.NAME; repeat for several queues (default: none)")
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            const auto eq = value.find('=');
            if (eq == std::string::npos) return "expected NAME=TOPIC, got '" + value + "'";
            if (auto error = sagebus::wire::check_topic(value.substr(0, eq), "queue name"))
              return *error;
            if (auto error = sagebus::wire::check_topic(value.substr(eq + 1))) return *error;
            return {};
          },
          "NAME=TOPIC"));
  CLI11_PARSE(app, argc, argv);
  for (const auto& mapping : queue_topics) {
    const auto eq = mapping.find('=');
    auto [it, added] = config.queue_topics.emplace(mapping.substr(0, eq), mapping.substr(eq + 1));
    if (!added && it->second != mapping.substr(eq + 1)) {
      std::fprintf(stderr, "--queue-topic: queue '%s' is mapped twice ('%s' and '%s')\n",
                   it->first.c_str(), it->second.c_str(), mapping.substr(eq + 1).c_str());
      return EXIT_FAILURE;
    }
  }

  auto logger = spdlog::stderr_color_mt("sage-busd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  // ZeroMQ's I/O threads inherit the signal mask of the thread that creates them: with
  // SIGINT/SIGTERM blocked while the Broker is built, only the main thread receives them,
  // and its poll returns at once (EINTR) instead of at the next timeout.
  set_signal_mask(SIG_BLOCK);
  std::unique_ptr<sagebus::broker::Broker> broker;
  try {
    broker = std::make_unique<sagebus::broker::Broker>(config);
  } catch (const sagebus::broker::BindError& e) {
    spdlog::error("cannot listen on {}: {}. {}", e.endpoint(), e.what(), bind_advice(e.code()));
    return EXIT_FAILURE;
  } catch (const std::exception& e) {
    spdlog::error("cannot start: {}", e.what());
    return EXIT_FAILURE;
  }
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  set_signal_mask(SIG_UNBLOCK);

  try {
    broker->run(g_stop);
  } catch (const std::exception& e) {
    spdlog::error("the broker loop failed: {}", e.what());
    return EXIT_FAILURE;
  }
  broker.reset();
  spdlog::info("stopped cleanly");
  return EXIT_SUCCESS;
}
