// detail::Connection: one sagebus::Client's connection to the broker, as user threads
// see it.
//
// Two parts behind it: the protocol, a sans-I/O detail::Session (session/session.hpp)
// holding every table of calls, registrations and subscriptions; and the driver
// (driver.hpp), which owns the DEALER socket, its monitor, the I/O thread and the
// session, under one mutex. The I/O thread runs the driver; a thread in a synchronous
// call() runs it too, while no other thread waits on the socket. Other user threads hand
// work over through a mutex-guarded command list and an eventfd that wakes whichever
// thread waits on the socket. Completions (Done) run on the thread running the driver and
// must be quick: they wake a waiting caller or post to the callback thread.
//
// Connection states (as gRPC's): connecting (since start or since a loss, until the
// first connect attempt fails), ready (welcomed by the broker), failing (an attempt
// failed or the broker refused us; retrying with backoff). Calls without wait_for_ready
// wait while connecting and fail UNAVAILABLE while failing; calls with it wait until
// ready or their deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <zmq.hpp>

#include "sagebus/client.hpp"
#include "sagebus/wire.pb.h"
#include "session/outputs.hpp"

namespace sagebus::detail {

// The broker's max-payload until its WELCOME says otherwise (sage-busd's default).
inline constexpr std::uint64_t kDefaultMaxPayload = 16u << 20;

class ServiceCore;
class SubscriptionCore;
class Driver;
using Clock = std::chrono::steady_clock;

// The outcome of anything the broker answers with a REPLY.
struct Outcome {
  Status status = Status::ok;
  std::string message{};
  std::string payload{};
  std::uint64_t count = 0;       // PUBLISH with confirm, QUEUE_SIZE
  std::uint64_t tag = 0;         // QUEUE_GET
  std::uint32_t deliveries = 0;  // QUEUE_GET: times the item was handed out, this one included
  bool redelivered = false;      // QUEUE_GET
};
Outcome failure(Status status, std::string message);

// A user's callback for call_async, with the reply it is to be given.
using Callback = std::function<void(Reply)>;
struct PostedCallback {
  Callback callback;
  Reply reply;
};

// Runs posted callbacks in order on one thread of its own.
class CallbackThread {
 public:
  CallbackThread();
  ~CallbackThread();  // runs what is queued, then joins
  void post(Callback callback, Reply reply);

 private:
  void run_();
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<PostedCallback> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

class Connection;

// Where a request's outcome goes, exactly once, from the thread running the driver: a
// function run there (it must be quick: it wakes a waiting caller), or a user's callback
// with its reply, handed to the connection (Connection::post_callback_): to its callback
// thread, or to its I/O thread (ClientOptions::inline_callbacks) — no function wrapping
// another.
class Done {
 public:
  Done() = default;
  explicit Done(std::function<void(Outcome)> fn) : fn_(std::move(fn)) {}
  Done(Connection& connection, Callback callback)
      : connection_(&connection), callback_(std::move(callback)) {}
  void operator()(Outcome outcome);

 private:
  std::function<void(Outcome)> fn_;
  Connection* connection_ = nullptr;
  Callback callback_;
};

// A caller's way out of a synchronous request (Client::call with `interrupted`): `check`
// is asked at least every `every` while the caller waits; true ends the wait CANCELLED.
struct Interrupt {
  std::function<bool()> check;
  std::chrono::milliseconds every;
};

// What the session and the user's side share of a request that can be cancelled (a
// CancelToken) or that streams its reply (StreamCore, stream_core.hpp).
class CallControl {
 public:
  virtual ~CallControl() = default;
  // A CHUNK of the request's reply (a stream's chunk, a call_all's outcome), on the
  // thread running the driver (it must be quick); flush() after the messages read
  // together, so that what reads the chunks on another thread is woken once per batch.
  // An outcome among those messages comes before that flush(): the control hands its
  // chunks on first.
  virtual void on_chunk(const wire::Header& header, std::string_view payload) {
    (void)header;
    (void)payload;
  }
  virtual void flush() {}

  // The session's, under the driver's lock: the request's id while it is open (0 before
  // and after), and whether it was cancelled before the session took it up.
  std::uint64_t key = 0;
  bool unflushed = false;  // on_chunk() since the last flush()
  bool cancel_early = false;
  std::string cancel_why{};
  // The tokens' registrations that cancel the request (Connection::watch_tokens_),
  // forgotten when it ends (Session::finish_).
  std::vector<std::pair<CancelToken, std::uint64_t>> registrations{};
};

// Anything the client asks of the broker and waits to hear back about: a call, a
// confirmed publish, a send, a queue operation. Only the fields of its kind are used.
struct RequestSpec {
  wire::Kind kind = wire::REQUEST;
  std::string service{};              // REQUEST
  std::string method{};               // REQUEST
  std::string target{};               // PUBLISH: topic; SEND: peer; QUEUE_*: queue
  zmq::message_t payload{};           // the caller's bytes, copied once, straight into the frame
  std::uint64_t tag = 0;              // QUEUE_GET, QUEUE_ACK
  bool transient = false;             // QUEUE_DECLARE
  std::chrono::milliseconds ttl{0};   // QUEUE_PUT
  std::chrono::milliseconds hold{0};  // SEND
  bool stream = false;                // REQUEST: the reply is a stream of chunks
  bool all = false;                   // REQUEST: to every instance (Client::call_all)
  std::string traceparent{};          // REQUEST: the call's own (Connection::call_spec)
  CallOptions options{};
  // Set when the request can be cancelled or streams (a CancelToken, Client::stream).
  std::shared_ptr<CallControl> control{};
  // When the user asked for it: its deadline counts from here (timeout + hold), not from
  // when the session takes it up. Set by Connection::start() and call().
  Clock::time_point asked{};
  // The deadline itself, when it is a context's (CallOptions::context); else asked +
  // timeout + hold.
  std::optional<Clock::time_point> deadline{};
};

// What user threads hand the session (session/session.hpp), through the driver.
namespace command {

// A request to start, and where its outcome goes.
struct Start {
  RequestSpec spec;
  Done done;
  bool sync = false;  // from call(): its caller waits for it
};
struct Publish {
  std::string topic;
  // The caller's bytes, copied once, straight into the frame; a small one is copied
  // again into a PUBLISH_BATCH (Session::make_outgoing_).
  zmq::message_t payload;
};
struct AddService {
  std::shared_ptr<ServiceCore> core;
};
struct Unregister {
  std::string name;
};
struct RemoveService {
  std::string name;
};
struct SendReply {
  std::uint64_t id;
  std::uint64_t epoch;
  Status status;
  std::string message;
  std::string payload;
};
struct AddSubscription {
  std::shared_ptr<SubscriptionCore> core;
};
struct RemoveSubscription {
  std::shared_ptr<SubscriptionCore> core;
};
struct Credit {
  std::shared_ptr<SubscriptionCore> core;
  std::uint32_t credit;
};
// The first receive(): the connection takes the short lease now, not at its next idle
// heartbeat.
struct ReadsInbox {};
// A caller gives up a request (a CancelToken, a Stream cancelled or dropped).
struct Cancel {
  std::shared_ptr<CallControl> control;
  std::string why;
};
// A stream's reader took `credit` chunks: the service may send as many more.
struct StreamCredit {
  std::shared_ptr<CallControl> control;
  std::uint32_t credit;
};
// A streaming handler's chunk for dispatch `id` (as SendReply). The session leaves
// `payload` whole when it copied it into a batch, for the driver to hand back to
// Connection::send_chunk (Connection::reuse_chunk_buffers_).
struct SendChunk {
  std::uint64_t id;
  std::uint64_t epoch;
  std::string payload;
};
using Command =
    std::variant<Start, Publish, AddService, Unregister, RemoveService, SendReply, AddSubscription,
                 RemoveSubscription, Credit, ReadsInbox, Cancel, StreamCredit, SendChunk>;

}  // namespace command

// What a service's or a subscription's core asks of the connection that carries it.
class CoreLink {
 public:
  // Sends UNREGISTER; the core hears the broker's answer through on_unregistered().
  virtual void unregister_service(const std::string& name) = 0;
  // Forgets the service: requests for it are answered UNAVAILABLE from now on.
  virtual void remove_service(const std::string& name) = 0;
  // Sends the reply of dispatch `id`, received in broker session `epoch` (Job::epoch);
  // dropped if the broker has been replaced since. From a service worker.
  virtual void send_reply(std::uint64_t id, std::uint64_t epoch, Status status, std::string message,
                          std::string payload) = 0;
  // Sends a copy of a chunk of the streamed reply of dispatch `id` (as send_reply).
  virtual void send_chunk(std::uint64_t id, std::uint64_t epoch, std::string_view chunk) = 0;
  // The broker's max-payload, from its WELCOME.
  virtual std::uint64_t max_payload() const = 0;
  virtual void remove_subscription(std::shared_ptr<SubscriptionCore> core) = 0;
  virtual void return_credit(std::shared_ptr<SubscriptionCore> core, std::uint32_t credit) = 0;

 protected:
  ~CoreLink() = default;
};

class Connection final : public CoreLink, public SessionHost {
 public:
  explicit Connection(ClientOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts a request; `done` runs exactly once with its outcome. Never blocks.
  void start(RequestSpec spec, Done done);
  // Runs a request to its end on this thread and returns its outcome (driver.hpp), or
  // CANCELLED when `interrupt` says so first. Not from a handler on the I/O thread
  // (on_io_thread()), which it would wait for forever.
  Outcome call(RequestSpec&& spec, const Interrupt* interrupt = nullptr);
  // Queues an unconfirmed publish. Waits while max_queued_publishes are queued; throws
  // Error(OVERLOADED) if that lasts `timeout`, Error(UNAVAILABLE) when not connected.
  void publish(std::string_view topic, std::string_view payload, std::chrono::milliseconds timeout);

  // Services: registered now and after every new session; calls routed to them.
  void add_service(std::shared_ptr<ServiceCore> core);
  // CoreLink.
  void unregister_service(const std::string& name) override;
  void remove_service(const std::string& name) override;
  void send_reply(std::uint64_t id, std::uint64_t epoch, Status status, std::string message,
                  std::string payload) override;
  void send_chunk(std::uint64_t id, std::uint64_t epoch, std::string_view chunk) override;
  std::uint64_t max_payload() const override {
    return max_payload_.load(std::memory_order_relaxed);
  }
  // A stream's reader grants the service `credit` more chunks; a caller cancels.
  void stream_credit(std::shared_ptr<CallControl> control, std::uint32_t credit);
  void cancel(std::shared_ptr<CallControl> control, std::string why);
  void remove_subscription(std::shared_ptr<SubscriptionCore> core) override;
  void return_credit(std::shared_ptr<SubscriptionCore> core, std::uint32_t credit) override;

  // Subscriptions: subscribed now and after every new session.
  void add_subscription(std::shared_ptr<SubscriptionCore> core);

  // The point-to-point inbox: the I/O thread offers (SessionHost), receive() takes.
  std::optional<Message> receive(std::chrono::milliseconds timeout);

  // SessionHost: from the thread running the driver.
  void link_changed(bool ready, std::optional<Error> error) override;
  void max_payload_changed(std::uint64_t max_payload) override {
    max_payload_.store(max_payload, std::memory_order_relaxed);
  }
  bool offer_to_inbox(Message message) override;
  bool reads_inbox() const override { return reads_inbox_.load(std::memory_order_relaxed); }
  void publishes_sent(std::size_t count) override {
    publish_slots_.release(static_cast<std::ptrdiff_t>(count));
  }
  void late_reply() override { late_replies_.fetch_add(1, std::memory_order_relaxed); }

  CallbackThread& callback_thread() { return callbacks_; }
  bool connected() const { return ready_.load(std::memory_order_acquire); }
  bool failing() const { return failing_.load(std::memory_order_acquire); }
  std::optional<Error> connection_error() const;
  std::uint64_t late_replies() const { return late_replies_.load(std::memory_order_relaxed); }
  bool wait_connected(std::chrono::milliseconds timeout) const;
  const ClientOptions& options() const noexcept { return options_; }
  // True on the client's I/O thread (where ServiceOptions::on_io_thread handlers run).
  bool on_io_thread() const noexcept { return std::this_thread::get_id() == io_thread_.get_id(); }

 private:
  friend class Driver;
  friend class Done;

  // Done: `callback` is to run with `reply`. On the callback thread; or, with
  // inline_callbacks until the I/O thread shuts down, queued in inline_callbacks_ for the
  // I/O thread (Driver::run_callbacks_). Under the driver's lock, or after the I/O
  // thread's end.
  void post_callback_(Callback callback, Reply reply);

  void post_(command::Command command);
  // The driver's: the buffers of chunks it copied into batches, for send_chunk to copy
  // later chunks into. A writer streaming small chunks allocates nothing per chunk then,
  // where a buffer allocated on its thread and freed on the I/O thread would have made
  // glibc give memory back to the system and fault it in again at each window's burst.
  void reuse_chunk_buffers_(std::vector<std::string>& buffers);
  // The outcome of a request whose token is cancelled already; else nothing, and each of
  // its tokens will cancel it (CallControl::registrations).
  std::optional<Outcome> watch_tokens_(RequestSpec& spec);
  // Makes wake_fd_ readable: whichever thread waits on the sockets wakes.
  void wake_();

  ClientOptions options_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> failing_{false};
  mutable std::mutex ready_mutex_;
  std::optional<Error> link_error_;  // guarded by ready_mutex_
  mutable std::condition_variable ready_cv_;

  std::mutex commands_mutex_;
  std::vector<command::Command> commands_;
  // Under commands_mutex_: buffers for small chunks (reuse_chunk_buffers_), and the bytes
  // they can hold, at most kMaxSpareChunkBytes (a default window's).
  static constexpr std::size_t kMaxSpareChunkBytes = std::size_t{1} << 20;
  std::vector<std::string> spare_chunk_buffers_;
  std::size_t spare_chunk_bytes_ = 0;
  int wake_fd_ = -1;  // eventfd: readable when commands_ is non-empty or on stop
  std::atomic<bool> stopping_{false};
  std::counting_semaphore<> publish_slots_;  // released as publishes reach the socket
  // The broker's max-payload, from its WELCOME (the I/O thread stores it).
  std::atomic<std::uint64_t> max_payload_{kDefaultMaxPayload};

  std::mutex inbox_mutex_;
  std::condition_variable inbox_cv_;
  std::deque<Message> inbox_;
  // receive() was called or a message offered: this connection takes point-to-point
  // messages, and keeps the short lease so that their senders soon learn it is gone.
  std::atomic<bool> reads_inbox_{false};
  // Replies read after their call's deadline, dropped (ClientStats::late_replies).
  std::atomic<std::uint64_t> late_replies_{0};

  CallbackThread callbacks_;
  // ClientOptions::inline_callbacks: callbacks of requests that ended, for the I/O thread
  // to run. Guarded by the driver's lock; inline_closed_ (set as the I/O thread shuts
  // down) sends the rest to callbacks_.
  std::vector<PostedCallback> inline_callbacks_;
  bool inline_closed_ = false;
  Driver* driver_ = nullptr;  // set by the I/O thread before the constructor returns
  std::thread io_thread_;
};

}  // namespace sagebus::detail
