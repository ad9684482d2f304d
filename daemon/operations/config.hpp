// BrokerConfig: every setting of sage-busd, with its default, and how it is read.
//
// read_config() builds one from the command line and the TOML file that `--config`
// names (CLI11's config support): a flag given on the command line overrides the same
// key in the file. Every flag is also a key of the file, spelled without its leading
// dashes (`--max-calls 5` is `max-calls = 5`); unknown keys, wrong types and
// unreadable files are errors naming the file, the key, its line and what was expected.
// to_toml() prints a configuration as a file read_config() reads back to the same one.
//
// Plain functions on values; no global state; thread safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sagebus::broker {

struct BrokerConfig {
  // tcp:// or ipc:// endpoints to bind; "tcp://127.0.0.1:*" picks a free port.
  std::vector<std::string> endpoints{"tcp://127.0.0.1:5555"};
  // Clients heartbeat this often; a client silent for heartbeat_ms * liveness loses its
  // lease and is removed as if it had disconnected.
  std::uint32_t heartbeat_ms = 1000;
  std::uint32_t liveness = 3;
  // A client with nothing at stake (no service, subscription or request: docs/protocol.md,
  // "Handshake and leases") may heartbeat this often instead, and its lease is
  // idle_heartbeat_ms * liveness until its next message. Offered only when longer than
  // heartbeat_ms (idle_offered()).
  std::uint32_t idle_heartbeat_ms = 10000;
  // For this long after a receive, the loop looks for the next message without sleeping,
  // while the host has an idle CPU (loop/idle_spin.hpp); 0: it always sleeps until woken.
  std::uint32_t spin_us = 100;
  // Largest payload (the frames after the header, together) of one message; a larger
  // one is answered INVALID_ARGUMENT (an unconfirmed publish is dropped). Frames larger
  // than frame_limit() (limits.hpp) are not even read: libzmq drops the connection of a
  // peer that sends one, and the broker removes that client as for any closed connection.
  std::uint64_t max_payload = 16 * 1024 * 1024;
  // Largest header frame; a larger one cannot be decoded, so it is dropped and counted.
  std::size_t max_header = 64 * 1024;
  // Connections that have said HELLO; a HELLO beyond it is answered OVERLOADED.
  std::size_t max_clients = 10000;
  // Calls queued per service while no instance has capacity; beyond it: OVERLOADED.
  std::size_t max_waiting_per_service = 1024;
  // Calls in the whole call table (waiting + dispatched); beyond it: OVERLOADED.
  std::size_t max_calls = 100000;
  // Calls and sends one connection may have pending (made, outcome not yet sent);
  // beyond it: OVERLOADED.
  std::size_t max_calls_per_client = 10000;
  // ZMQ_SNDHWM / ZMQ_RCVHWM: messages queued per peer connection in each direction.
  // Also what bounds the events queued for one subscriber: beyond it they are dropped.
  int peer_queue = 10000;
  // Subscriptions per connection; beyond it SUBSCRIBE is answered OVERLOADED.
  std::size_t max_subscriptions_per_client = 1000;
  // Point-to-point messages held per peer name while that peer is not connected; beyond
  // it SEND is answered OVERLOADED.
  std::size_t max_held_per_peer = 100;
  // Items per legacy queue before puts wait for room.
  std::size_t max_queue_depth = 10000;
  // Legacy queues the broker keeps; an idle one is forgotten to make room for a new one.
  std::size_t max_queues = 10000;
  // Gets waiting for an item, and puts waiting for room, per legacy queue; beyond it:
  // OVERLOADED.
  std::size_t max_queue_waiters = 10000;
  // Legacy-queue items one connection may hold unacknowledged; a get beyond it:
  // OVERLOADED.
  std::size_t max_unacked = 10000;
  // Legacy queue name -> topic its items are published on (default: "legacy.<name>").
  std::map<std::string, std::string, std::less<>> queue_topics;
  // On SIGTERM/SIGINT, how long calls in flight may take to finish before they are
  // answered UNAVAILABLE.
  std::uint32_t drain_timeout_ms = 5000;
  // HOST:PORT of the HTTP endpoint (/metrics, /healthz), or "off".
  std::string http = "127.0.0.1:9464";
  // Whether `http` was chosen (flag or file) rather than left at its default: a chosen
  // endpoint that cannot be bound fails the start; the default only warns.
  bool http_chosen = false;
  // trace | debug | info | warn | error | off
  std::string log_level = "info";
  // The rules file (security/auth.hpp); empty: no authentication, and then only local
  // endpoints (is_local_endpoint) unless allow_anonymous.
  std::string auth;
  bool allow_anonymous = false;
  // The durable store's file (SQLite); empty: legacy queues live in memory only.
  std::string store;

  // Whether WELCOME offers clients the idle heartbeat (it is longer than the heartbeat).
  bool idle_offered() const noexcept { return idle_heartbeat_ms > heartbeat_ms; }
  // The interval idle clients keep: idle_heartbeat_ms if offered, else heartbeat_ms.
  std::uint32_t idle_heartbeat() const noexcept {
    return idle_offered() ? idle_heartbeat_ms : heartbeat_ms;
  }
  // How long a client may stay silent: its interval (the idle one if `idle`) * liveness.
  std::chrono::milliseconds lease(bool idle) const noexcept {
    return std::chrono::milliseconds(std::uint64_t{idle ? idle_heartbeat() : heartbeat_ms} *
                                     std::max<std::uint32_t>(liveness, 1));
  }
};

// What read_config() decided.
struct ConfigRead {
  enum class Action { run, exit };
  Action action = Action::exit;
  int exit_code = 1;
  std::string out;  // for stdout: --help, --version, --print-config
  std::string err;  // for stderr: the error, naming what failed and what to do
  BrokerConfig config;
  std::string config_path;  // the file `--config` named, or empty
};

// Whether only this host can reach `endpoint`: ipc://, inproc://, or tcp:// on a loopback
// address (127.0.0.0/8, [::1], localhost, the interface lo).
bool is_local_endpoint(std::string_view endpoint);

// Parses `argv` (argv[0] is the program) and the file its `--config` names.
ConfigRead read_config(int argc, const char* const* argv);

// The configuration as TOML, one commented key per setting; read back, it is `config`.
std::string to_toml(const BrokerConfig& config);

}  // namespace sagebus::broker
