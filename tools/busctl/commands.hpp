// The busctl commands. Each one but keygen connects to sage-busd (see session.hpp), does
// its one job, writes what it got to `out` (a table, raw bytes, text lines or JSON) and
// returns.
//
// Failures are thrown as sagebus::Error, whose what() is the "STATUS_NAME: message" line
// busctl prints. A one-shot command does not outlive options.timeout by more than the
// SDK's small margin: the timeout covers reaching the broker and the answer together,
// and a broker that is not reachable within it is reported UNAVAILABLE. The two tails,
// subscribe and receive, use the timeout only to reach the broker; then they run until
// they have printed `count` messages (0: no limit) or `stop` becomes true.
//
// Implemented per family: commands_inspect.cpp (the `$broker` admin views and
// store.compact),
// commands_stats.cpp (`$broker`.metrics),
// commands_call.cpp, commands_pubsub.cpp, commands_p2p.cpp, commands_queue.cpp (queue
// put/get/size with the SDK, stat/peek/purge/declare through `$broker`),
// commands_keys.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>

namespace busctl {

struct Options {
  std::string endpoint = "tcp://127.0.0.1:5555";
  bool json = false;
  std::chrono::milliseconds timeout{5000};
  // This connection's name; empty: the SDK's unique default, "busctl-<pid>-1".
  std::string name{};
  // Replace a live connection of the same name instead of being refused.
  bool takeover = false;
  // For a broker with auth: this client's secret key and the broker's public key, each a
  // Z85 key or a certificate file (sagebus::ClientOptions::client_key, server_key).
  std::string key{};
  std::string server_key{};
};

// --- Inspection: the broker's own service, `$broker` -------------------------------

// `$broker`.status: the broker's version, uptime, endpoints, sizes and counters.
void status(const Options& options, std::ostream& out);

// `$broker`.services: every service and its instances.
void services(const Options& options, std::ostream& out);

// `$broker`.clients: every connection, its name, age, services, subscriptions, calls.
void clients(const Options& options, std::ostream& out);

// `$broker`.topics: every subscription, then the published count of recent topics.
void topics(const Options& options, std::ostream& out);

// `$broker`.calls: the calls in flight, oldest first (the broker lists 1000 at most), as
// render.hpp's calls_table or, with options.json, the admin.CallList; with `service` not
// empty, only the calls to that service.
void calls(const Options& options, const std::string& service, std::ostream& out);

// `$broker`.queues (busctl queues, busctl queue ls): every legacy queue, whether it is
// durable, its depth, bytes, readers, writers and counters; then the broker's store.
void queues(const Options& options, std::ostream& out);

// `$broker`.store.compact (the admin verb, with auth): the broker compacts its store
// (VACUUM) and answers once done. Writes its answer's message and the store's figures
// after it (JSON: the admin.StoreStatus). A broker without a store answers UNAVAILABLE.
void store_compact(const Options& options, std::ostream& out);

// `$broker`.reload and `$broker`.drain (the admin verb, with auth): as SIGHUP and SIGTERM
// would; prints what the broker answered.
void reload(const Options& options, std::ostream& out);
void drain(const Options& options, std::ostream& out);

// `$broker`.metrics: the broker's metrics (the Prometheus text its /metrics serves),
// those whose name begins with `prefix` (empty: all), as a table METRIC LABELS VALUE
// (labels as k=v,k=v; "-" for none) or, with options.json, one JSON array of
// {"metric":...,"labels":{...},"value":N}. Implemented in commands_stats.cpp.
void stats(const Options& options, const std::string& prefix, std::ostream& out);

// --- Request-response ----------------------------------------------------------------

// What `busctl call` asks beyond the call itself.
struct CallFlags {
  bool stream = false;  // the reply is a stream: each chunk as it comes
  bool all = false;     // scatter-gather: every instance's outcome
  std::map<std::string, std::string> headers{};
  std::string traceparent{};
  std::chrono::milliseconds idle_timeout{0};  // streams: the longest wait for a chunk
};

// SERVICE.METHOD with `payload`. Writes the reply payload as is, plus a '\n' unless it
// already ends with one; with options.json, one JSON object (see render.hpp). With
// flags.stream, each chunk as is as it comes (JSON: one {"chunk":true,"payload":...} line
// each, then {"status":"OK"}); with flags.all, a table INSTANCE STATUS REPLY (JSON:
// gather_json). Once `stop` is set (SIGINT, SIGTERM) the call is cancelled and this
// throws Error(CANCELLED).
void call(const Options& options, const CallFlags& flags, const std::string& service,
          const std::string& method, const std::string& payload, const std::atomic<bool>& stop,
          std::ostream& out);

// --- Publish-subscribe ---------------------------------------------------------------

// Publishes `payload` on `topic` with a confirmation; writes "published to N
// subscriptions" (JSON: {"topic":...,"matched":N}).
void publish(const Options& options, const std::string& topic, const std::string& payload,
             std::ostream& out);

// Subscribes to `pattern` and writes one line per message, flushed: "TOPIC PAYLOAD"
// (payload as one_line_text(), see encoding.hpp), or with options.json
// {"topic":...,"payload":...,"missed_before":N}. A message the broker had to drop
// messages before is preceded on `err` by "missed N messages before this one".
void subscribe(const Options& options, const std::string& pattern, std::uint64_t count,
               const std::atomic<bool>& stop, std::ostream& out, std::ostream& err);

// --- Point-to-point ------------------------------------------------------------------

// Hands `payload` to the connection named `peer`; writes "delivered to PEER" (JSON:
// {"peer":...,"delivered":true}) once that peer has taken it. With `hold` > 0 and the
// peer not connected, the broker keeps the message that long for it, and the command
// waits that much longer than options.timeout.
void send(const Options& options, const std::string& peer, const std::string& payload,
          std::chrono::milliseconds hold, std::ostream& out);

// Writes the messages sent to this connection, one line each, flushed: "FROM PAYLOAD"
// (JSON: {"from":...,"payload":...}). Says on `err` which name to send to.
void receive(const Options& options, std::uint64_t count, const std::atomic<bool>& stop,
             std::ostream& out, std::ostream& err);

// --- Legacy queues -------------------------------------------------------------------

// Appends `item` to queue `name`, waiting for room while it is full (within the
// timeout; then OVERLOADED). Writes "put on NAME" (JSON: {"queue":...,"put":true}).
void queue_put(const Options& options, const std::string& name, const std::string& item,
               std::ostream& out);

// Takes the head of queue `name`, waiting for one within the timeout, and writes it as
// call() writes a reply (JSON: {"queue":...,"payload":...}). The item is acknowledged
// after it was written. Throws Error(DEADLINE_EXCEEDED) when no item came.
void queue_get(const Options& options, const std::string& name, std::ostream& out);

// Writes the number of items in queue `name` (JSON: {"queue":...,"size":N}).
void queue_size(const Options& options, const std::string& name, std::ostream& out);

// `$broker`.queue.stat: queue `name`'s admin.QueueInfo as "key: value" lines (JSON: the
// message). Throws Error(NOT_FOUND) when the broker has no such queue.
void queue_stat(const Options& options, const std::string& name, std::ostream& out);

// `$broker`.queue.peek (the admin verb, with auth): the first `count` items of queue
// `name`, not taken, as a table SEQ DELIVERIES PAYLOAD (payload as one_line_text()),
// or a JSON array of {"seq":N,"deliveries":N,"payload":...}. Takes nothing.
void queue_peek(const Options& options, const std::string& name, std::uint32_t count,
                std::ostream& out);

// `$broker`.queue.purge (the admin verb, with auth): removes the items of queue `name`
// that are not taken (taken ones stay with their readers until acknowledged). Writes
// "purged N items from NAME" (JSON: {"queue":...,"purged":N}).
void queue_purge(const Options& options, const std::string& name, std::ostream& out);

// With `transient`: declares queue `name` transient (its items in the broker's memory
// only; see sagebus::QueueOptions) and writes "declared NAME transient" (JSON:
// {"queue":...,"durable":false}). Without: queues are durable by default when the broker
// has a store, so this only checks that `name` is or will be durable, and says which
// (JSON: {"queue":...,"durable":true,"exists":BOOL}). Throws Error(UNAVAILABLE) when the
// broker has no store, Error(INVALID_ARGUMENT) when the queue was declared transient.
void queue_declare(const Options& options, const std::string& name, bool transient,
                   std::ostream& out);

// --- Keys ----------------------------------------------------------------------------

// Generates a CURVE key pair and writes NAME.key (public, 0644) and NAME.key_secret
// (secret, 0600); NAME may include a directory. Writes both paths and the public key
// (JSON: {"public_file":...,"secret_file":...,"public_key":...}). Throws
// sagebus::wire::KeyFileError, writing neither file, when either exists. Needs no broker.
void keygen(const Options& options, const std::string& name, std::ostream& out);

}  // namespace busctl
