// sagebus::Client: one connection to sage-busd, shared by any number of threads.
//
// Thread safety: every member function may be called from any thread at the same time.
// The ZeroMQ socket is used by one thread at a time, under a lock: the client's own I/O
// thread, or a caller's thread, which sends its own request when the socket is free and,
// in a synchronous call, may wait on the socket for its reply itself (docs/sdk.md,
// "Threads"); otherwise callers hand work over through a queue. Callbacks (call_async
// with a callback) run on the client's callback thread (or, with
// ClientOptions::inline_callbacks, on its I/O thread), never on the caller's thread; they
// may make further calls, but a callback that blocks delays the callbacks behind it.
//
// Connection: the constructor returns at once and the client connects in the
// background, retrying with jittered exponential backoff (reconnect_min doubling up to
// reconnect_max), so a process may start before the broker. After a broker restart the
// client says HELLO again and re-registers its services by itself.
//
// Outcomes: every call ends exactly once, with its reply or a sagebus::Error, no later
// than its timeout plus a small margin.
//
// Patterns: call() is request-response; publish()/subscribe() is publish-subscribe;
// send()/receive() is point-to-point between named connections; sagebus::LegacyQueue
// (legacy_queue.hpp) is the named-queue API old code had.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sagebus/call_context.hpp"
#include "sagebus/interceptor.hpp"
#include "sagebus/status.hpp"
#include "sagebus/stream.hpp"
#include "sagebus/subscription.hpp"

namespace sagebus {

namespace detail {
class Connection;
struct RequestSpec;
struct Interrupt;
}  // namespace detail

struct ClientOptions {
  std::string endpoint = "tcp://127.0.0.1:5555";
  // The connection's name: shown by `busctl clients`, and the address send() uses. Two
  // live connections may not share one. Defaults to "<program>-<pid>-<n>".
  std::string name{};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{2000};
  // Calls this client may have outstanding at once; beyond it, calls fail OVERLOADED.
  std::size_t max_pending = 100000;
  // Published messages not yet handed to the socket; publish() waits while this many are.
  std::size_t max_queued_publishes = 10000;
  // Point-to-point messages received and not yet taken by receive(). A send to this
  // client while it is full fails OVERLOADED for the sender.
  std::size_t inbox_size = 1024;
  // Replace a live connection with the same name instead of being refused. A client
  // that is replaced so stays disconnected (its calls fail UNAVAILABLE saying so) and
  // never takes its name back by itself.
  bool takeover = false;
  // Where call_async callbacks run. false (default): on the client's callback thread.
  // true: on the client's I/O thread, as soon as it has read their replies, one at a time
  // in the order the replies came, with no hand-off to another thread; a call_async made
  // there is sent from that thread when the callbacks ready together are done, with the
  // others they made (one BATCH, docs/protocol.md). The cheapest way to keep many calls in
  // flight, for callbacks that return at once: while one runs, the client reads nothing,
  // so it must not block (nor publish or receive() waiting). A synchronous request through
  // the same client (call, a confirmed publish, send, a LegacyQueue operation) fails
  // INVALID_ARGUMENT there, since it would wait for the thread it runs on.
  bool inline_callbacks = false;
  // CURVE authentication and encryption (docs/security.md), for a broker run with `auth`:
  // the broker's public key, and this client's secret key. Each is the key itself as Z85
  // text (40 characters) or the path of a certificate file as `busctl keygen` writes it
  // (server_key: the broker's NAME.key; client_key: this client's NAME.key_secret). Both
  // empty: plain, for a broker without `auth`. A broker that refuses the key, or whose
  // key is not server_key, fails calls UNAUTHENTICATED naming the endpoint.
  std::string server_key{};
  std::string client_key{};
  // Middleware around every call this client makes (interceptor.hpp), in order.
  std::vector<std::shared_ptr<Interceptor>> interceptors{};
};

struct PublishOptions {
  // Wait for the broker to say how many subscriptions matched (publish() returns it).
  bool confirm = false;
  std::chrono::milliseconds timeout{5000};
};

struct SendOptions {
  // How long the peer has to take the message once it is connected.
  std::chrono::milliseconds timeout{5000};
  // When the peer is not connected: how long the broker keeps the message for it.
  // 0: fail UNDELIVERABLE at once.
  std::chrono::milliseconds hold{0};
};

struct CallOptions {
  std::chrono::milliseconds timeout{5000};
  // false (default): fail at once with UNAVAILABLE while the client is not connected,
  // and with NO_RESPONDERS when the service has no live instance.
  // true: wait, up to the timeout, for the connection and for a live instance.
  bool wait_for_ready = false;
  // The call may run twice: when its instance is lost mid-call, the broker retries it
  // once on another instance instead of failing it UNAVAILABLE.
  bool idempotent = false;
  // For services using the consistent-hash strategy: same key, same instance.
  std::string routing_key{};
  std::map<std::string, std::string> headers{};
  // Gives the call up when cancelled (call_context.hpp): it ends CANCELLED at once, and
  // the broker tells the instance running it.
  std::optional<CancelToken> cancel{};
  // The context of the call this one is made within (Request::context()): the call ends
  // no later than its deadline, carries its trace id, and is cancelled with it.
  std::optional<CallContext> context{};
  // The call's W3C traceparent when it has no context; empty: the client starts a new
  // trace.
  std::string traceparent{};
  // Streams only (Client::stream): the longest wait for the next chunk (0: none; the
  // deadline still covers the whole stream), and the caller's window: the bytes of chunks
  // it may hold unread (1 B to 64 MiB), each chunk counted as its payload plus 64 bytes.
  // The service's writer waits while the window is full; the last chunk it sent may
  // overrun it, so the reader holds at most the window plus one chunk.
  std::chrono::milliseconds idle_timeout{0};
  std::uint32_t window_bytes = 1024 * 1024;
};

// The outcome of a call. call() and the future of call_async() only ever hold
// status == ok (failures are thrown); the callback form receives failures here too.
struct Reply {
  Status status = Status::ok;
  std::string message{};  // why, when status != ok
  std::string payload{};
  bool ok() const noexcept { return status == Status::ok; }
};

// One instance's outcome of Client::call_all.
struct InstanceReply {
  std::string instance{};  // the instance's connection name (ClientOptions::name)
  Status status = Status::ok;
  std::string message{};  // why, when status != ok
  std::string payload{};
  bool ok() const noexcept { return status == Status::ok; }
};

// The outcome of Client::call_all: how many instances were asked, and one outcome each.
struct GatherReply {
  std::size_t asked = 0;
  std::vector<InstanceReply> replies{};  // in the order they came
};

// What a client has counted since it was made.
struct ClientStats {
  // Services' replies read after their call's deadline but before this client's timer
  // ended the call: each was dropped, and its call ended DEADLINE_EXCEEDED. (Those the
  // broker reads after the deadline, it counts itself: late_replies in busctl status.)
  std::uint64_t late_replies = 0;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  // Fails every call still outstanding with CANCELLED, says GOODBYE, joins its threads.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Calls `method` of `service` and waits for the outcome.
  // Returns the reply; throws sagebus::Error with the status of any other outcome.
  Reply call(std::string_view service, std::string_view method, std::string_view payload,
             const CallOptions& options = {});

  // As call(), asking `interrupted` on this thread at least every `every` while it waits
  // (holding no lock of the client's; it may take the caller's own, e.g. an interpreter's).
  // When it returns true the call throws Error(CANCELLED) at once. Only the wait ends:
  // the broker and the service are not told, and a reply that comes is dropped.
  Reply call(std::string_view service, std::string_view method, std::string_view payload,
             const CallOptions& options, std::function<bool()> interrupted,
             std::chrono::milliseconds every = std::chrono::milliseconds(100));

  // As call(), but returns at once. The future holds the reply or the sagebus::Error.
  std::future<Reply> call_async(std::string_view service, std::string_view method,
                                std::string_view payload, const CallOptions& options = {});

  // As call(), but returns at once and later runs `done` exactly once, on the callback
  // thread (ClientOptions::inline_callbacks: the I/O thread), with the reply or the
  // failure (Reply::status != ok).
  void call_async(std::string_view service, std::string_view method, std::string_view payload,
                  const CallOptions& options, std::function<void(Reply)> done);

  // Calls `method` of `service`, whose handler answers with a stream of chunks
  // (stream.hpp), and returns at once; the stream's chunks and final outcome are read
  // from the Stream. Throws Error(INVALID_ARGUMENT) for bad names or options.
  Stream stream(std::string_view service, std::string_view method, std::string_view payload,
                const CallOptions& options = {});

  // As stream(), but runs `on_chunk` with each chunk as it comes and then `done` exactly
  // once with the final outcome, both on the callback thread, in order. The next chunk is
  // granted to the service as each on_chunk returns. Cancel it with CallOptions::cancel.
  void stream_async(std::string_view service, std::string_view method, std::string_view payload,
                    const CallOptions& options, std::function<void(std::string_view)> on_chunk,
                    std::function<void(Reply)> done);

  // Scatter-gather: calls `method` of every live instance of `service` that has it, and
  // waits until each has an outcome, or the deadline gives it DEADLINE_EXCEEDED. An
  // instance lost meanwhile gives UNAVAILABLE, one at its max_inflight OVERLOADED, each
  // named. Returns every instance's outcome, whatever its status; throws Error when
  // nothing could be asked (NO_RESPONDERS, NOT_FOUND) or for any other failure of the
  // whole (INVALID_ARGUMENT, CANCELLED, UNAVAILABLE when the broker is lost).
  GatherReply call_all(std::string_view service, std::string_view method, std::string_view payload,
                       const CallOptions& options = {});

  // As call_all(), as a stream of outcomes: `on_asked` once with how many instances were
  // asked, `on_reply` with each one's outcome as it comes, then `done` exactly once (OK,
  // or the failure of the whole), all on the callback thread, in order.
  void call_all_async(std::string_view service, std::string_view method, std::string_view payload,
                      const CallOptions& options, std::function<void(std::size_t)> on_asked,
                      std::function<void(InstanceReply)> on_reply, std::function<void(Reply)> done);

  // Publishes `payload` on `topic` (no wildcards). Without confirm, returns 0 once the
  // message is queued for the broker, waiting while max_queued_publishes are queued;
  // with confirm, returns the number of subscriptions that matched. Throws
  // Error(INVALID_ARGUMENT) for a bad topic, Error(UNAVAILABLE) when not connected,
  // Error(OVERLOADED) when the queue stays full for the timeout.
  std::size_t publish(std::string_view topic, std::string_view payload,
                      const PublishOptions& options = {});

  // Subscribes to `pattern` ('*' one token, '>' the rest). `handler` runs on the
  // subscription's own thread, one message at a time, in publish order. Returns a handle
  // that unsubscribes when destroyed. Throws Error(INVALID_ARGUMENT) for a bad pattern.
  // The subscription survives reconnects: the client subscribes again by itself.
  Subscription subscribe(std::string_view pattern, MessageHandler handler,
                         const SubscribeOptions& options = {});

  // Hands `payload` to the connection named `peer`. Returns once that peer has taken it
  // (delivered). Throws Error(UNDELIVERABLE) when no such peer is connected (after the
  // hold, if any), Error(OVERLOADED) when its inbox is full, or the status of any other
  // failure.
  void send(std::string_view peer, std::string_view payload, const SendOptions& options = {});
  // As send(), asking `interrupted` while it waits, as call() with `interrupted` does: true
  // throws Error(CANCELLED) at once (the message may still be delivered).
  void send(std::string_view peer, std::string_view payload, const SendOptions& options,
            std::function<bool()> interrupted,
            std::chrono::milliseconds every = std::chrono::milliseconds(100));

  // Takes the oldest message sent to this client, waiting up to `timeout` for one.
  std::optional<Message> receive(std::chrono::milliseconds timeout);

  // Why this client is not connected, while it is failing to: UNAVAILABLE with the
  // connection problem, or the broker's refusal (PERMISSION_DENIED: the name is taken,
  // or this client was replaced). Nothing while connected or still connecting.
  std::optional<Error> connection_error() const;

  // True while the broker has welcomed this connection.
  bool connected() const;
  // Waits up to `timeout` for the broker's welcome. Returns connected().
  bool wait_connected(std::chrono::milliseconds timeout) const;

  const ClientOptions& options() const noexcept;

  // The client's counters, read now.
  ClientStats stats() const;

  // For sagebus::Service; not part of the stable API.
  detail::Connection& connection() noexcept { return *connection_; }

 private:
  // A synchronous call, through the interceptors.
  Reply call_(detail::RequestSpec&& spec, const detail::Interrupt* interrupt);

  std::unique_ptr<detail::Connection> connection_;
};

}  // namespace sagebus
