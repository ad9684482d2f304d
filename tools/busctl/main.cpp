// busctl: inspect sage-busd and use every pattern of the bus from the command line.
//
//   busctl [OPTIONS] status | services | clients | topics | queues
//   busctl [OPTIONS] calls [--service NAME]
//   busctl [OPTIONS] stats [PREFIX]
//   busctl [OPTIONS] reload | drain
//   busctl [OPTIONS] call SERVICE METHOD [PAYLOAD|-] [--stream [--idle-timeout MS] | --all]
//                         [--header K=V]... [--traceparent TP]
//   busctl [OPTIONS] publish TOPIC [PAYLOAD|-]
//   busctl [OPTIONS] subscribe PATTERN [--count N]
//   busctl [OPTIONS] send PEER [PAYLOAD|-] [--hold MS]
//   busctl [OPTIONS] receive [--count N]
//   busctl [OPTIONS] queue put NAME [PAYLOAD|-] | queue get NAME | queue size NAME
//   busctl [OPTIONS] queue ls | queue stat NAME | queue peek NAME [-n COUNT]
//   busctl [OPTIONS] queue purge NAME | queue declare NAME [--transient]
//   busctl [OPTIONS] store compact
//   busctl [--json] keygen NAME
//
// SIGINT or SIGTERM during a call cancels it (at the broker and the instance).
// OPTIONS: --endpoint E, --json, --timeout MS, --name NAME, --takeover, --key K,
// --server-key K (SAGEBUS_ENDPOINT, SAGEBUS_KEY, SAGEBUS_SERVER_KEY); they may also
// follow the subcommand. Exit status: 0 on success (subscribe and receive also when
// stopped by SIGINT or SIGTERM), 1 when the bus answered an error (printed to stderr as
// "STATUS_NAME: message") or keygen could not write its files ("PATH: problem"), 2 for
// usage errors.
#include <atomic>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "sagebus/status.hpp"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Set by SIGINT and SIGTERM while a tail (subscribe, receive) runs; the tail polls it.
std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

extern "C" void on_stop_signal(int) {
  stop_requested.store(true);
}

std::string read_all(std::istream& in) {
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// PAYLOAD as given; "-" means stdin.
std::string payload_of(const std::string& argument) {
  return argument == "-" ? read_all(std::cin) : argument;
}

constexpr const char* kPayloadHelp = "payload; '-' reads it from stdin; default empty";

}  // namespace

int main(int argc, char** argv) {
  busctl::Options options;
  int timeout_ms = 5000;
  int hold_ms = 0;
  std::uint64_t count = 0;
  std::uint32_t peek_count = 10;
  bool transient = false;
  std::string service, method, target, payload;

  CLI::App app{"busctl: inspect sage-busd and use the bus from the command line"};
  app.fallthrough();  // the options below also work after the subcommand
  app.require_subcommand(1);
  app.add_option("-e,--endpoint", options.endpoint, "sage-busd endpoint")
      ->envname("SAGEBUS_ENDPOINT")
      ->capture_default_str();
  app.add_flag("--json", options.json, "print JSON instead of tables, text or raw bytes");
  app.add_option("-t,--timeout", timeout_ms,
                 "milliseconds to wait for the broker and its answer, in all")
      ->check(CLI::Range(1, 24 * 3600 * 1000))
      ->capture_default_str();
  app.add_option("--name", options.name,
                 "this connection's name (what `send` addresses); default busctl-PID-1");
  app.add_flag("--takeover", options.takeover,
               "replace a live connection that has the same --name instead of failing");
  app.add_option("--key", options.key,
                 "for a broker with auth: this client's secret key, or its NAME.key_secret file "
                 "(busctl keygen NAME)")
      ->envname("SAGEBUS_KEY");
  app.add_option("--server-key", options.server_key,
                 "for a broker with auth: the broker's public key, or its NAME.key file")
      ->envname("SAGEBUS_SERVER_KEY");

  // Inspection.
  CLI::App* status_cmd =
      app.add_subcommand("status", "the broker's version, uptime, endpoints and counters");
  CLI::App* services_cmd = app.add_subcommand("services", "services and their instances");
  CLI::App* clients_cmd = app.add_subcommand("clients", "connections to the broker");
  CLI::App* topics_cmd =
      app.add_subcommand("topics", "subscriptions, and messages published per topic");
  CLI::App* queues_cmd = app.add_subcommand(
      "queues", "legacy queues: durable, depth, bytes, readers, counters; the store (= queue ls)");
  std::string calls_service;
  CLI::App* calls_cmd = app.add_subcommand(
      "calls",
      "calls in flight, oldest first: service, method, caller, instance, state, age, time "
      "left, stream, trace id");
  calls_cmd->add_option("--service", calls_service, "only the calls to service NAME");
  std::string prefix;
  CLI::App* stats_cmd = app.add_subcommand(
      "stats", "the broker's metrics (as /metrics serves them): METRIC LABELS VALUE");
  stats_cmd->add_option("PREFIX", prefix, "only metrics whose name begins with PREFIX");
  CLI::App* reload_cmd = app.add_subcommand(
      "reload", "re-read the broker's configuration and auth rules, as SIGHUP does");
  CLI::App* drain_cmd = app.add_subcommand(
      "drain", "stop the broker gracefully, as SIGTERM does: calls in flight may finish");

  // Request-response.
  CLI::App* call_cmd =
      app.add_subcommand("call", "call SERVICE METHOD and print the reply's payload");
  call_cmd->add_option("SERVICE", service, "service name")->required();
  call_cmd->add_option("METHOD", method, "method name")->required();
  call_cmd->add_option("PAYLOAD", payload, std::string("request ") + kPayloadHelp);
  busctl::CallFlags call_flags;
  std::vector<std::string> call_headers;
  int idle_timeout_ms = 0;
  auto* stream_flag = call_cmd->add_flag("--stream", call_flags.stream,
                                         "the reply is a stream: print each chunk as it comes");
  call_cmd
      ->add_flag("--all", call_flags.all,
                 "scatter-gather: call every live instance and print each one's outcome")
      ->excludes(stream_flag);
  call_cmd->add_option("--header", call_headers, "a header K=V to send (repeatable)");
  call_cmd->add_option("--traceparent", call_flags.traceparent,
                       "the call's W3C traceparent (default: a new trace)");
  call_cmd
      ->add_option("--idle-timeout", idle_timeout_ms,
                   "with --stream: the longest wait for a chunk, in ms (default: none)")
      ->check(CLI::NonNegativeNumber);

  // Publish-subscribe.
  CLI::App* publish_cmd =
      app.add_subcommand("publish", "publish on TOPIC and print how many subscriptions matched");
  publish_cmd->add_option("TOPIC", target, "topic, e.g. events.user.login")->required();
  publish_cmd->add_option("PAYLOAD", payload, kPayloadHelp);
  CLI::App* subscribe_cmd = app.add_subcommand(
      "subscribe", "print messages published on topics matching PATTERN, one per line");
  subscribe_cmd->add_option("PATTERN", target, "'*' matches one token, '>' the rest")->required();
  subscribe_cmd
      ->add_option("-n,--count", count, "exit after N messages; default: until SIGINT/SIGTERM")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000000}));

  // Point-to-point.
  CLI::App* send_cmd = app.add_subcommand("send", "hand a message to the connection named PEER");
  send_cmd->add_option("PEER", target, "the peer's connection name")->required();
  send_cmd->add_option("PAYLOAD", payload, kPayloadHelp);
  send_cmd
      ->add_option("--hold", hold_ms,
                   "if PEER is not connected, let the broker keep the message this many ms")
      ->check(CLI::Range(0, 24 * 3600 * 1000))
      ->capture_default_str();
  CLI::App* receive_cmd = app.add_subcommand(
      "receive", "print messages sent to this connection (see --name), one per line");
  receive_cmd
      ->add_option("-n,--count", count, "exit after N messages; default: until SIGINT/SIGTERM")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000000}));

  // Legacy queues.
  CLI::App* queue_cmd = app.add_subcommand("queue", "use a legacy named queue");
  queue_cmd->require_subcommand(1);
  CLI::App* put_cmd = queue_cmd->add_subcommand("put", "append an item to queue NAME");
  put_cmd->add_option("NAME", target, "queue name")->required();
  put_cmd->add_option("PAYLOAD", payload, std::string("item ") + kPayloadHelp);
  CLI::App* get_cmd =
      queue_cmd->add_subcommand("get", "take the item at the head of queue NAME and print it");
  get_cmd->add_option("NAME", target, "queue name")->required();
  get_cmd
      ->add_option("-t,--timeout", timeout_ms,
                   "milliseconds to wait for the broker and an item, in all")
      ->check(CLI::Range(1, 24 * 3600 * 1000))
      ->capture_default_str();
  CLI::App* size_cmd = queue_cmd->add_subcommand("size", "print how many items queue NAME holds");
  size_cmd->add_option("NAME", target, "queue name")->required();
  CLI::App* queue_ls_cmd = queue_cmd->add_subcommand(
      "ls", "legacy queues: durable, depth, bytes, readers, counters; the store (= queues)");
  CLI::App* stat_cmd =
      queue_cmd->add_subcommand("stat", "queue NAME's depth, bytes, readers, counters, durability");
  stat_cmd->add_option("NAME", target, "queue name")->required();
  CLI::App* peek_cmd = queue_cmd->add_subcommand(
      "peek", "print the first items of queue NAME without taking them: SEQ DELIVERIES PAYLOAD");
  peek_cmd->add_option("NAME", target, "queue name")->required();
  peek_cmd->add_option("-n,--count", peek_count, "at most this many items")
      ->check(CLI::Range(std::uint32_t{1}, std::uint32_t{100000}))
      ->capture_default_str();
  CLI::App* purge_cmd = queue_cmd->add_subcommand(
      "purge",
      "remove the items of queue NAME that are not taken (taken ones stay with their "
      "readers until acknowledged)");
  purge_cmd->add_option("NAME", target, "queue name")->required();
  CLI::App* declare_cmd = queue_cmd->add_subcommand(
      "declare",
      "with --transient: declare queue NAME transient (memory only). Without: queues are "
      "durable by default when sage-busd has a store (--store), so this checks that NAME is "
      "or will be durable; it fails when the broker has no store or NAME was declared "
      "transient");
  declare_cmd->add_option("NAME", target, "queue name")->required();
  declare_cmd->add_flag("--transient", transient,
                        "its items live in the broker's memory only, never in its store");

  // The broker's durable store.
  CLI::App* store_cmd =
      app.add_subcommand("store", "the broker's durable store (sage-busd --store)");
  store_cmd->require_subcommand(1);
  CLI::App* compact_cmd =
      store_cmd->add_subcommand("compact", "compact the store (VACUUM) and print its size after");

  // Keys; no broker needed.
  CLI::App* keygen_cmd = app.add_subcommand(
      "keygen", "write a new CURVE key pair: NAME.key (public) and NAME.key_secret (secret)");
  keygen_cmd->add_option("NAME", target, "the files' path without .key; may include a directory")
      ->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  options.timeout = std::chrono::milliseconds(timeout_ms);

  try {
    if (status_cmd->parsed()) busctl::status(options, std::cout);
    if (services_cmd->parsed()) busctl::services(options, std::cout);
    if (clients_cmd->parsed()) busctl::clients(options, std::cout);
    if (topics_cmd->parsed()) busctl::topics(options, std::cout);
    if (queues_cmd->parsed() || queue_ls_cmd->parsed()) busctl::queues(options, std::cout);
    if (calls_cmd->parsed()) busctl::calls(options, calls_service, std::cout);
    if (stats_cmd->parsed()) busctl::stats(options, prefix, std::cout);
    if (reload_cmd->parsed()) busctl::reload(options, std::cout);
    if (drain_cmd->parsed()) busctl::drain(options, std::cout);
    if (call_cmd->parsed()) {
      for (const std::string& header : call_headers) {
        const auto eq = header.find('=');
        if (eq == std::string::npos || eq == 0) {
          std::cerr << "--header " << header << ": expected K=V\n";
          return kExitUsage;
        }
        call_flags.headers[header.substr(0, eq)] = header.substr(eq + 1);
      }
      call_flags.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
      std::signal(SIGINT, on_stop_signal);
      std::signal(SIGTERM, on_stop_signal);
      busctl::call(options, call_flags, service, method, payload_of(payload), stop_requested,
                   std::cout);
    }
    if (publish_cmd->parsed()) busctl::publish(options, target, payload_of(payload), std::cout);
    if (send_cmd->parsed())
      busctl::send(options, target, payload_of(payload), std::chrono::milliseconds(hold_ms),
                   std::cout);
    if (put_cmd->parsed()) busctl::queue_put(options, target, payload_of(payload), std::cout);
    if (get_cmd->parsed()) busctl::queue_get(options, target, std::cout);
    if (size_cmd->parsed()) busctl::queue_size(options, target, std::cout);
    if (stat_cmd->parsed()) busctl::queue_stat(options, target, std::cout);
    if (peek_cmd->parsed()) busctl::queue_peek(options, target, peek_count, std::cout);
    if (purge_cmd->parsed()) busctl::queue_purge(options, target, std::cout);
    if (declare_cmd->parsed()) busctl::queue_declare(options, target, transient, std::cout);
    if (compact_cmd->parsed()) busctl::store_compact(options, std::cout);
    if (keygen_cmd->parsed()) busctl::keygen(options, target, std::cout);
    if (subscribe_cmd->parsed() || receive_cmd->parsed()) {
      std::signal(SIGINT, on_stop_signal);
      std::signal(SIGTERM, on_stop_signal);
      if (subscribe_cmd->parsed())
        busctl::subscribe(options, target, count, stop_requested, std::cout, std::cerr);
      else
        busctl::receive(options, count, stop_requested, std::cout, std::cerr);
    }
  } catch (const std::exception& e) {  // sagebus::Error: "STATUS_NAME: message"
    std::cout.flush();
    std::cerr << e.what() << "\n";
    return kExitFailure;
  }
  std::cout.flush();
  return std::cout ? 0 : kExitFailure;
}
