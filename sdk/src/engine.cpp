#include "engine.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <system_error>
#include <unordered_map>
#include <utility>

#include <zmq.hpp>

#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/header_writer.hpp"
#include "sagebus/wire/host_clock.hpp"
#include "sagebus/wire/socket.hpp"
#include "service_core.hpp"
#include "subscription_core.hpp"

namespace sagebus::detail {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

// A sent request other than a call, whose outcome the broker decides, ends this long after
// its deadline if the broker never answers. A call ends at its deadline, answered or not.
constexpr milliseconds kLocalGrace{50};
// While connected but not welcomed, HELLO is repeated this often.
constexpr milliseconds kHelloRetry{1000};
// About the longest a reply waits for others to go with it (flush_replies_): a handler on
// the I/O thread that takes long must not hold up the replies of the ones before it.
constexpr std::chrono::microseconds kMaxReplyWait{100};
// Until the first WELCOME says otherwise.
constexpr std::uint32_t kDefaultHeartbeatMs = 1000;
constexpr std::uint32_t kDefaultLiveness = 3;
// Messages read from the socket before the loop looks at its timers again.
constexpr int kReceiveBatch = 256;
// Stale entries of deadlines_ tolerated beyond the number of open requests.
constexpr std::size_t kDeadlineSlack = 1024;
// Every id this side starts has the top bit set; the broker numbers its dispatches from 1
// and never gets there. A HELLO_REQUIRED names the message it refused by id, and that
// message may be a REPLY of ours, which carries the broker's dispatch id: the bit tells
// the two apart. (Were they to share a range, a refused reply could be taken for a
// refused call, and that call sent again after it had run.)
constexpr std::uint64_t kOwnIdBit = std::uint64_t{1} << 63;

Status from_wire(wire::Status status) {
  return wire::Status_IsValid(status) ? static_cast<Status>(status) : Status::internal;
}

// Our first id: the top bit, then a random session nonce above a 32-bit counter.
std::uint64_t first_own_id() {
  std::random_device device;
  return kOwnIdBit | (std::uint64_t{device() & 0x7fffffffu} << 32);
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

// The ZeroMQ context every Client of this process shares, made with the first and ended
// with the last. One ZeroMQ I/O thread then serves all of them, as with raw sockets of one
// context: under load it moves several clients' messages per wake-up, where a context per
// client woke a thread of its own for each message.
std::shared_ptr<zmq::context_t> shared_context() {
  static std::mutex mutex;
  static std::weak_ptr<zmq::context_t> current;
  std::lock_guard lock(mutex);
  auto context = current.lock();
  if (!context) {
    context = std::make_shared<zmq::context_t>(1);
    current = context;
  }
  return context;
}

std::string to_string(const zmq::message_t& frame) {
  return std::string(static_cast<const char*>(frame.data()), frame.size());
}

std::string describe(const RequestSpec& spec) {
  switch (spec.kind) {
    case wire::REQUEST:
      return "call to " + spec.service + "." + spec.method;
    case wire::PUBLISH:
      return "publish on " + spec.target;
    case wire::SEND:
      return "send to " + spec.target;
    default:
      return "operation on queue " + spec.target;
  }
}

}  // namespace

class Engine {
 public:
  explicit Engine(Connection& owner)
      : owner_(owner),
        endpoint_(owner.options_.endpoint),
        socket_(*context_, zmq::socket_type::dealer),
        monitor_(*context_, zmq::socket_type::pair) {
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
    hello_.set_takeover(o.takeover);
    hello_.set_event_batches(true);  // on_event_batch_
    hello_.set_batches(true);        // on_batch_
    hello_.set_host(wire::host_id());
    wire::HeaderWriter batch_header;
    batch_header_ = batch_header.start(wire::BATCH).bytes();
    owner_.engine_ = this;
  }

  // The I/O thread's loop: turns until the connection stops, but naps while callers
  // drive (see call()), then ends every request and says GOODBYE.
  void run() {
    std::unique_lock lock(mutex_);
    while (!owner_.stopping_.load(std::memory_order_acquire)) {
      if (callers_drive_.load(std::memory_order_relaxed)) {
        lock.unlock();
        const bool asked = nap_();
        lock.lock();
        // A caller may have begun to wait on the sockets meanwhile.
        if (callers_drive_ && (polling_ == Driver::caller || (!asked && caller_was_here_())))
          continue;
        callers_drive_ = false;
      }
      const auto sync_ends = sync_ends_;
      turn_(lock, Driver::io);
      run_callbacks_(lock);
      // The caller just handed its outcome will likely call again at once: let it wait on
      // the socket itself then, instead of through this thread.
      if (sync_ends_ != sync_ends && callers_may_drive_() && requests_.empty())
        callers_drive_ = true;
    }
    // The client is being destroyed, and another thread may be in a call on it: callers
    // in drive_() leave it first (they see stopping_, and the destructor's wake-up ends
    // their ::poll()); shut_down_() then ends their requests CANCELLED.
    left_cv_.wait(lock, [this] { return driving_ == 0; });
    // Callbacks still to run, and those of the requests shut_down_() ends, go to the
    // callback thread, in order.
    owner_.inline_closed_ = true;
    for (auto& posted : owner_.inline_callbacks_)
      owner_.callbacks_.post(std::move(posted.callback), std::move(posted.reply));
    owner_.inline_callbacks_.clear();
    shut_down_();
    stopped_ = true;
  }

  // A synchronous request from a user thread (Connection::call). It is sent from this
  // thread. If no other thread waits on the sockets, this one does (leader/follower) until
  // the request ends, so that a call crosses no thread of ours: as with a raw DEALER, the
  // caller sleeps in ::poll() and wakes to the reply. Else the thread that waits there
  // ends it, as for any request.
  Outcome call(RequestSpec&& spec) {
    struct Waiter {
      std::mutex mutex;
      std::condition_variable cv;
      std::optional<Outcome> outcome;
    } waiter;
    Connection::Start start{std::move(spec), Done([&waiter](Outcome o) {
                              std::lock_guard lock(waiter.mutex);
                              waiter.outcome.emplace(std::move(o));
                              // Under the lock: the waiter may not leave before it returns.
                              waiter.cv.notify_one();
                            }),
                            true};
    drive_(start, [&waiter] {
      std::lock_guard lock(waiter.mutex);
      return waiter.outcome.has_value();
    });
    std::unique_lock lock(waiter.mutex);
    waiter.cv.wait(lock, [&waiter] { return waiter.outcome.has_value(); });
    return std::move(*waiter.outcome);
  }

  // An asynchronous request from a user thread (Connection::start): started and sent from
  // this thread when no other thread runs the engine at the moment; false, and nothing
  // done, when one does (the request is then posted to it). noexcept as drive_().
  bool try_start(Connection::Start& start) noexcept {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock() || stopped_) return false;
    start_here_(start);
    follow_(false);
    return true;
  }

  // Connection::start: true on the I/O thread while it runs callbacks (run_callbacks_),
  // without mutex_. Read there only.
  bool in_callbacks() const noexcept { return in_callbacks_; }

  // Connection::post_: posted work must not wait for the nap's end when nobody waits on
  // the sockets (a caller that does sees it through the wake fd).
  void wake_if_napping() {
    if (!callers_drive_.load(std::memory_order_relaxed) ||
        caller_polling_.load(std::memory_order_relaxed))
      return;
    ask_to_take_over_();
  }

 private:
  // Which thread waits in ::poll() on the sockets (mutex_ released meanwhile).
  enum class Driver { none, io, caller };

  enum class Link { connecting, ready, failing };

  struct Request {
    RequestSpec spec;
    Done done;
    Clock::time_point deadline;
    bool sent = false;
    bool sync = false;  // a caller waits for it in call()
    // Sent with wait_for_ready just before the link was lost (lose_link_): it reached the
    // broker, or it waits in the socket for the next connection.
    bool in_doubt = false;
  };

  struct ServiceEntry {
    std::shared_ptr<ServiceCore> core;
    bool registered = true;  // registered again after every new session while true
  };

  struct RegistrationAnswer {
    std::string service;
    bool unregister;
  };

  // call()'s part in the engine: starts `start` and, while no other thread waits on the
  // sockets, turns the loop until `ended`. noexcept: what could throw here (libzmq, poll(),
  // allocation) would end the I/O thread, and so the program, just the same; and a
  // request left behind would call back into a caller's stack that is gone.
  template <class Ended>
  void drive_(Connection::Start& start, const Ended& ended) noexcept {
    std::unique_lock lock(mutex_);
    if (stopped_)
      return start.done(
          failure(Status::cancelled, "the client was closed before the request was sent"));
    ++driving_;
    start_here_(start);
    bool drove = false;
    while (!ended() && polling_ == Driver::none && callers_may_drive_() &&
           !owner_.stopping_.load(std::memory_order_acquire)) {
      drove = callers_drive_ = true;
      turn_(lock, Driver::caller);
    }
    if (!drove) {
      follow_(ended());
    } else {
      caller_left_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
      // What is still open (this request too, if it stopped driving before its end) must
      // not wait for this thread's next call.
      if (!callers_may_drive_() || !requests_.empty() || wants_out_()) wake_io_thread_();
    }
    if (--driving_ == 0 && owner_.stopping_.load(std::memory_order_acquire)) left_cv_.notify_all();
  }

  // --- the loop ------------------------------------------------------------------------

  // One turn: waits without mutex_ for the sockets, the wake fd or the next timer, then
  // acts on all that is due. `lock` holds mutex_ on entry and on return.
  //
  // One ::poll() on the sockets' fds (sagebus/wire/socket.hpp, "Waiting"): the monitor is
  // read until it has nothing whenever its fd says so (and once at the start), the DEALER
  // whenever its fd says so or ZMQ_EVENTS, asked just before waiting, does. A thread that
  // uses the socket while another waits on its fd wakes that one if the socket became
  // readable meanwhile (follow_): the fd signals only changes that nobody has seen yet.
  void turn_(std::unique_lock<std::mutex>& lock, Driver driver) {
    const int events = quiet_ && !wants_out_() ? 0 : wire::events(socket_);
    const bool can_read = (events & ZMQ_POLLIN) != 0;
    quiet_ = !can_read;
    const bool can_act = can_read || monitor_due_ || !owner_.inline_callbacks_.empty() ||
                         (wants_out_() && (events & ZMQ_POLLOUT) != 0);
    pollfd fds[] = {
        {socket_fd_, POLLIN, 0}, {monitor_fd_, POLLIN, 0}, {owner_.wake_fd_, POLLIN, 0}};
    // The timer it waits for, exactly (the timeout is rounded up to whole ms).
    wakes_for_ = can_act ? Clock::now() : next_timer_();
    const auto timeout =
        std::max(std::chrono::ceil<milliseconds>(wakes_for_ - Clock::now()), milliseconds(0));
    polling_ = driver;
    if (driver == Driver::caller) caller_polling_.store(true, std::memory_order_relaxed);
    lock.unlock();
    const int polled = ::poll(fds, 3, static_cast<int>(timeout.count()));
    const int poll_errno = errno;
    lock.lock();
    polling_ = Driver::none;
    caller_polling_.store(false, std::memory_order_relaxed);
    if (polled < 0 && poll_errno != EINTR)
      throw std::system_error(poll_errno, std::generic_category(), "poll");
    now_ = Clock::now();
    check_stall_();
    if (monitor_due_ || (fds[1].revents & POLLIN) != 0) drain_monitor_();
    monitor_due_ = false;
    if ((fds[2].revents & POLLIN) != 0) drain_commands_();
    // Also when only woken: the waker may have seen a message that the fd will not signal.
    if (can_read || (fds[0].revents & POLLIN) != 0 || (fds[2].revents & POLLIN) != 0)
      drain_socket_(driver);
    flush_replies_();  // what the commands and messages of this turn answered
    // Timers first: a due heartbeat goes out ahead of queued publishes, or a publisher
    // that keeps the socket full would never be heard and lose its own lease.
    run_timers_();
    flush_outbox_();
    flush_waiting_requests_();
    last_ran_ = Clock::now();
  }

  // Something waits for room in the socket: publishes in the outbox, a refused heartbeat.
  bool wants_out_() const {
    return !outbox_.empty() || heartbeat_due_ || !waiting_for_room_.empty();
  }

  // Callers may wait on the sockets for their own calls only where nothing else needs
  // this thread: handlers (ServiceOptions::on_io_thread) and callbacks
  // (ClientOptions::inline_callbacks) run on it, and events are not to wait for a caller's
  // next call.
  bool callers_may_drive_() const {
    return services_.empty() && subscription_cores_.empty() && owner_.inline_callbacks_.empty();
  }

  // ClientOptions::inline_callbacks: the I/O thread runs the callbacks of the requests
  // that ended, in order, without mutex_, so that a callback's call_async starts and sends
  // its request at once, from this thread (Connection::start). `lock` holds mutex_ on
  // entry and on return.
  void run_callbacks_(std::unique_lock<std::mutex>& lock) {
    while (!owner_.inline_callbacks_.empty()) {
      running_.swap(owner_.inline_callbacks_);
      in_callbacks_ = true;
      lock.unlock();
      for (auto& posted : running_)
        posted.callback(std::move(posted.reply));
      running_.clear();  // keeps its storage, which the next swap hands back
      lock.lock();
      in_callbacks_ = false;
    }
  }

  // The I/O thread while callers drive, without mutex_ (so that it never holds up a
  // caller): returns when asked to take the sockets back (wake_io_thread_: a request, an
  // outbox or callbacks that need it), or to stop, or once no caller has waited on them
  // for a nap. Naps start at kNap and double, up to kLongestNap, while callers keep
  // driving: a client whose callers call back to back wakes this thread ~60 times a
  // second, not 1,000 (each wake-up a context switch; docs/benchmarks.md, finding 21).
  // What is then left to this thread alone (heartbeats, a GOODBYE or a lost connection
  // while no call is open) waits at most two naps. True when asked.
  bool nap_() {
    std::unique_lock nap(nap_mutex_);
    for (milliseconds length = kNap;; length = std::min(2 * length, kLongestNap)) {
      if (nap_cv_.wait_for(nap, length, [this] { return take_over_; })) break;
      if (owner_.stopping_.load(std::memory_order_acquire) ||
          !callers_drive_.load(std::memory_order_relaxed))
        break;
      if (!caller_polling_.load(std::memory_order_relaxed) && !caller_was_here_(length)) break;
    }
    return std::exchange(take_over_, false);
  }

  // A caller stopped waiting on the sockets less than `within` ago.
  bool caller_was_here_(milliseconds within = kNap) const {
    const Clock::duration since(Clock::now().time_since_epoch().count() -
                                caller_left_.load(std::memory_order_relaxed));
    return since < within;
  }

  // Under mutex_: the I/O thread is to wait on the sockets again, now.
  void wake_io_thread_() {
    callers_drive_ = false;
    ask_to_take_over_();
  }

  void ask_to_take_over_() {
    {
      std::lock_guard nap(nap_mutex_);
      take_over_ = true;
    }
    nap_cv_.notify_one();
  }

  // A caller that used the socket without waiting on it, because another thread waits
  // there or nobody does (the I/O thread naps): makes sure that thread sees what it must.
  // `ended`: the caller's request has its outcome already (refused at once).
  void follow_(bool ended) {
    const bool callbacks = !owner_.inline_callbacks_.empty();  // for the I/O thread to run
    if (polling_ == Driver::none) {
      // Someone must wait for the outcome, or run the callbacks; the I/O thread will, if it
      // is running callbacks now and is not to nap after them.
      const bool io_turns_next = in_callbacks_ && !callers_drive_.load(std::memory_order_relaxed);
      if ((!ended || callbacks) && !io_turns_next) wake_io_thread_();
      return;
    }
    // This thread's use of the socket may have taken the signal that the waiting thread's
    // fd was to give (a message to read, room to write what it holds back); and that
    // thread's timer does not know what this request made sooner (its deadline; the next
    // heartbeat and the broker's lease, when it took the short lease: take_short_lease_).
    const int events = wire::events(socket_);
    const bool readable = (events & ZMQ_POLLIN) != 0;
    const bool writable = wants_out_() && (events & ZMQ_POLLOUT) != 0;
    const bool sooner = next_timer_() < wakes_for_;
    if (readable || writable || sooner || callbacks) owner_.wake_();
  }

  // --- input ---------------------------------------------------------------------------

  // Starts `start` on a user thread (call(), try_start()), after handling what was posted
  // before, so that it goes out after what the same thread posted earlier.
  void start_here_(Connection::Start& start) {
    now_ = Clock::now();
    bool any = false;
    {
      std::lock_guard lock(owner_.commands_mutex_);
      any = !owner_.commands_.empty();
    }
    if (any) drain_commands_();
    handle_(start);
  }

  void drain_commands_() {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto n = ::read(owner_.wake_fd_, &count, sizeof count);
    {
      std::lock_guard lock(owner_.commands_mutex_);
      taken_.swap(owner_.commands_);
    }
    for (auto& command : taken_)
      std::visit([this](auto& c) { handle_(c); }, command);
    taken_.clear();  // keeps its storage, which the next swap hands back to post_()
  }

  void drain_monitor_() {
    for (;;) {
      zmq::message_t event;
      if (!wire::receive(monitor_, event, zmq::recv_flags::dontwait)) return;
      zmq::message_t address;
      (void)wire::receive(monitor_, address, zmq::recv_flags::dontwait);
      if (event.size() < sizeof(std::uint16_t)) continue;
      std::uint16_t id = 0;
      std::memcpy(&id, event.data(), sizeof id);
      on_link_event_(id);
    }
  }

  // Reads what the socket has, up to kReceiveBatch messages; a caller (Driver::caller)
  // stops after a message that ended a call() (its own, likely), sparing the read that
  // would find nothing: the next turn asks events() first.
  void drain_socket_(Driver driver) {
    const auto sync_ends = sync_ends_;
    for (int i = 0; i < kReceiveBatch; ++i) {
      if (driver == Driver::caller && sync_ends_ != sync_ends) break;
      zmq::message_t header_frame;
      if (!wire::receive(socket_, header_frame, zmq::recv_flags::dontwait)) {
        quiet_ = true;
        break;
      }
      quiet_ = false;
      frames_.clear();
      for (bool more = header_frame.more(); more; more = frames_.back().more()) {
        frames_.emplace_back();
        (void)wire::receive(socket_, frames_.back(), zmq::recv_flags::dontwait);
      }
      if (wire::decode(header_frame, in_) != wire::DecodeResult::ok) continue;  // not ours to fix
      last_heard_ = now_;
      watch_from_ = now_;
      on_message_();
    }
    for (const auto& core : to_flush_)
      core->flush();  // hands on what on_event_() took, once per batch
    to_flush_.clear();
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
        return on_goodbye_();
      case wire::REPLY:
        return on_reply_(frames_.empty() ? std::string_view() : frames_.front().to_string_view());
      case wire::BATCH:
        return on_batch_();
      case wire::REQUEST:
        return on_request_();
      case wire::EVENT:
        return on_event_();
      case wire::EVENT_BATCH:
        return on_event_batch_();
      case wire::DELIVER:
        return on_deliver_();
      default:
        return;  // kinds a broker does not send; nothing to answer
    }
  }

  // --- the link ------------------------------------------------------------------------

  void on_link_event_(std::uint16_t event) {
    switch (event) {
      case ZMQ_EVENT_CONNECTED:
        tcp_up_ = true;
        if (link_ != Link::ready && !replaced_) {
          set_link_(Link::connecting);
          send_hello_();
        }
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        if (link_ == Link::connecting) {
          last_failure_ = "cannot connect to sage-busd at " + endpoint_;
          failure_status_ = Status::unavailable;
          set_link_(Link::failing);
          fail_unsent_impatient_();
        }
        break;
      case ZMQ_EVENT_DISCONNECTED:
        tcp_up_ = false;
        // The broker drops a connection's state when it closes (or it is gone itself).
        lose_link_("connection to sage-busd at " + endpoint_ + " closed", true);
        break;
      default:
        break;
    }
  }

  // The broker closes this connection: it is shutting down (we will connect again), or a
  // new connection took our name (PERMISSION_DENIED: the name is no longer ours, so we
  // never say HELLO again).
  // A broker that shuts down answers every request it read before its GOODBYE: those
  // still open were never read, and are sent again after the next WELCOME if they wait
  // for ready (lose_link_).
  void on_goodbye_() {
    if (in_.status() == wire::PERMISSION_DENIED) replaced_ = true;
    lose_link_("sage-busd at " + endpoint_ + " closed this connection: " + in_.message(),
               !replaced_, !replaced_);
  }

  void on_welcome_() {
    if (discard_before_welcome_ != 0) {
      // Only the answer to a HELLO sent after the stall ends it (see check_stall_).
      if (in_.id() < discard_before_welcome_) return;
      discard_before_welcome_ = 0;
    }
    const auto& w = in_.welcome();
    if (w.broker_session() != session_) {
      if (!session_.empty()) {
        fail_sent_("sage-busd at " + endpoint_ + " restarted while the request was in flight");
        fresh_session_ = true;
      }
      ++session_epoch_;
    }
    session_ = w.broker_session();
    heartbeat_ = milliseconds(w.heartbeat_ms() ? w.heartbeat_ms() : kDefaultHeartbeatMs);
    liveness_ = w.liveness() ? w.liveness() : kDefaultLiveness;
    idle_heartbeat_ = milliseconds(w.idle_heartbeat_ms());  // 0 from a broker without it
    max_payload_ = w.max_payload() ? w.max_payload() : kDefaultMaxPayload;
    publish_batches_ = w.publish_batches();
    batches_ = w.batches();
    same_host_ = wire::same_host(w.host());
    owner_.max_payload_.store(max_payload_, std::memory_order_relaxed);
    hello_.set_takeover(false);  // a takeover is for the first HELLO only: never fight back
    set_link_(Link::ready);
    next_heartbeat_ = now_ + heartbeat_;
    if (fresh_session_) {
      // The broker knows nothing of this connection yet: tell it what we serve and hear.
      fresh_session_ = false;
      for (auto& [name, entry] : services_)
        if (entry.registered) send_register_(*entry.core);
      subscriptions_.clear();
      for (auto& core : subscription_cores_)
        send_subscribe_(core);
    }
    end_in_doubt_();
    // In the order they were made (ids rise so), not the table's.
    waiting_for_room_.clear();
    std::vector<std::uint64_t> unsent;
    for (auto& [id, request] : requests_)
      if (!request.sent) unsent.push_back(id);
    std::sort(unsent.begin(), unsent.end());
    for (auto id : unsent)
      send_request_(id);
  }

  // The broker does not know this connection (it forgot it, or it is a new broker): it did
  // not act on message `id`, and has forgotten every request it was given before. Say
  // HELLO again. The requests sent before `id` may have run and will never be answered:
  // they end UNAVAILABLE (but a QUEUE_GET, which is asked again: see requeue_or_fail_).
  // Those sent from `id` on were refused like `id` (the broker cannot know us again before
  // our next HELLO), so they never ran: they are sent again after WELCOME — also those
  // whose own HELLO_REQUIRED the broker's rate limit dropped. When `id` is not ours (it
  // named a REPLY of ours) nothing says where the forgetting began, so every request sent
  // ends UNAVAILABLE.
  void on_hello_required_(std::uint64_t id) {
    // A SUBSCRIBE sent again keeps its first id (the broker's key for the subscription):
    // its place in the sending order is the fresh id it took when it was sent.
    if (auto it = subscriptions_.find(id); it != subscriptions_.end()) id = it->second->sent_as;
    restart_session_(id, true,
                     "sage-busd at " + endpoint_ +
                         " forgot this connection (its lease expired, or it restarted) "
                         "while the request was in flight; the request may or may not "
                         "have taken effect");
  }

  // This thread did not run for longer than heartbeat x liveness, and so the broker heard
  // nothing from us for that long (SIGSTOP, a machine that stalled): it has (or may have)
  // dropped this connection at its lease expiry, and answered on our behalf what it had
  // sent us: a DELIVER's sender was told UNDELIVERABLE, a REQUEST's caller UNAVAILABLE.
  // Those messages may still wait in the socket; they must not be acted on. Say HELLO
  // again, as after HELLO_REQUIRED, and drop every DELIVER and REQUEST read before the
  // WELCOME that answers it. (A broker that did not drop us ends those at their deadlines.)
  void check_stall_() {
    if (link_ != Link::ready) return;
    const auto lease = lease_();
    // Both: the loop itself stalled (not a socket full of publishes), for longer than the lease.
    if (now_ - last_ran_ <= heartbeat_ || now_ - last_sent_ <= lease) return;
    discard_before_welcome_ = next_id_ + 1;  // any HELLO sent from now on has an id >= this
    const auto silent = duration_cast<milliseconds>(now_ - last_sent_).count();
    restart_session_(0, false,
                     "this client did not run for " + std::to_string(silent) +
                         " ms, longer than its lease of " + std::to_string(lease.count()) +
                         " ms, so sage-busd at " + endpoint_ +
                         " may have dropped the connection while the request was in flight; "
                         "the request may or may not have taken effect");
  }

  // A new session is needed (see on_hello_required_ and check_stall_). `id` is the first
  // message of ours the broker refused, or 0 if that is not known. `forgotten`: the broker
  // certainly holds nothing of ours any more.
  void restart_session_(std::uint64_t id, bool forgotten, const std::string& why) {
    set_link_(Link::connecting);
    fresh_session_ = true;
    const bool ours = (id & kOwnIdBit) != 0;
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto next = std::next(it);
      if (it->second.sent) {
        if (ours && it->first >= id)
          it->second.sent = false;
        else
          requeue_or_fail_(it, forgotten, why);
      }
      it = next;
    }
    forget_registration_answers_();
    if (now_ - hello_sent_at_ > milliseconds(100)) send_hello_();
  }

  // The broker is gone, refused us, or has forgotten this connection: requests it was
  // given cannot be answered any more. New ones fail fast until a WELCOME comes.
  // `forgotten`: the broker certainly holds nothing of ours any more (the connection closed).
  // `unread`: nor did it read any request it has not answered (its GOODBYE).
  void lose_link_(const std::string& why, bool forgotten = false, bool unread = false) {
    last_failure_ = why;
    failure_status_ = replaced_ ? Status::permission_denied : Status::unavailable;
    set_link_(Link::failing);
    fresh_session_ = true;
    const std::string text = why + "; the request may or may not have taken effect";
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto next = std::next(it);
      Request& request = it->second;
      // Never took effect: as if never sent (fail_unsent_impatient_). But for an ack, whose
      // tag a new broker may give another item; a get's ack goes with the connection.
      if (unread && request.sent && request.spec.kind != wire::QUEUE_ACK) {
        request.sent = false;
        request.in_doubt = false;
        request.spec.tag = 0;
        it = next;
        continue;
      }
      // A request that waits for ready may never have left this side: ZeroMQ keeps what
      // the old connection did not carry and hands it to the next, where the broker
      // refuses it with HELLO_REQUIRED (on_hello_required_ sends it again). What the old
      // connection did carry ends at the next WELCOME (end_in_doubt_).
      if (request.sent && request.spec.options.wait_for_ready &&
          request.spec.kind != wire::QUEUE_GET && !replaced_)
        request.in_doubt = true;
      else if (request.sent)
        requeue_or_fail_(it, forgotten, text);
      it = next;
    }
    fail_unsent_impatient_();
    forget_registration_answers_();
    if (tcp_up_ && !replaced_) send_hello_();
  }

  // At a WELCOME: the requests sent on a connection that was lost, and not refused since
  // by HELLO_REQUIRED, reached the broker before it lost that connection, and nobody will
  // answer them.
  void end_in_doubt_() {
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto next = std::next(it);
      if (it->second.sent && it->second.in_doubt)
        finish_(it, failure(lost_status_(it->second),
                            "the connection to sage-busd at " + endpoint_ +
                                " was lost after the request was sent; the request may or "
                                "may not have taken effect"));
      it = next;
    }
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

  void set_link_(Link link) {
    link_ = link;
    std::optional<Error> error;
    if (link == Link::failing) error.emplace(failure_status_, last_failure_);
    owner_.set_link_(link == Link::ready, std::move(error));
  }

  // --- requests ------------------------------------------------------------------------

  void handle_(Connection::Start& c) {
    const auto& o = c.spec.options;
    if (o.timeout.count() <= 0 ||
        o.timeout > milliseconds(std::numeric_limits<std::uint32_t>::max() / 2))
      return c.done(
          failure(Status::invalid_argument, "timeout must be between 1 ms and 2^31 ms, not " +
                                                std::to_string(o.timeout.count()) + " ms"));
    if (requests_.size() >= owner_.options_.max_pending)
      return c.done(failure(Status::overloaded,
                            "this client already has " + std::to_string(requests_.size()) +
                                " requests outstanding (ClientOptions::max_pending)"));
    if (link_ == Link::failing && !o.wait_for_ready)
      return c.done(failure(Status::unavailable, not_connected_text_()));
    const auto id = ++next_id_;
    const auto deadline = c.spec.asked + o.timeout + c.spec.hold;
    Request request{std::move(c.spec), std::move(c.done), deadline, false, c.sync};
    requests_.emplace(id, std::move(request));
    // Sent, it is timed under the id it is sent with (send_request_).
    if (link_ == Link::ready)
      send_request_(id);
    else
      deadlines_.emplace(deadline, id);
  }

  // Sends (or re-sends under a fresh id) request `id`, which is in requests_, unsent. When
  // the socket's queue is full, or requests wait for room before it, it waits for room
  // in order (flush_waiting_requests_), timed by its deadline; the client's own bound is
  // max_pending (handle_), not the socket's.
  void send_request_(std::uint64_t id) {
    flush_outbox_();  // unconfirmed publishes made before it go first
    if (!waiting_for_room_.empty() || !try_send_request_(id)) {
      deadlines_.emplace(requests_.at(id).deadline, id);
      waiting_for_room_.push_back(id);
    }
  }

  // Sends what waits for room in the socket's queue, in order, while it takes them.
  void flush_waiting_requests_() {
    if (link_ != Link::ready) return;
    while (!waiting_for_room_.empty()) {
      const auto id = waiting_for_room_.front();
      auto it = requests_.find(id);
      // Ended meanwhile (at its deadline), or sent already.
      if (it != requests_.end() && !it->second.sent && !try_send_request_(id)) return;
      waiting_for_room_.pop_front();
    }
  }

  // send_request_() now: false, and the request left as it was, when the socket's queue
  // is full.
  bool try_send_request_(std::uint64_t id) {
    auto node = requests_.extract(id);
    Request& request = node.mapped();
    if (request.deadline <= now_) {
      request.done(deadline_failure_(request));
      return true;
    }
    if (request.spec.payload.size() > max_payload_) {
      request.done(failure(Status::invalid_argument,
                           "payload of " + std::to_string(request.spec.payload.size()) +
                               " bytes exceeds the broker's limit of " +
                               std::to_string(max_payload_) + " bytes"));
      return true;
    }
    const auto fresh = ++next_id_;
    const auto& spec = request.spec;
    if (spec.kind == wire::QUEUE_GET) reads_queues_ = true;
    const auto& o = spec.options;
    // Rounded up: the broker does not end the request before its caller's deadline (which
    // ends a call here, answered or not). A broker on this host gets the deadline itself
    // (deadline_us), which the time in transit does not move.
    const auto left = std::chrono::ceil<milliseconds>(request.deadline - now_).count();
    const auto timeout_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(left, 1));
    // Fields in rising number (wire::HeaderWriter).
    using H = wire::Header;
    head_.start(spec.kind).varint(H::kIdFieldNumber, fresh);
    switch (spec.kind) {
      case wire::REQUEST:
        head_.string(H::kServiceFieldNumber, spec.service)
            .string(H::kMethodFieldNumber, spec.method)
            .varint(H::kTimeoutMsFieldNumber, timeout_ms)
            .varint(H::kIdempotentFieldNumber, o.idempotent)
            .varint(H::kWaitForReadyFieldNumber, o.wait_for_ready)
            .string(H::kRoutingKeyFieldNumber, o.routing_key)
            .map(H::kHeadersFieldNumber, o.headers);
        if (same_host_) head_.varint(H::kDeadlineUsFieldNumber, wire::to_deadline_us(request.deadline));
        break;
      case wire::PUBLISH:
        head_.varint(H::kTimeoutMsFieldNumber, timeout_ms)
            .string(H::kTopicFieldNumber, spec.target)
            .varint(H::kConfirmFieldNumber, true);
        break;
      case wire::SEND:
        head_.varint(H::kTimeoutMsFieldNumber, timeout_ms)
            .string(H::kPeerFieldNumber, spec.target)
            .varint(H::kHoldMsFieldNumber, static_cast<std::uint32_t>(spec.hold.count()));
        break;
      default:  // QUEUE_*
        head_.varint(H::kTimeoutMsFieldNumber, timeout_ms)
            .string(H::kQueueFieldNumber, spec.target)
            .varint(H::kTagFieldNumber, spec.tag);
        break;
    }
    const bool has_payload = spec.kind != wire::QUEUE_GET && spec.kind != wire::QUEUE_ACK &&
                             spec.kind != wire::QUEUE_SIZE;
    std::optional<zmq::message_t> payload;
    if (has_payload) {
      payload.emplace();
      payload->copy(request.spec.payload);  // shares the buffer: kept to re-send
    }
    if (!send_header_(head_.frame(), std::move(payload))) {
      requests_.insert(std::move(node));
      return false;
    }
    request.sent = true;
    request.in_doubt = false;
    node.key() = fresh;
    deadlines_.emplace(request.deadline, fresh);
    requests_.insert(std::move(node));
    // Entries of requests that ended stay until their time comes; keep them from
    // outnumbering the live ones (at 100,000 calls/s with 10 s deadlines, a million).
    if (deadlines_.size() > 2 * requests_.size() + kDeadlineSlack) prune_deadlines_();
    return true;
  }

  // One entry per request still open, at its deadline (run_timers_ adds the grace).
  void prune_deadlines_() {
    std::vector<Deadline> open;
    open.reserve(requests_.size() + kDeadlineSlack);
    for (const auto& [id, request] : requests_)
      open.emplace_back(request.deadline, id);
    deadlines_ = decltype(deadlines_)(std::greater<>(), std::move(open));
  }

  // The REPLY in in_, whose payload is `payload`.
  void on_reply_(std::string_view payload) {
    if (auto it = requests_.find(in_.id()); it != requests_.end()) {
      // A call's outcome is never later than its deadline: a reply read after it is
      // dropped, counted (but the broker's own DEADLINE_EXCEEDED, which is no reply of
      // the service), and the call ends DEADLINE_EXCEEDED now (run_timers_ would have
      // ended it, had this thread woken first).
      if (it->second.spec.kind == wire::REQUEST && Clock::now() > it->second.deadline) {
        if (in_.status() != wire::DEADLINE_EXCEEDED)
          owner_.late_replies_.fetch_add(1, std::memory_order_relaxed);
        finish_(it, deadline_failure_(it->second));
        return;
      }
      Outcome outcome{from_wire(in_.status()), in_.message(), std::string(payload), in_.count(),
                      in_.tag()};
      finish_(it, std::move(outcome));
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
      return;
    }
    if (auto it = subscriptions_.find(in_.id()); it != subscriptions_.end()) {
      it->second->on_subscribed(from_wire(in_.status()), in_.message());
      return;
    }
    if (in_.id() == hello_id_ && in_.status() != wire::OK) {
      // The broker refused our HELLO (e.g. the name is taken). Retried every kHelloRetry.
      last_failure_ = "sage-busd refused this connection: " + in_.message();
      failure_status_ = from_wire(in_.status());
      set_link_(Link::failing);
      fail_unsent_impatient_();
    }
    // Otherwise: the answer to a request that already ended (its deadline passed).
  }

  // Each record of a BATCH, as the message it holds, had it come alone (docs/protocol.md,
  // "Batches").
  void on_batch_() {
    if (frames_.size() != 1) return;  // not a batch: not ours to fix
    const zmq::message_t batch = std::move(frames_.front());
    wire::BatchReader reader(batch);
    wire::MessageRecord record;
    while (reader.next(record)) {
      if (wire::decode(record.header.data(), record.header.size(), in_) != wire::DecodeResult::ok ||
          in_.kind() == wire::BATCH)
        continue;
      if (in_.kind() == wire::REPLY) {  // the common case, read in place
        on_reply_(record.payload);
        continue;
      }
      frames_.clear();
      frames_.emplace_back(record.payload.data(), record.payload.size());
      on_message_();
    }
  }

  void finish_(std::unordered_map<std::uint64_t, Request>::iterator it, Outcome outcome) {
    auto done = std::move(it->second.done);
    sync_ends_ += it->second.sync;
    requests_.erase(it);
    done(std::move(outcome));
  }

  // Fails every request sent to the broker.
  void fail_sent_(const std::string& why) {
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto next = std::next(it);
      if (it->second.sent) finish_(it, failure(lost_status_(it->second), why));
      it = next;
    }
  }

  // Request `it` was sent, and the broker may not answer it any more. A QUEUE_GET that
  // waits for ready is asked again after the next WELCOME, within its timeout, if the broker
  // has `forgotten` it (asked twice, a broker that still held it could hand an item to the
  // copy nobody reads); the ack it carried goes with it, moot now that the connection that
  // held the item is gone (its tag may name another item on a new broker). Any other
  // request ends with `why`.
  void requeue_or_fail_(std::unordered_map<std::uint64_t, Request>::iterator it, bool forgotten,
                        const std::string& why) {
    Request& request = it->second;
    if (forgotten && !replaced_ && request.spec.kind == wire::QUEUE_GET &&
        request.spec.options.wait_for_ready) {
      request.sent = false;
      request.spec.tag = 0;
      return;
    }
    finish_(it, failure(lost_status_(request), why));
  }

  // A send whose link is lost was not delivered as far as anyone can tell.
  static Status lost_status_(const Request& request) {
    return request.spec.kind == wire::SEND ? Status::undeliverable : Status::unavailable;
  }

  // Fails the unsent requests that did not ask to wait for the connection.
  void fail_unsent_impatient_() {
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto next = std::next(it);
      if (!it->second.sent && !it->second.spec.options.wait_for_ready)
        finish_(it, failure(Status::unavailable, not_connected_text_()));
      it = next;
    }
  }

  std::string not_connected_text_() const {
    if (replaced_)
      return "not connected to sage-busd at " + endpoint_ + " (" + last_failure_ +
             "); this client does not reconnect by itself: make a new Client, with "
             "ClientOptions::takeover to reclaim the name";
    return "not connected to sage-busd at " + endpoint_ + " (" + last_failure_ +
           "); the client keeps retrying in the background; set "
           "CallOptions::wait_for_ready to wait for it";
  }

  Outcome deadline_failure_(const Request& request) const {
    const auto waited =
        duration_cast<milliseconds>(request.spec.options.timeout + request.spec.hold);
    std::string text =
        describe(request.spec) + " had no answer within " + std::to_string(waited.count()) + " ms";
    if (request.in_doubt)
      text += " (the connection to sage-busd at " + endpoint_ + " was lost after it was sent)";
    else if (!request.sent)
      text += link_ == Link::ready
                  ? " (never sent: the queue from this client to sage-busd stayed full)"
                  : " (never sent: not connected to sage-busd at " + endpoint_ + ")";
    return failure(Status::deadline_exceeded, std::move(text));
  }

  // --- publishing ----------------------------------------------------------------------

  // Unconfirmed publishes wait in the outbox while the socket is full or the link down,
  // in order; each frees a publish slot once it is handed to the socket. Several small
  // ones waiting together go as one PUBLISH_BATCH, when the broker reads them.
  void handle_(Connection::Publish& c) {
    outbox_.push_back(QueuedPublish{std::move(c.topic), std::move(c.payload)});
  }

  void flush_outbox_() {
    if (link_ != Link::ready) return;
    while (!outbox_.empty()) {
      // A batch made before a reconnect, for a broker that read batches, is made again.
      if (outgoing_.publishes > 1 && !publish_batches_) outgoing_.publishes = 0;
      if (outgoing_.publishes == 0) make_outgoing_();
      if (!put_(outgoing_.header, &outgoing_.body))
        return;  // kept, to be sent as it is when the socket has room
      take_short_lease_();
      const auto sent = static_cast<std::ptrdiff_t>(std::exchange(outgoing_.publishes, 0));
      outbox_.erase(outbox_.begin(), outbox_.begin() + sent);
      owner_.publish_slots_.release(sent);
    }
  }

  // The next message of the outbox: the publishes at its front that fit in one
  // PUBLISH_BATCH, when there are several, or else the first one alone.
  void make_outgoing_() {
    std::size_t batched = 0;
    if (publish_batches_) {
      const auto limit =
          static_cast<std::size_t>(std::min<std::uint64_t>(wire::kMaxBatchBytes, max_payload_));
      batch_.clear();
      for (const QueuedPublish& p : outbox_) {
        const std::string_view payload = p.payload.to_string_view();
        if (payload.size() > wire::kMaxBatchedPayload ||
            !batch_.fits(p.topic, payload.size(), limit))
          break;
        batch_.add_publish(p.topic, payload);
        ++batched;
      }
    }
    out_.Clear();
    if (batched > 1) {
      out_.set_kind(wire::PUBLISH_BATCH);
      outgoing_ = Outgoing{wire::encode(out_), batch_.frame(), batched};
      return;
    }
    QueuedPublish& first = outbox_.front();
    out_.set_kind(wire::PUBLISH);
    out_.set_topic(first.topic);
    outgoing_ = Outgoing{wire::encode(out_), std::move(first.payload), 1};
  }

  // --- subscriptions -------------------------------------------------------------------

  void handle_(Connection::AddSubscription& c) {
    subscription_cores_.push_back(c.core);
    if (link_ == Link::ready) send_subscribe_(c.core);
  }

  void handle_(Connection::RemoveSubscription& c) {
    std::erase(subscription_cores_, c.core);
    if (subscriptions_.erase(c.core->wire_id) && link_ == Link::ready) {
      out_.Clear();
      out_.set_kind(wire::UNSUBSCRIBE);
      out_.set_id(++next_id_);
      out_.set_subscription(c.core->wire_id);
      (void)send_();
    }
  }

  void handle_(Connection::Credit& c) {
    if (link_ != Link::ready || !subscriptions_.contains(c.core->wire_id)) return;
    out_.Clear();
    out_.set_kind(wire::CREDIT);
    out_.set_id(++next_id_);
    out_.set_subscription(c.core->wire_id);
    out_.set_credit(c.credit);
    (void)send_();
  }

  // Sent again after every new session under its first id: the broker keys a subscription
  // by (connection, SUBSCRIBE id), and a broker that still knows this connection replaces
  // the one it holds (and resets its credit) instead of holding it twice. That id is never
  // reused for anything else, so its answers still go to this subscription alone.
  void send_subscribe_(const std::shared_ptr<SubscriptionCore>& core) {
    out_.Clear();
    out_.set_kind(wire::SUBSCRIBE);
    core->sent_as = ++next_id_;
    if (core->wire_id == 0) core->wire_id = core->sent_as;
    out_.set_id(core->wire_id);
    out_.set_topic(core->pattern());
    out_.set_credit(std::max<std::uint32_t>(core->room(), 1));
    subscriptions_[core->wire_id] = core;
    (void)send_();
  }

  void on_event_() {
    std::string_view payload;
    if (!frames_.empty()) payload = frames_.front().to_string_view();
    deliver_(subscription_(in_.subscription()), in_.topic(), payload, in_.dropped());
  }

  // Several events in one frame (sagebus/wire/batch.hpp), in order. A malformed record
  // ends the batch: the events before it are delivered.
  void on_event_batch_() {
    if (frames_.size() != 1) return;  // not ours to fix
    wire::BatchReader reader(frames_.front());
    const std::shared_ptr<SubscriptionCore>* core = nullptr;
    std::uint64_t core_id = 0;
    for (wire::EventRecord event; reader.next(event);) {
      // Consecutive events are mostly for one subscription: found once for them.
      if (core == nullptr || event.subscription != core_id) {
        core = subscription_(event.subscription);
        core_id = event.subscription;
      }
      deliver_(core, event.topic, event.payload, event.dropped);
    }
  }

  // The subscription of wire id `id`, or nullptr.
  const std::shared_ptr<SubscriptionCore>* subscription_(std::uint64_t id) const {
    auto it = subscriptions_.find(id);
    return it == subscriptions_.end() ? nullptr : &it->second;
  }

  void deliver_(const std::shared_ptr<SubscriptionCore>* core, std::string_view topic,
                std::string_view payload, std::uint64_t dropped) {
    if (core == nullptr) return;  // unsubscribed meanwhile
    // Flushed at the end of the batch: only the subscriptions that got something, so
    // that a client with thousands of them does not walk them all for every batch.
    if (!(*core)->holds_unflushed()) to_flush_.push_back(*core);
    (*core)->deliver(topic, payload, dropped);
  }

  // --- point-to-point ------------------------------------------------------------------

  void on_deliver_() {
    if (discard_before_welcome_ != 0) return;  // its sender was answered for us: check_stall_
    Message message{{}, in_.peer(), {}, 0};
    if (!frames_.empty()) message.payload = to_string(frames_.front());
    const bool taken = owner_.offer_to_inbox(std::move(message));
    reply_(in_.id(), taken ? Status::ok : Status::overloaded,
           taken ? std::string()
                 : "the inbox of " + owner_.options_.name + " is full (" +
                       std::to_string(owner_.options_.inbox_size) + " messages)",
           {});
  }

  // --- serving -------------------------------------------------------------------------

  void handle_(Connection::AddService& c) {
    const auto name = c.core->name();
    services_[name] = ServiceEntry{std::move(c.core), true};
    if (link_ == Link::ready) send_register_(*services_[name].core);
  }

  void handle_(Connection::Unregister& c) {
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

  void handle_(Connection::RemoveService& c) { services_.erase(c.name); }

  // A reply to a dispatch of an earlier broker session is dropped: the broker it was for
  // is gone, and the new one numbers its dispatches afresh, so the id may name a call it
  // gave this instance since — the reply would answer that call's caller.
  void handle_(Connection::SendReply& c) {
    if (c.epoch != session_epoch_) return;
    reply_(c.id, c.status, std::move(c.message), std::move(c.payload));
  }

  // A reply the queue refuses is lost; its caller's deadline ends the call.
  void reply_(std::uint64_t id, Status status, std::string message, std::string payload) {
    if (payload.size() > max_payload_) {
      // The broker would refuse it; its caller hears why instead of a lost connection.
      status = Status::handler_error;
      message = "the handler's reply of " + std::to_string(payload.size()) +
                " bytes exceeds the broker's max-payload of " + std::to_string(max_payload_) +
                " bytes";
      payload.clear();
    }
    using H = wire::Header;
    head_.start(wire::REPLY)
        .varint(H::kIdFieldNumber, id)
        .enumeration(H::kStatusFieldNumber, static_cast<int>(status))
        .string(H::kMessageFieldNumber, message);
    // Small replies wait for the end of this turn, to go together (flush_replies_), but
    // none longer than kMaxReplyWait.
    if (batches_ && payload.size() <= wire::kMaxBatchedPayload) {
      const std::size_t limit = std::min<std::size_t>(wire::kMaxBatchBytes, max_payload_);
      const auto now = Clock::now();
      if (!replies_.fits(head_.size(), payload.size(), limit) ||
          (!replies_.empty() && now - replies_since_ > kMaxReplyWait))
        flush_replies_();
      if (replies_.fits(head_.size(), payload.size(), limit)) {
        if (replies_.empty()) replies_since_ = now;
        zmq::message_t frame = adopt(std::move(payload));
        replies_.add(head_.bytes(), &frame);
        return;
      }
    }
    (void)send_header_(head_.frame(), adopt(std::move(payload)));
  }

  // Sends the replies gathered since the last flush, as one BATCH, or as a REPLY
  // when there is one: after each turn's messages and commands are handled, and before
  // anything else is sent (put_), so that this side's messages leave in the order it made
  // them. When the queue to the broker is full they are dropped, as a REPLY would be: the
  // broker ends their calls at their deadlines.
  void flush_replies_() {
    if (replies_.empty()) return;
    bool sent;
    if (replies_.size() == 1) {
      const auto payload = replies_.lone_payload();
      sent = write_(replies_.lone_header(), payload.empty() ? nullptr : payload.data());
    } else {
      zmq::message_t header(batch_header_.data(), batch_header_.size());
      zmq::message_t records = replies_.records();
      sent = write_(header, &records);
    }
    replies_.clear();
    if (sent) take_short_lease_();
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
    if (discard_before_welcome_ != 0) return;  // its caller was answered for us: check_stall_
    auto it = services_.find(in_.service());
    if (it == services_.end())
      return reply_(in_.id(), Status::unavailable,
                    "service " + in_.service() + " is no longer served on this connection", {});
    Job job{.id = in_.id(),
            .epoch = session_epoch_,
            .method = in_.method(),
            .headers = {in_.headers().begin(), in_.headers().end()},
            .payload = {},
            .deadline = wire::deadline_of(now_, in_.timeout_ms(), same_host_ ? in_.deadline_us() : 0)};
    if (!frames_.empty()) job.payload = std::move(frames_.front());
    ServiceCore& core = *it->second.core;
    if (!core.options().on_io_thread) return core.submit(std::move(job));
    // Here and now: ServiceOptions::on_io_thread. After a handler that took longer than
    // kMaxReplyWait, the replies waiting go before the next one runs: it may be as slow.
    if (slow_handler_) flush_replies_();
    const auto started = Clock::now();
    Answer answer = core.run(job);
    slow_handler_ = Clock::now() - started > kMaxReplyWait;
    reply_(job.id, answer.status, std::move(answer.message), std::move(answer.payload));
  }

  // --- timers --------------------------------------------------------------------------

  // When run_timers_() next has something to do (at the latest a second from now_).
  Clock::time_point next_timer_() const {
    auto next = now_ + milliseconds(1000);
    if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
    if (link_ == Link::ready) {
      if (!heartbeat_due_) next = std::min(next, next_heartbeat_);  // else POLLOUT wakes us
      next = std::min(next, watch_from_ + lease_());
    } else if (tcp_up_ && !replaced_) {
      next = std::min(next, hello_sent_at_ + kHelloRetry);
    }
    return next;
  }

  void run_timers_() {
    while (!deadlines_.empty() && deadlines_.top().first <= now_) {
      const auto [when, id] = deadlines_.top();
      deadlines_.pop();
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;  // ended already, or re-sent under another id
      if (it->second.sent && it->second.spec.kind != wire::REQUEST &&
          now_ < it->second.deadline + kLocalGrace) {
        // The broker decides the outcome and answers at the deadline; give its answer a
        // moment to arrive.
        deadlines_.emplace(it->second.deadline + kLocalGrace, id);
        continue;
      }
      finish_(it, deadline_failure_(it->second));
    }
    if (link_ == Link::ready) {
      if (now_ - watch_from_ > lease_()) {
        lose_link_("no word from sage-busd at " + endpoint_ + " for " +
                   std::to_string(lease_().count()) + " ms");
      } else if (heartbeat_due_ || now_ >= next_heartbeat_) {
        const bool idle = idle_heartbeat_ > heartbeat_ && !at_stake_();
        out_.Clear();
        out_.set_kind(wire::HEARTBEAT);
        out_.set_id(++next_id_);
        // No answer wanted when the broker was heard since the previous heartbeat went:
        // if it then falls silent, the next heartbeat asks, less than two heartbeats
        // after it was last heard, and the broker has the rest of the lease (at least a
        // heartbeat, at liveness 3 or more) to answer. A quiet client asks every other
        // time, a busy one never; at liveness 2 or 1 every heartbeat asks.
        out_.set_no_answer(liveness_ >= 3 && last_heard_ > last_heartbeat_);
        out_.set_idle(idle);
        // A full socket refuses it: it stays due and goes as soon as there is room.
        zmq::message_t header = wire::encode(out_);
        heartbeat_due_ = !put_(header, nullptr);
        if (!heartbeat_due_) {
          if (idle)
            idle_lease_ = true;
          else
            take_short_lease_();
          next_heartbeat_ = now_ + (idle ? idle_heartbeat_ : heartbeat_);
          last_heartbeat_ = now_;
        }
      }
    } else if (tcp_up_ && !replaced_ && now_ - hello_sent_at_ >= kHelloRetry) {
      send_hello_();
    }
  }

  // --- output --------------------------------------------------------------------------

  void send_hello_() {
    out_.Clear();
    out_.set_kind(wire::HELLO);
    out_.set_id(++next_id_);
    hello_id_ = out_.id();
    *out_.mutable_hello() = hello_;
    (void)send_();
    hello_sent_at_ = now_;
  }

  // Sends out_ with an optional payload frame. False when the queue to the broker is
  // full (ZeroMQ's high-water mark): the message was not sent.
  bool send_(std::optional<zmq::message_t> payload = std::nullopt) {
    return send_header_(wire::encode(out_), std::move(payload));
  }

  // Sends `header` (then `payload`); false, and nothing sent, when the queue is full.
  bool send_header_(zmq::message_t header, std::optional<zmq::message_t> payload) {
    if (!put_(header, payload ? &*payload : nullptr)) return false;
    take_short_lease_();
    return true;
  }

  // send_header_() but for the lease, which the caller sets (take_short_lease_(), or the
  // heartbeat's own in run_timers_). The frames are emptied once sent, kept when refused.
  bool put_(zmq::message_t& header, zmq::message_t* payload) {
    flush_replies_();
    return write_(header, payload);
  }

  // put_() of this message alone.
  bool write_(zmq::message_t& header, zmq::message_t* payload) {
    const auto more = payload ? zmq::send_flags::sndmore : zmq::send_flags::none;
    quiet_ = false;  // a send may take in the news that socket_fd_ was to signal
    if (!wire::send(socket_, header, more | zmq::send_flags::dontwait)) return false;
    if (payload) (void)wire::send(socket_, *payload, zmq::send_flags::dontwait);
    last_sent_ = now_;
    return true;
  }

  // --- leases --------------------------------------------------------------------------
  //
  // The broker holds a lease on this connection (docs/protocol.md, "Handshake and
  // leases"): heartbeat x liveness, or idle heartbeat x liveness after a HEARTBEAT that
  // said idle, until the next message. This side keeps the same lease on the broker: it
  // gives up on a broker silent for as long.

  // Something whose loss must be noticed within the short lease: a service, a
  // subscription, a request in flight (a call, a send, a queue get, a confirmed publish),
  // publishes to send, or items taken that others wait on (point-to-point messages,
  // legacy-queue items, which the broker hands on only when this connection is gone).
  bool at_stake_() const {
    return !services_.empty() || !subscription_cores_.empty() || !requests_.empty() ||
           !outbox_.empty() || reads_queues_ || owner_.reads_inbox_.load(std::memory_order_relaxed);
  }

  milliseconds lease_() const { return (idle_lease_ ? idle_heartbeat_ : heartbeat_) * liveness_; }

  // Any message but an idle HEARTBEAT gives this connection the short lease again, at the
  // broker and here: heartbeats go at the short interval, and the broker's silence counts
  // from now (an idle broker owed no word) against the short lease.
  void take_short_lease_() {
    if (!idle_lease_) return;
    idle_lease_ = false;
    watch_from_ = now_;
    next_heartbeat_ = std::min(next_heartbeat_, now_ + heartbeat_);
  }

  // Nothing is sent for a receive(): a heartbeat now, which no longer says idle, takes the
  // short lease.
  void handle_(Connection::ReadsInbox&) {
    if (idle_lease_) next_heartbeat_ = std::min(next_heartbeat_, now_);
  }

  void shut_down_() {
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto next = std::next(it);
      finish_(it, failure(Status::cancelled, "the client was closed before the request ended"));
      it = next;
    }
    for (auto& [name, entry] : services_)
      entry.core->on_unregistered();
    owner_.publish_slots_.release(static_cast<std::ptrdiff_t>(outbox_.size()));
    outbox_.clear();
    if (link_ == Link::ready) {
      out_.Clear();
      out_.set_kind(wire::GOODBYE);
      out_.set_message("client closed");
      socket_.set(zmq::sockopt::linger, 100);  // let the GOODBYE out
      (void)send_();
    }
    set_link_(Link::failing);
    zmq_socket_monitor(socket_.handle(), nullptr, 0);
  }

  // While callers drive, the I/O thread wakes after kNap, then twice as long each time,
  // up to kLongestNap, to see whether they still do (nap_).
  static constexpr milliseconds kNap{1};
  static constexpr milliseconds kLongestNap{16};

  Connection& owner_;
  const std::string endpoint_;
  // Held by whichever thread runs the engine (the I/O thread, or a caller in call()),
  // except while it waits in ::poll(): guards everything below and every use of the sockets.
  std::mutex mutex_;
  Driver polling_ = Driver::none;
  Clock::time_point wakes_for_;  // the timer the thread in ::poll() waits for
  // Callers wait on the sockets; the I/O thread naps. Written under mutex_, read by the
  // napping I/O thread without it, as are the two below.
  std::atomic<bool> callers_drive_{false};
  std::atomic<bool> caller_polling_{false};  // polling_ == Driver::caller
  std::atomic<Clock::rep> caller_left_{0};   // when a caller last stopped waiting
  std::mutex nap_mutex_;                     // the nap's, with nap_cv_ and take_over_
  std::condition_variable nap_cv_;
  bool take_over_ = false;
  int driving_ = 0;  // callers in drive_()
  std::condition_variable
      left_cv_;  // with mutex_: the last of them left, while stopping   // wake_io_thread_() asked
  std::uint64_t sync_ends_ = 0;  // counts the requests ended that a caller waits for in call()
  // The last call on socket_ that takes in ZeroMQ's news (a receive, events()) found
  // nothing to read, and nothing was sent since: socket_fd_ will signal whatever comes
  // next, so turn_() need not ask events() before waiting (sagebus/wire/socket.hpp).
  bool quiet_ = false;
  bool in_callbacks_ = false;            // the I/O thread runs callbacks (run_callbacks_)
  std::vector<PostedCallback> running_;  // the callbacks run_callbacks_() runs
  bool stopped_ = false;                 // the I/O loop has ended
  bool monitor_due_ = true;              // the monitor is read in the first turn
  const std::shared_ptr<zmq::context_t> context_ = shared_context();  // outlives the sockets
  zmq::socket_t socket_;
  zmq::socket_t monitor_;
  const int socket_fd_ = socket_.get(zmq::sockopt::fd);
  const int monitor_fd_ = monitor_.get(zmq::sockopt::fd);
  wire::Hello hello_;

  Clock::time_point now_ = Clock::now();
  Link link_ = Link::connecting;
  bool tcp_up_ = false;
  bool fresh_session_ = true;  // the broker has none of our registrations/subscriptions
  bool replaced_ = false;      // another connection took our name: stay out
  std::string last_failure_ = "connecting";
  Status failure_status_ = Status::unavailable;  // what connection_error() reports
  std::string session_;
  // Counts the broker sessions (broker processes) this connection has been welcomed by.
  std::uint64_t session_epoch_ = 0;
  std::uint64_t hello_id_ = 0;
  milliseconds heartbeat_{kDefaultHeartbeatMs};
  milliseconds idle_heartbeat_{0};  // the welcome's idle heartbeat; 0: none
  std::uint32_t liveness_ = kDefaultLiveness;
  bool idle_lease_ = false;  // our last message was an idle HEARTBEAT (lease_())
  bool reads_queues_ = false;  // a QUEUE_GET was sent: legacy-queue items may be held
  std::uint64_t max_payload_ = kDefaultMaxPayload;
  Clock::time_point last_heard_ = now_;
  // The broker's silence counts from here: when it was last heard, or when the short
  // lease was taken again (take_short_lease_).
  Clock::time_point watch_from_ = now_;
  Clock::time_point last_heartbeat_ = now_;  // when the previous HEARTBEAT went
  Clock::time_point last_sent_ = now_;  // when we last handed the broker a message
  Clock::time_point last_ran_ = now_;   // when the loop last went to wait
  // Not 0 after a stall (check_stall_): DELIVER and REQUEST are dropped until a WELCOME with
  // an id from this one on.
  std::uint64_t discard_before_welcome_ = 0;
  Clock::time_point next_heartbeat_ = now_;
  bool heartbeat_due_ = false;  // a heartbeat the full socket refused, to send first
  Clock::time_point hello_sent_at_ = now_ - kHelloRetry;

  // Every message this side starts takes a fresh id, so ids rise in sending order.
  std::uint64_t next_id_ = first_own_id();
  std::unordered_map<std::uint64_t, Request> requests_;
  // Unsent requests, in sending order, that wait for room in the socket's queue
  // (send_request_); ids of requests that ended meanwhile are skipped.
  std::deque<std::uint64_t> waiting_for_room_;
  using Deadline = std::pair<Clock::time_point, std::uint64_t>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  std::map<std::string, ServiceEntry> services_;
  std::unordered_map<std::uint64_t, RegistrationAnswer> registrations_;
  std::vector<std::shared_ptr<SubscriptionCore>> subscription_cores_;
  // Those on_event_() delivered to in the receive batch being read (drain_socket_).
  std::vector<std::shared_ptr<SubscriptionCore>> to_flush_;
  std::unordered_map<std::uint64_t, std::shared_ptr<SubscriptionCore>>
      subscriptions_;  // by wire id
  struct QueuedPublish {
    std::string topic;
    zmq::message_t payload;
  };
  std::deque<QueuedPublish> outbox_;
  // A message made of the first `publishes` of outbox_ (make_outgoing_), while it waits
  // for the socket to take it; none when `publishes` is 0.
  struct Outgoing {
    zmq::message_t header;
    zmq::message_t body;
    std::size_t publishes = 0;
  };
  Outgoing outgoing_;
  wire::BatchWriter batch_;  // make_outgoing_'s, reused
  // The broker's WELCOME says it reads PUBLISH_BATCH, BATCH.
  bool publish_batches_ = false;
  bool batches_ = false;
  // The broker's WELCOME named this host's boot id: it shares our steady clock, and
  // REQUESTs both ways carry their deadline itself (sagebus/wire/host_clock.hpp).
  bool same_host_ = false;
  // Replies that wait for the end of the turn (flush_replies_), and the header of their
  // BATCH.
  wire::MessageBatch replies_;
  Clock::time_point replies_since_{};  // when the first of replies_ was made
  bool slow_handler_ = false;          // the last handler run here took over kMaxReplyWait
  std::string batch_header_;

  wire::Header in_;
  wire::Header out_;                    // the headers written through protobuf (the rarer kinds)
  wire::HeaderWriter head_;             // those written by hand: requests and replies
  std::vector<zmq::message_t> frames_;  // payload frames of the message being handled
  std::vector<Connection::Command> taken_;  // the commands being handled; empty between
};

void run_io_thread(Connection& connection, std::promise<void>& started) {
  std::unique_ptr<Engine> engine;
  try {
    engine = std::make_unique<Engine>(connection);
  } catch (const zmq::error_t& e) {
    started.set_exception(std::make_exception_ptr(
        Error(Status::invalid_argument,
              "cannot use endpoint '" + connection.options().endpoint + "': " + e.what())));
    return;
  }
  started.set_value();
  engine->run();
}

Outcome call(Engine& engine, RequestSpec&& spec) {
  return engine.call(std::move(spec));
}

bool try_start(Engine& engine, Connection::Start& start) {
  return engine.try_start(start);
}

bool in_callbacks(const Engine& engine) {
  return engine.in_callbacks();
}

void wake_if_napping(Engine& engine) {
  engine.wake_if_napping();
}

}  // namespace sagebus::detail
