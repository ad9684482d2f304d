#include "connection.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <queue>
#include <random>
#include <unordered_map>

#include <zmq.hpp>

#include "sagebus/wire/frame.hpp"
#include "service_core.hpp"

namespace sagebus::detail {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

// A sent call whose broker never answers ends this long after its deadline.
constexpr milliseconds kLocalGrace{50};
// While connected but not welcomed, HELLO is repeated this often.
constexpr milliseconds kHelloRetry{1000};
// Until the first WELCOME says otherwise.
constexpr std::uint32_t kDefaultHeartbeatMs = 1000;
constexpr std::uint32_t kDefaultLiveness = 3;
constexpr std::uint64_t kDefaultMaxPayload = 16u << 20;
// Messages read from the socket before the loop looks at its timers again.
constexpr int kReceiveBatch = 256;

Status from_wire(wire::Status status) {
  return wire::Status_IsValid(status) ? static_cast<Status>(status) : Status::internal;
}

Reply failure(Status status, std::string message) {
  return Reply{status, std::move(message), {}};
}

std::string default_name() {
  std::string comm;
  std::ifstream("/proc/self/comm") >> comm;
  if (comm.empty()) comm = "client";
  return comm + "-" + std::to_string(::getpid());
}

std::string random_hex(std::size_t bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::random_device device;
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto byte = device() & 0xffu;
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xfu];
  }
  return out;
}

// A frame that owns `s` without copying it (large payloads), or a copy (small ones).
zmq::message_t adopt(std::string&& s) {
  if (s.size() <= 64) return zmq::message_t(s.data(), s.size());
  auto* owned = new std::string(std::move(s));
  return zmq::message_t(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
}

std::string to_string(const zmq::message_t& frame) {
  return std::string(static_cast<const char*>(frame.data()), frame.size());
}

}  // namespace

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

void CallbackThread::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void CallbackThread::run_() {
  std::unique_lock lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything posted has run
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    fn();
    lock.lock();
  }
}

// ---------------------------------------------------------------------------------------
// Engine: everything the I/O thread owns.

class Connection::Engine {
 public:
  explicit Engine(Connection& owner)
      : owner_(owner),
        endpoint_(owner.options_.endpoint),
        socket_(context_, zmq::socket_type::dealer),
        monitor_(context_, zmq::socket_type::pair) {
    const auto& o = owner.options_;
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::reconnect_ivl, static_cast<int>(o.reconnect_min.count()));
    socket_.set(zmq::sockopt::reconnect_ivl_max, static_cast<int>(o.reconnect_max.count()));
    const std::string monitor_address = "inproc://sagebus-monitor-" + random_hex(8);
    if (zmq_socket_monitor(
            socket_.handle(), monitor_address.c_str(),
            ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED) != 0)
      throw zmq::error_t();
    monitor_.connect(monitor_address);
    socket_.connect(endpoint_);
    hello_.set_name(o.name);
    hello_.set_instance_id(random_hex(8));
    hello_.set_sdk_version(SAGEBUS_VERSION);
  }

  void run() {
    while (!owner_.stopping_.load(std::memory_order_acquire)) {
      zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor_.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, owner_.wake_fd_, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 3, next_timeout_());
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
      now_ = Clock::now();
      if (items[1].revents & ZMQ_POLLIN) drain_monitor_();
      if (items[2].revents & ZMQ_POLLIN) drain_commands_();
      if (items[0].revents & ZMQ_POLLIN) drain_socket_();
      run_timers_();
    }
    shut_down_();
  }

 private:
  enum class Link { connecting, ready, failing };

  struct Call {
    CallSpec spec;  // spec.payload is moved into `payload`
    zmq::message_t payload;
    Done done;
    Clock::time_point deadline;
    bool sent = false;
  };

  struct ServiceEntry {
    std::shared_ptr<ServiceCore> core;
    bool registered = true;  // replayed after every WELCOME while true
  };

  struct RegistrationAnswer {
    std::string service;
    bool unregister;
  };

  // --- input ---------------------------------------------------------------------------

  void drain_commands_() {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto n = ::read(owner_.wake_fd_, &count, sizeof count);
    std::vector<Command> commands;
    {
      std::lock_guard lock(owner_.commands_mutex_);
      commands.swap(owner_.commands_);
    }
    for (auto& command : commands)
      std::visit([this](auto& c) { handle_(c); }, command);
  }

  void drain_monitor_() {
    for (;;) {
      zmq::message_t event;
      if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
      zmq::message_t address;
      (void)monitor_.recv(address, zmq::recv_flags::dontwait);
      if (event.size() < sizeof(std::uint16_t)) continue;
      std::uint16_t id = 0;
      std::memcpy(&id, event.data(), sizeof id);
      on_link_event_(id);
    }
  }

  void drain_socket_() {
    for (int i = 0; i < kReceiveBatch; ++i) {
      zmq::message_t header_frame;
      if (!socket_.recv(header_frame, zmq::recv_flags::dontwait)) return;
      frames_.clear();
      for (bool more = header_frame.more(); more; more = frames_.back().more()) {
        frames_.emplace_back();
        (void)socket_.recv(frames_.back(), zmq::recv_flags::dontwait);
      }
      if (wire::decode(header_frame, in_) != wire::DecodeResult::ok) continue;  // not ours to fix
      last_heard_ = now_;
      on_message_();
    }
  }

  void on_message_() {
    switch (in_.kind()) {
      case wire::WELCOME:
        return on_welcome_();
      case wire::HELLO_REQUIRED:
        return on_hello_required_(in_.id());
      case wire::HEARTBEAT:
        return;
      case wire::GOODBYE:
        return lose_link_("sage-busd at " + endpoint_ + " is shutting down: " + in_.message());
      case wire::REPLY:
        return on_reply_();
      case wire::REQUEST:
        return on_request_();
      default:
        return;  // kinds a broker does not send; nothing to answer
    }
  }

  // --- the link ------------------------------------------------------------------------

  void on_link_event_(std::uint16_t event) {
    switch (event) {
      case ZMQ_EVENT_CONNECTED:
        tcp_up_ = true;
        if (link_ != Link::ready) {
          link_ = Link::connecting;
          send_hello_();
        }
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        if (link_ == Link::connecting) {
          link_ = Link::failing;
          last_failure_ = "cannot connect to sage-busd at " + endpoint_;
          fail_unsent_impatient_();
        }
        break;
      case ZMQ_EVENT_DISCONNECTED:
        tcp_up_ = false;
        lose_link_("connection to sage-busd at " + endpoint_ + " closed");
        break;
      default:
        break;
    }
  }

  void on_welcome_() {
    const auto& w = in_.welcome();
    if (!session_.empty() && w.broker_session() != session_)
      fail_sent_(0, std::nullopt,
                 "sage-busd at " + endpoint_ + " restarted while the call was in flight");
    session_ = w.broker_session();
    heartbeat_ = milliseconds(w.heartbeat_ms() ? w.heartbeat_ms() : kDefaultHeartbeatMs);
    liveness_ = w.liveness() ? w.liveness() : kDefaultLiveness;
    max_payload_ = w.max_payload() ? w.max_payload() : kDefaultMaxPayload;
    link_ = Link::ready;
    next_heartbeat_ = now_ + heartbeat_;
    set_ready_(true);
    for (auto& [name, entry] : services_)
      if (entry.registered) send_register_(*entry.core);
    std::vector<std::uint64_t> unsent;
    for (auto& [id, call] : calls_)
      if (!call.sent) unsent.push_back(id);
    for (auto id : unsent)
      send_call_(id);
  }

  // The broker does not know this connection: it did not act on message `id`, and it
  // has forgotten every call it was given before. Say HELLO again; re-send `id` if it
  // is a call (it never ran).
  void on_hello_required_(std::uint64_t id) {
    if (link_ == Link::ready) set_ready_(false);
    link_ = Link::connecting;
    fail_sent_(id, id,
               "sage-busd at " + endpoint_ +
                   " forgot this connection (lease expired) while the call was in flight");
    forget_registration_answers_();
    if (auto it = calls_.find(id); it != calls_.end()) it->second.sent = false;
    if (now_ - hello_sent_at_ > milliseconds(100)) send_hello_();
  }

  // The broker is gone or has forgotten this connection: calls it was given cannot be
  // answered any more. New calls fail fast until a WELCOME (or a new connection) comes.
  void lose_link_(const std::string& why) {
    if (link_ == Link::ready) set_ready_(false);
    link_ = Link::failing;
    last_failure_ = why;
    fail_sent_(0, std::nullopt, why + "; the call may or may not have run");
    fail_unsent_impatient_();
    forget_registration_answers_();
    if (tcp_up_) send_hello_();
  }

  // Registrations are replayed after the next WELCOME; an unregistering service need not
  // wait for an answer from a broker that no longer routes to it.
  void forget_registration_answers_() {
    for (auto& [id, answer] : registrations_) {
      auto service = services_.find(answer.service);
      if (answer.unregister && service != services_.end()) service->second.core->on_unregistered();
    }
    registrations_.clear();
  }

  // --- calls ---------------------------------------------------------------------------

  void handle_(StartCall& c) {
    const auto& o = c.spec.options;
    if (auto error = wire::check_name("service name", c.spec.service))
      return c.done(failure(Status::invalid_argument, *error));
    if (auto error = wire::check_name("method name", c.spec.method))
      return c.done(failure(Status::invalid_argument, *error));
    if (o.timeout.count() <= 0 ||
        o.timeout > milliseconds(std::numeric_limits<std::uint32_t>::max()))
      return c.done(
          failure(Status::invalid_argument, "timeout must be between 1 ms and 2^32-1 ms, not " +
                                                std::to_string(o.timeout.count()) + " ms"));
    if (calls_.size() >= owner_.options_.max_pending)
      return c.done(
          failure(Status::overloaded, "this client already has " + std::to_string(calls_.size()) +
                                          " calls outstanding (ClientOptions::max_pending)"));
    if (link_ == Link::failing && !o.wait_for_ready)
      return c.done(failure(Status::unavailable, not_connected_text_()));
    const auto id = ++next_id_;
    Call call{std::move(c.spec), {}, std::move(c.done), now_ + o.timeout, false};
    call.payload = adopt(std::move(call.spec.payload));
    deadlines_.emplace(call.deadline, id);
    calls_.emplace(id, std::move(call));
    if (link_ == Link::ready) send_call_(id);
  }

  // Sends (or re-sends under a fresh id) call `id`, which is in calls_ and not sent.
  void send_call_(std::uint64_t id) {
    auto node = calls_.extract(id);
    Call& call = node.mapped();
    if (call.deadline <= now_) return call.done(deadline_failure_(call));
    if (call.payload.size() > max_payload_)
      return call.done(
          failure(Status::invalid_argument, "payload of " + std::to_string(call.payload.size()) +
                                                " bytes exceeds the broker's limit of " +
                                                std::to_string(max_payload_) + " bytes"));
    const auto fresh = ++next_id_;
    const auto& o = call.spec.options;
    out_.Clear();
    out_.set_kind(wire::REQUEST);
    out_.set_id(fresh);
    out_.set_service(call.spec.service);
    out_.set_method(call.spec.method);
    const auto left = duration_cast<milliseconds>(call.deadline - now_).count();
    out_.set_timeout_ms(static_cast<std::uint32_t>(std::max<std::int64_t>(left, 1)));
    out_.set_idempotent(o.idempotent);
    out_.set_wait_for_ready(o.wait_for_ready);
    if (!o.routing_key.empty()) out_.set_routing_key(o.routing_key);
    for (const auto& [k, v] : o.headers)
      (*out_.mutable_headers())[k] = v;
    zmq::message_t payload;
    payload.copy(call.payload);  // shares the buffer: the call keeps it for a re-send
    if (!send_(std::move(payload)))
      return call.done(
          failure(Status::overloaded, "the queue from this client to sage-busd is full"));
    call.sent = true;
    node.key() = fresh;
    deadlines_.emplace(call.deadline, fresh);
    calls_.insert(std::move(node));
  }

  void on_reply_() {
    if (auto it = calls_.find(in_.id()); it != calls_.end()) {
      Reply reply{from_wire(in_.status()), in_.message(), {}};
      if (!frames_.empty()) reply.payload = to_string(frames_.front());
      finish_(it, std::move(reply));
      return;
    }
    if (auto it = registrations_.find(in_.id()); it != registrations_.end()) {
      auto answer = std::move(it->second);
      registrations_.erase(it);
      auto service = services_.find(answer.service);
      if (service == services_.end()) return;
      if (answer.unregister)
        service->second.core->on_unregistered();
      else
        service->second.core->on_registered(from_wire(in_.status()), in_.message());
    }
    // Otherwise: the answer to a call that already ended (its deadline passed). Dropped.
  }

  void finish_(std::unordered_map<std::uint64_t, Call>::iterator it, Reply reply) {
    auto done = std::move(it->second.done);
    calls_.erase(it);
    done(std::move(reply));
  }

  // Fails every sent call whose id is below `below` (0: all), except `except`.
  void fail_sent_(std::uint64_t below, std::optional<std::uint64_t> except,
                  const std::string& why) {
    for (auto it = calls_.begin(); it != calls_.end();) {
      auto next = std::next(it);
      if (it->second.sent && (below == 0 || it->first < below) && it->first != except)
        finish_(it, failure(Status::unavailable, why));
      it = next;
    }
  }

  // Fails the unsent calls that did not ask to wait for the connection.
  void fail_unsent_impatient_() {
    for (auto it = calls_.begin(); it != calls_.end();) {
      auto next = std::next(it);
      if (!it->second.sent && !it->second.spec.options.wait_for_ready)
        finish_(it, failure(Status::unavailable, not_connected_text_()));
      it = next;
    }
  }

  std::string not_connected_text_() const {
    return "not connected to sage-busd at " + endpoint_ + " (" + last_failure_ +
           "); the client keeps retrying in the background; set "
           "CallOptions::wait_for_ready to wait for it";
  }

  Reply deadline_failure_(const Call& call) const {
    const auto timeout = call.spec.options.timeout.count();
    std::string text = "call to " + call.spec.service + "." + call.spec.method +
                       " got no reply within " + std::to_string(timeout) + " ms";
    if (!call.sent) text += " (never sent: not connected to sage-busd at " + endpoint_ + ")";
    return failure(Status::deadline_exceeded, std::move(text));
  }

  // --- serving -------------------------------------------------------------------------

  void handle_(AddService& c) {
    const auto name = c.core->name();
    services_[name] = ServiceEntry{std::move(c.core), true};
    if (link_ == Link::ready) send_register_(*services_[name].core);
  }

  void handle_(Unregister& c) {
    auto it = services_.find(c.name);
    if (it == services_.end()) return;
    it->second.registered = false;
    if (link_ != Link::ready) return it->second.core->on_unregistered();
    out_.Clear();
    out_.set_kind(wire::UNREGISTER);
    out_.set_id(++next_id_);
    out_.set_service(c.name);
    registrations_[out_.id()] = RegistrationAnswer{c.name, true};
    if (!send_()) it->second.core->on_unregistered();
  }

  void handle_(RemoveService& c) { services_.erase(c.name); }

  void handle_(SendReply& c) {
    out_.Clear();
    out_.set_kind(wire::REPLY);
    out_.set_id(c.id);
    out_.set_status(static_cast<wire::Status>(c.status));
    if (!c.message.empty()) out_.set_message(std::move(c.message));
    (void)send_(adopt(std::move(c.payload)));  // a reply the queue refuses ends at the deadline
  }

  void send_register_(const ServiceCore& core) {
    out_.Clear();
    out_.set_kind(wire::REGISTER);
    out_.set_id(++next_id_);
    out_.set_service(core.name());
    auto& r = *out_.mutable_registration();
    for (auto& m : core.methods())
      r.add_methods(m);
    r.set_version(core.options().version);
    r.set_max_inflight(static_cast<std::uint32_t>(core.options().max_inflight));
    r.set_strategy(static_cast<wire::Strategy>(core.options().strategy));
    registrations_[out_.id()] = RegistrationAnswer{core.name(), false};
    (void)send_();
  }

  void on_request_() {
    auto it = services_.find(in_.service());
    if (it == services_.end()) {
      out_.Clear();
      out_.set_kind(wire::REPLY);
      out_.set_id(in_.id());
      out_.set_status(wire::UNAVAILABLE);
      out_.set_message("service " + in_.service() + " is no longer served on this connection");
      (void)send_();
      return;
    }
    Job job{in_.id(),
            in_.method(),
            {in_.headers().begin(), in_.headers().end()},
            {},
            now_ + milliseconds(in_.timeout_ms())};
    if (!frames_.empty()) job.payload = to_string(frames_.front());
    it->second.core->submit(std::move(job));
  }

  // --- timers --------------------------------------------------------------------------

  milliseconds next_timeout_() const {
    auto next = now_ + milliseconds(1000);
    if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
    if (link_ == Link::ready) {
      next = std::min(next, next_heartbeat_);
      next = std::min(next, last_heard_ + heartbeat_ * liveness_);
    } else if (tcp_up_) {
      next = std::min(next, hello_sent_at_ + kHelloRetry);
    }
    return std::max(std::chrono::ceil<milliseconds>(next - Clock::now()), milliseconds(0));
  }

  void run_timers_() {
    while (!deadlines_.empty() && deadlines_.top().first <= now_) {
      const auto [when, id] = deadlines_.top();
      deadlines_.pop();
      auto it = calls_.find(id);
      if (it == calls_.end()) continue;  // ended already, or re-sent under another id
      if (it->second.sent && now_ < it->second.deadline + kLocalGrace) {
        // The broker answers at the deadline; give its answer a moment to arrive.
        deadlines_.emplace(it->second.deadline + kLocalGrace, id);
        continue;
      }
      finish_(it, deadline_failure_(it->second));
    }
    if (link_ == Link::ready) {
      if (now_ - last_heard_ > heartbeat_ * liveness_) {
        lose_link_("no word from sage-busd at " + endpoint_ + " for " +
                   std::to_string((heartbeat_ * liveness_).count()) + " ms");
      } else if (now_ >= next_heartbeat_) {
        out_.Clear();
        out_.set_kind(wire::HEARTBEAT);
        out_.set_id(++next_id_);
        (void)send_();
        next_heartbeat_ = now_ + heartbeat_;
      }
    } else if (tcp_up_ && now_ - hello_sent_at_ >= kHelloRetry) {
      send_hello_();
    }
  }

  // --- output --------------------------------------------------------------------------

  void send_hello_() {
    out_.Clear();
    out_.set_kind(wire::HELLO);
    out_.set_id(++next_id_);
    *out_.mutable_hello() = hello_;
    (void)send_();
    hello_sent_at_ = now_;
  }

  // Sends out_ with an optional payload frame. False when the queue to the broker is
  // full (ZeroMQ's high-water mark): the message was not sent.
  bool send_(std::optional<zmq::message_t> payload = std::nullopt) {
    auto header = wire::encode(out_);
    const auto more = payload ? zmq::send_flags::sndmore : zmq::send_flags::none;
    if (!socket_.send(header, more | zmq::send_flags::dontwait)) return false;
    if (payload) (void)socket_.send(*payload, zmq::send_flags::dontwait);
    return true;
  }

  void set_ready_(bool ready) {
    {
      std::lock_guard lock(owner_.ready_mutex_);
      owner_.ready_.store(ready, std::memory_order_release);
    }
    owner_.ready_cv_.notify_all();
  }

  void shut_down_() {
    for (auto it = calls_.begin(); it != calls_.end();) {
      auto next = std::next(it);
      finish_(it, failure(Status::cancelled, "the client was closed before the call ended"));
      it = next;
    }
    for (auto& [name, entry] : services_)
      entry.core->on_unregistered();
    if (link_ == Link::ready) {
      out_.Clear();
      out_.set_kind(wire::GOODBYE);
      out_.set_message("client closed");
      socket_.set(zmq::sockopt::linger, 100);  // let the GOODBYE out
      (void)send_();
    }
    set_ready_(false);
    zmq_socket_monitor(socket_.handle(), nullptr, 0);
  }

  Connection& owner_;
  const std::string endpoint_;
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  zmq::socket_t monitor_;
  wire::Hello hello_;

  Clock::time_point now_ = Clock::now();
  Link link_ = Link::connecting;
  bool tcp_up_ = false;
  std::string last_failure_ = "connecting";
  std::string session_;
  milliseconds heartbeat_{kDefaultHeartbeatMs};
  std::uint32_t liveness_ = kDefaultLiveness;
  std::uint64_t max_payload_ = kDefaultMaxPayload;
  Clock::time_point last_heard_ = now_;
  Clock::time_point next_heartbeat_ = now_;
  Clock::time_point hello_sent_at_ = now_ - kHelloRetry;

  // Every message this side starts takes a fresh id, so ids rise in sending order.
  std::uint64_t next_id_ = 0;
  std::unordered_map<std::uint64_t, Call> calls_;
  using Deadline = std::pair<Clock::time_point, std::uint64_t>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  std::map<std::string, ServiceEntry> services_;
  std::unordered_map<std::uint64_t, RegistrationAnswer> registrations_;

  wire::Header in_;
  wire::Header out_;
  std::vector<zmq::message_t> frames_;  // payload frames of the message being handled
};

// ---------------------------------------------------------------------------------------
// Connection

Connection::Connection(ClientOptions options) : options_(std::move(options)) {
  if (options_.name.empty()) options_.name = default_name();
  if (auto error = wire::check_name("client name", options_.name))
    throw Error(Status::invalid_argument, *error);
  if (options_.reconnect_min.count() <= 0 || options_.reconnect_max < options_.reconnect_min)
    throw Error(Status::invalid_argument,
                "reconnect_min must be positive and reconnect_max at least reconnect_min");
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0)
    throw Error(Status::internal, std::string("eventfd failed: ") + std::strerror(errno));
  // The engine (and so the socket) is made on the I/O thread; a bad endpoint surfaces
  // here through the promise.
  std::promise<void> started;
  auto started_future = started.get_future();
  io_thread_ = std::thread([this, &started] {
    std::unique_ptr<Engine> engine;
    try {
      engine = std::make_unique<Engine>(*this);
      started.set_value();
    } catch (const zmq::error_t& e) {
      started.set_exception(std::make_exception_ptr(
          Error(Status::invalid_argument,
                "cannot use endpoint '" + options_.endpoint + "': " + e.what())));
      return;
    }
    engine->run();
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
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  io_thread_.join();
  ::close(wake_fd_);
}

void Connection::post_(Command command) {
  bool was_empty = false;
  {
    std::lock_guard lock(commands_mutex_);
    was_empty = commands_.empty();
    commands_.push_back(std::move(command));
  }
  if (was_empty) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

void Connection::start_call(CallSpec spec, Done done) {
  post_(StartCall{std::move(spec), std::move(done)});
}

void Connection::add_service(std::shared_ptr<ServiceCore> core) {
  post_(AddService{std::move(core)});
}

void Connection::unregister_service(const std::string& name) {
  post_(Unregister{name});
}

void Connection::remove_service(const std::string& name) {
  post_(RemoveService{name});
}

void Connection::send_reply(std::uint64_t id, Status status, std::string message,
                            std::string payload) {
  post_(SendReply{id, status, std::move(message), std::move(payload)});
}

bool Connection::wait_connected(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(ready_mutex_);
  return ready_cv_.wait_for(lock, timeout, [this] { return ready_.load(); });
}

}  // namespace sagebus::detail
