#include "connection.hpp"

#include <errno.h>  // program_invocation_short_name
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>

#include "driver.hpp"
#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/curve_keys.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/socket.hpp"

namespace sagebus::detail {

namespace {

// "<program>-<pid>-<n>": unique among this process's clients, since two live
// connections may not share a name.
std::string default_name() {
  static std::atomic<unsigned> counter{0};
  std::string program = program_invocation_short_name;
  if (program.empty() || wire::check_name("client name", program)) program = "client";
  return program + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

std::ptrdiff_t publish_slots(const ClientOptions& options) {
  if (options.max_queued_publishes == 0 ||
      options.max_queued_publishes > static_cast<std::size_t>(std::counting_semaphore<>::max()))
    throw Error(Status::invalid_argument, "max_queued_publishes must be at least 1");
  return static_cast<std::ptrdiff_t>(options.max_queued_publishes);
}

// Replaces server_key and client_key, each given as Z85 text or a certificate's path, by
// the Z85 keys the socket takes: the broker's public key and this client's secret key.
void resolve_keys(ClientOptions& options) {
  if (options.server_key.empty() && options.client_key.empty()) return;
  if (options.server_key.empty() || options.client_key.empty())
    throw Error(Status::invalid_argument,
                "server_key and client_key go together: give both for a broker with auth, "
                "or neither");
  try {
    options.server_key = wire::key_or_file(options.server_key).public_key;
    if (!wire::valid_curve_key(options.client_key)) {
      wire::CurveKeys keys = wire::read_key_file(options.client_key);
      if (keys.secret_key.empty())
        throw Error(Status::invalid_argument,
                    "client_key " + options.client_key +
                        " is a public certificate; give this client's NAME.key_secret");
      options.client_key = std::move(keys.secret_key);
    }
  } catch (const wire::KeyFileError& e) {
    throw Error(Status::invalid_argument, e.what());
  }
}

ClientOptions checked(ClientOptions options) {
  if (options.name.empty()) options.name = default_name();
  if (auto error = wire::check_name("client name", options.name))
    throw Error(Status::invalid_argument, *error);
  if (options.reconnect_min.count() <= 0 || options.reconnect_max < options.reconnect_min)
    throw Error(Status::invalid_argument,
                "reconnect_min must be positive and reconnect_max at least reconnect_min");
  if (options.inbox_size == 0)
    throw Error(Status::invalid_argument, "inbox_size must be at least 1");
  resolve_keys(options);
  return options;
}

}  // namespace

Outcome failure(Status status, std::string message) {
  return Outcome{status, std::move(message), {}, 0, 0};
}

// ---------------------------------------------------------------------------------------
// CallbackThread

CallbackThread::CallbackThread() : thread_([this] { run_(); }) {}

CallbackThread::~CallbackThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void CallbackThread::post(Callback callback, Reply reply) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back({std::move(callback), std::move(reply)});
  }
  cv_.notify_one();
}

void CallbackThread::run_() {
  std::deque<PostedCallback> batch;  // all that was posted, taken under one lock
  std::unique_lock lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything posted has run
    batch.swap(queue_);
    lock.unlock();
    for (auto& posted : batch)
      posted.callback(std::move(posted.reply));
    batch.clear();
    lock.lock();
  }
}

void Done::operator()(Outcome outcome) {
  if (!connection_) return fn_(std::move(outcome));
  connection_->post_callback_(
      std::move(callback_),
      Reply{outcome.status, std::move(outcome.message), std::move(outcome.payload)});
}

// ---------------------------------------------------------------------------------------
// Connection

Connection::Connection(ClientOptions options)
    : options_(checked(std::move(options))), publish_slots_(publish_slots(options_)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0)
    throw Error(Status::internal, std::string("eventfd failed: ") + std::strerror(errno));
  // The socket is made on the I/O thread; a bad endpoint surfaces here.
  std::promise<void> started;
  auto started_future = started.get_future();
  io_thread_ = std::thread([this, &started] {
    // The program's signals are its own threads' business; here they would only make
    // ZeroMQ calls fail with EINTR (sagebus/wire/socket.hpp).
    wire::block_signals();
    run_io_thread(*this, started);
  });
  try {
    started_future.get();
  } catch (...) {
    io_thread_.join();
    ::close(wake_fd_);
    throw;
  }
}

Connection::~Connection() {
  stopping_.store(true, std::memory_order_release);
  wake_();
  io_thread_.join();
  ::close(wake_fd_);
  // Requests posted while the I/O thread was stopping still end exactly once.
  for (auto& command : commands_)
    if (auto* start = std::get_if<command::Start>(&command))
      start->done(failure(Status::cancelled, "the client was closed before the request was sent"));
}

void Connection::post_callback_(Callback callback, Reply reply) {
  if (!options_.inline_callbacks || inline_closed_)
    return callbacks_.post(std::move(callback), std::move(reply));
  inline_callbacks_.push_back({std::move(callback), std::move(reply)});
}

void Connection::post_(command::Command command) {
  bool was_empty = false;
  {
    std::lock_guard lock(commands_mutex_);
    was_empty = commands_.empty();
    commands_.push_back(std::move(command));
  }
  if (was_empty) {
    wake_();
    detail::wake_if_napping(*driver_);
  }
}

void Connection::wake_() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
}

void Connection::link_changed(bool ready, std::optional<Error> error) {
  failing_.store(error.has_value(), std::memory_order_release);
  {
    std::lock_guard lock(ready_mutex_);
    ready_.store(ready, std::memory_order_release);
    link_error_ = std::move(error);
  }
  ready_cv_.notify_all();
}

std::optional<Error> Connection::connection_error() const {
  std::lock_guard lock(ready_mutex_);
  return link_error_;
}

std::optional<Outcome> Connection::watch_tokens_(RequestSpec& spec) {
  const CancelToken* tokens[2] = {spec.options.cancel ? &*spec.options.cancel : nullptr,
                                  spec.options.context ? &spec.options.context->cancel : nullptr};
  for (const CancelToken* token : tokens)
    if (token != nullptr && token->cancelled()) return failure(Status::cancelled, token->why());
  for (const CancelToken* token : tokens) {
    if (token == nullptr) continue;
    if (!spec.control) spec.control = std::make_shared<CallControl>();
    // The control keeps the token's registration, the registration a weak control: the
    // two do not keep each other alive.
    std::weak_ptr<CallControl> weak = spec.control;
    const std::uint64_t registration = token->on_cancel([this, weak, token = *token] {
      if (auto control = weak.lock()) cancel(std::move(control), token.why());
    });
    spec.control->registrations.emplace_back(*token, registration);
  }
  return std::nullopt;
}

void Connection::cancel(std::shared_ptr<CallControl> control, std::string why) {
  post_(command::Cancel{std::move(control), std::move(why)});
}

void Connection::stream_credit(std::shared_ptr<CallControl> control, std::uint32_t credit) {
  post_(command::StreamCredit{std::move(control), credit});
}

void Connection::send_chunk(std::uint64_t id, std::uint64_t epoch, std::string_view chunk) {
  std::string payload;
  if (chunk.size() <= wire::kMaxBatchedChunk) {
    std::lock_guard lock(commands_mutex_);
    if (!spare_chunk_buffers_.empty()) {
      payload = std::move(spare_chunk_buffers_.back());
      spare_chunk_buffers_.pop_back();
      spare_chunk_bytes_ -= payload.capacity();
    }
  }
  payload.assign(chunk);
  post_(command::SendChunk{id, epoch, std::move(payload)});
}

void Connection::reuse_chunk_buffers_(std::vector<std::string>& buffers) {
  std::lock_guard lock(commands_mutex_);
  for (std::string& buffer : buffers) {
    // A buffer grown for a large chunk is not kept: small ones are batched and reused.
    if (buffer.capacity() > 2 * wire::kMaxBatchedChunk ||
        spare_chunk_bytes_ + buffer.capacity() > kMaxSpareChunkBytes)
      continue;
    spare_chunk_bytes_ += buffer.capacity();
    spare_chunk_buffers_.push_back(std::move(buffer));
  }
  buffers.clear();
}

void Connection::start(RequestSpec spec, Done done) {
  if (auto cancelled = watch_tokens_(spec)) return done(std::move(*cancelled));
  spec.asked = Clock::now();
  command::Start start{std::move(spec), std::move(done)};
  // Not on the I/O thread while it holds the driver's lock (it runs a handler there), but
  // from a callback it runs without it (inline_callbacks).
  const bool from_callback = on_io_thread() && detail::in_callbacks(*driver_);
  if ((!on_io_thread() || from_callback) && detail::try_start(*driver_, start, from_callback))
    return;
  post_(std::move(start));
}

Outcome Connection::call(RequestSpec&& spec, const Interrupt* interrupt) {
  if (auto cancelled = watch_tokens_(spec)) return std::move(*cancelled);
  spec.asked = Clock::now();
  return detail::call(*driver_, std::move(spec), interrupt);
}

void Connection::publish(std::string_view topic, std::string_view payload,
                         std::chrono::milliseconds timeout) {
  if (!connected() && (failing() || !wait_connected(timeout)))
    throw Error(Status::unavailable, "cannot publish on " + std::string(topic) +
                                         ": not connected to sage-busd at " + options_.endpoint);
  if (const auto limit = max_payload_.load(std::memory_order_relaxed); payload.size() > limit)
    throw Error(Status::invalid_argument, "cannot publish on " + std::string(topic) +
                                              ": the payload of " + std::to_string(payload.size()) +
                                              " bytes exceeds the broker's max-payload of " +
                                              std::to_string(limit) + " bytes");
  if (!publish_slots_.try_acquire_for(timeout))
    throw Error(Status::overloaded, "cannot publish on " + std::string(topic) + ": " +
                                        std::to_string(options_.max_queued_publishes) +
                                        " messages still wait for the socket after " +
                                        std::to_string(timeout.count()) + " ms");
  post_(command::Publish{std::string(topic), zmq::message_t(payload.data(), payload.size())});
}

void Connection::add_service(std::shared_ptr<ServiceCore> core) {
  post_(command::AddService{std::move(core)});
}

void Connection::unregister_service(const std::string& name) {
  post_(command::Unregister{name});
}

void Connection::remove_service(const std::string& name) {
  post_(command::RemoveService{name});
}

void Connection::send_reply(std::uint64_t id, std::uint64_t epoch, Status status,
                            std::string message, std::string payload) {
  post_(command::SendReply{id, epoch, status, std::move(message), std::move(payload)});
}

void Connection::add_subscription(std::shared_ptr<SubscriptionCore> core) {
  post_(command::AddSubscription{std::move(core)});
}

void Connection::remove_subscription(std::shared_ptr<SubscriptionCore> core) {
  post_(command::RemoveSubscription{std::move(core)});
}

void Connection::return_credit(std::shared_ptr<SubscriptionCore> core, std::uint32_t credit) {
  post_(command::Credit{std::move(core), credit});
}

bool Connection::offer_to_inbox(Message message) {
  reads_inbox_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(inbox_mutex_);
    if (inbox_.size() >= options_.inbox_size) return false;
    inbox_.push_back(std::move(message));
  }
  inbox_cv_.notify_one();
  return true;
}

std::optional<Message> Connection::receive(std::chrono::milliseconds timeout) {
  if (!reads_inbox_.exchange(true, std::memory_order_relaxed)) post_(command::ReadsInbox{});
  std::unique_lock lock(inbox_mutex_);
  if (!inbox_cv_.wait_for(lock, timeout, [this] { return !inbox_.empty(); })) return std::nullopt;
  Message message = std::move(inbox_.front());
  inbox_.pop_front();
  return message;
}

bool Connection::wait_connected(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(ready_mutex_);
  return ready_cv_.wait_for(lock, timeout, [this] { return ready_.load(); });
}

}  // namespace sagebus::detail
