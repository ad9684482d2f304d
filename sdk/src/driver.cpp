// The driver: one detail::Connection's I/O. It owns the DEALER socket, the socket
// monitor and the protocol's detail::Session (session/session.hpp), and feeds the session
// what the sockets, the clock and user threads bring; the session's messages go to the
// socket through the driver (it is the session's Port).
//
// Who runs it: the I/O thread waits on the sockets, reads them, runs timers and the
// commands other threads post. A user thread in a synchronous call (call()) sends its
// request itself and, if no other thread waits on the sockets, waits on them itself until
// its request ends (leader/follower): a call then crosses no thread of ours, as with a raw
// DEALER. An asynchronous request, too, is started and sent by its caller's thread when
// no other thread runs the driver at that moment. Meanwhile the I/O thread naps, and takes
// over again once no caller has waited on the sockets for a millisecond. Callers never
// run the driver of a client that serves or subscribes: handlers and events stay on the
// I/O thread. With ClientOptions::inline_callbacks the I/O thread also runs call_async
// callbacks, between turns and without the driver's lock, so that the calls they make
// are sent from there at once.
#include "driver.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <utility>

#include <zmq.hpp>

#include "sagebus/wire/curve_keys.hpp"
#include "sagebus/wire/socket.hpp"
#include "session/protocol.hpp"
#include "session/session.hpp"

namespace sagebus::detail {

namespace {

using std::chrono::milliseconds;

// Messages read from the socket before the loop looks at its timers again.
constexpr int kReceiveBatch = 256;

// The ZeroMQ context every Client of this process shares, made with the first and ended
// with the last. One ZeroMQ I/O thread then serves all of them, as with raw sockets of one
// context: under load it moves several clients' messages per wake-up, where a context per
// client woke a thread of its own for each message. A child process after fork() gets a
// context of its own: the parent's has no I/O thread in the child.
std::shared_ptr<zmq::context_t> shared_context() {
  static std::mutex mutex;
  static std::weak_ptr<zmq::context_t> current;
  static pid_t made_in = 0;
  std::lock_guard lock(mutex);
  auto context = made_in == ::getpid() ? current.lock() : nullptr;
  if (!context) {
    context = std::make_shared<zmq::context_t>(1);
    current = context;
    made_in = ::getpid();
  }
  return context;
}

}  // namespace

class Driver final : public Port {
 public:
  explicit Driver(Connection& owner)
      : owner_(owner),
        socket_(*context_, zmq::socket_type::dealer),
        monitor_(*context_, zmq::socket_type::pair),
        session_(owner.options_, *this, owner, Clock::now()) {
    const auto& o = owner.options_;
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::reconnect_ivl, static_cast<int>(o.reconnect_min.count()));
    socket_.set(zmq::sockopt::reconnect_ivl_max, static_cast<int>(o.reconnect_max.count()));
    if (!o.server_key.empty()) {  // Z85 keys, resolved by Connection's checks
      socket_.set(zmq::sockopt::curve_serverkey, o.server_key);
      socket_.set(zmq::sockopt::curve_publickey, wire::curve_public_key(o.client_key));
      socket_.set(zmq::sockopt::curve_secretkey, o.client_key);
    }
    const std::string monitor_address = "inproc://sagebus-monitor-" + protocol::random_hex(8);
    if (zmq_socket_monitor(socket_.handle(), monitor_address.c_str(),
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED |
                               ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0)
      throw zmq::error_t();
    monitor_.connect(monitor_address);
    socket_.connect(o.endpoint);
    owner_.driver_ = this;
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
        if (callers_drive_ && (polling_ == Polling::caller || (!asked && caller_was_here_())))
          continue;
        callers_drive_ = false;
      }
      const auto sync_ends = session_.sync_ends();
      turn_(lock, Polling::io);
      run_callbacks_(lock);
      // The caller just handed its outcome will likely call again at once: let it wait on
      // the socket itself then, instead of through this thread.
      if (session_.sync_ends() != sync_ends && callers_may_drive_() && session_.no_requests())
        callers_drive_ = true;
    }
    // The client is being destroyed, and another thread may be in a call on it: callers
    // in drive_() leave it first (they see stopping_, and the destructor's wake-up ends
    // their ppoll()); shut_down_() then ends their requests CANCELLED.
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
  // caller sleeps in ppoll() and wakes to the reply. Else the thread that waits there
  // ends it, as for any request. With `interrupt`, this thread asks it at least every
  // interrupt->every, holding no lock of the client's, and stops waiting CANCELLED when
  // it says so; the request then ends unseen (its outcome is dropped).
  Outcome call(RequestSpec&& spec, const Interrupt* interrupt) {
    // Shared with the request: an interrupted caller leaves before its outcome comes.
    struct Waiter {
      std::mutex mutex;
      std::condition_variable cv;
      std::optional<Outcome> outcome;
      bool ended() {
        std::lock_guard lock(mutex);
        return outcome.has_value();
      }
      void end(Outcome o) {
        std::lock_guard lock(mutex);
        if (!outcome) outcome.emplace(std::move(o));
        // Under the lock: the waiter may not leave before it returns.
        cv.notify_one();
      }
    };
    auto waiter = std::make_shared<Waiter>();
    command::Start start{std::move(spec), Done([waiter](Outcome o) { waiter->end(std::move(o)); }),
                         true};
    // True, and the call ended CANCELLED, once the caller's check says so.
    auto interrupted = [&] {
      if (interrupt == nullptr || !interrupt->check()) return false;
      waiter->end(failure(Status::cancelled, "the caller stopped waiting (interrupted)"));
      return true;
    };
    drive_(
        start, [&] { return waiter->ended(); }, interrupt, interrupted);
    std::unique_lock lock(waiter->mutex);
    const auto ended = [&] { return waiter->outcome.has_value(); };
    while (!ended()) {
      if (interrupt == nullptr) {
        waiter->cv.wait(lock, ended);
        break;
      }
      if (waiter->cv.wait_for(lock, interrupt->every, ended)) break;
      lock.unlock();
      (void)interrupted();
      lock.lock();
    }
    return std::move(*waiter->outcome);
  }

  // An asynchronous request from a user thread (Connection::start): started and sent from
  // this thread when no other thread runs the engine at the moment; false, and nothing
  // done, when one does (the request is then posted to it). noexcept as drive_().
  bool try_start(command::Start& start, bool from_callback) noexcept {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock() || stopped_) return false;
    // From a callback, the request goes with those the next callbacks make (run_callbacks_).
    start_here_(start, from_callback);
    follow_(false);
    return true;
  }

  // Connection::post_: posted work must not wait for the nap's end when nobody waits on
  // the sockets (a caller that does sees it through the wake fd).
  void wake_if_napping() {
    if (!callers_drive_.load(std::memory_order_relaxed) ||
        caller_polling_.load(std::memory_order_relaxed))
      return;
    ask_to_take_over_();
  }

  // Connection::start: true on the I/O thread while it runs callbacks (run_callbacks_),
  // without mutex_. Read there only.
  bool in_callbacks() const noexcept { return in_callbacks_; }

  // Port: the session's messages, to the socket without waiting.
  bool write(zmq::message_t& header, zmq::message_t* payload) override {
    const auto more = payload ? zmq::send_flags::sndmore : zmq::send_flags::none;
    quiet_ = false;  // a send may take in the news that socket_fd_ was to signal
    if (!wire::send(socket_, header, more | zmq::send_flags::dontwait)) return false;
    if (payload) (void)wire::send(socket_, *payload, zmq::send_flags::dontwait);
    return true;
  }

 private:
  // Which thread waits in ppoll() on the sockets (mutex_ released meanwhile).
  enum class Polling { none, io, caller };

  // call()'s part in the engine: starts `start` and, while no other thread waits on the
  // sockets, turns the loop until `ended`. noexcept: what could throw here (libzmq, poll(),
  // allocation) would end the I/O thread, and so the program, just the same; and a
  // request left behind would call back into a caller's stack that is gone.
  // With `interrupt`, the turns last at most interrupt->every, and `interrupted()` is
  // asked after each, with mutex_ released: true ends the driving.
  template <class Ended, class Interrupted>
  void drive_(command::Start& start, const Ended& ended, const Interrupt* interrupt,
              const Interrupted& interrupted) noexcept {
    std::unique_lock lock(mutex_);
    if (stopped_)
      return start.done(
          failure(Status::cancelled, "the client was closed before the request was sent"));
    ++driving_;
    start_here_(start);
    bool drove = false;
    while (!ended() && polling_ == Polling::none && callers_may_drive_() &&
           !owner_.stopping_.load(std::memory_order_acquire)) {
      drove = callers_drive_ = true;
      if (interrupt == nullptr) {
        turn_(lock, Polling::caller);
        continue;
      }
      turn_(lock, Polling::caller, Clock::now() + interrupt->every);
      lock.unlock();
      const bool stop = interrupted();
      lock.lock();
      if (stop) break;
    }
    if (!drove) {
      follow_(ended());
    } else {
      caller_left_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
      // What is still open (this request too, if it stopped driving before its end) must
      // not wait for this thread's next call.
      if (!callers_may_drive_() || !session_.no_requests() || session_.wants_out())
        wake_io_thread_();
    }
    if (--driving_ == 0 && owner_.stopping_.load(std::memory_order_acquire)) left_cv_.notify_all();
  }

  // One turn: waits without mutex_ for the sockets, the wake fd or the next timer (at the
  // latest `wake_by`), then acts on all that is due. `lock` holds mutex_ on entry and on
  // return.
  //
  // One ppoll() on the sockets' fds (sagebus/wire/socket.hpp, "Waiting"): the monitor is
  // read until it has nothing whenever its fd says so (and once at the start), the DEALER
  // whenever its fd says so or ZMQ_EVENTS, asked just before waiting, does. A thread that
  // uses the socket while another waits on its fd wakes that one if the socket became
  // readable meanwhile (follow_): the fd signals only changes that nobody has seen yet.
  void turn_(std::unique_lock<std::mutex>& lock, Polling driver,
             Clock::time_point wake_by = Clock::time_point::max()) {
    const int events = quiet_ && !session_.wants_out() ? 0 : wire::events(socket_);
    const bool can_read = (events & ZMQ_POLLIN) != 0;
    quiet_ = !can_read;
    const bool can_act = can_read || monitor_due_ || !owner_.inline_callbacks_.empty() ||
                         (session_.wants_out() && (events & ZMQ_POLLOUT) != 0);
    pollfd fds[] = {
        {socket_fd_, POLLIN, 0}, {monitor_fd_, POLLIN, 0}, {owner_.wake_fd_, POLLIN, 0}};
    // The timer it waits for, to the microsecond: a call's deadline ends it then.
    wakes_for_ = can_act ? Clock::now() : std::min(session_.next_wakeup(), wake_by);
    const auto timeout =
        std::max(std::chrono::ceil<std::chrono::microseconds>(wakes_for_ - Clock::now()),
                 std::chrono::microseconds(0));
    const timespec wait{static_cast<time_t>(timeout.count() / 1000000),
                        static_cast<long>(timeout.count() % 1000000) * 1000};
    polling_ = driver;
    if (driver == Polling::caller) caller_polling_.store(true, std::memory_order_relaxed);
    lock.unlock();
    const int polled = ::ppoll(fds, 3, &wait, nullptr);
    const int poll_errno = errno;
    lock.lock();
    polling_ = Polling::none;
    caller_polling_.store(false, std::memory_order_relaxed);
    if (polled < 0 && poll_errno != EINTR)
      throw std::system_error(poll_errno, std::generic_category(), "poll");
    session_.begin_turn(Clock::now());
    if ((fds[2].revents & POLLIN) != 0) drain_commands_();
    // The socket before the monitor: what a connection delivered before it closed (a
    // reply, the broker's GOODBYE) is acted on before its close is. So the socket is read
    // whenever the monitor has news, and the news waits for a turn that empties it.
    const bool monitor_news = monitor_due_ || (fds[1].revents & POLLIN) != 0;
    bool emptied = true;
    // Also when only woken: the waker may have seen a message that the fd will not signal.
    if (can_read || monitor_news || (fds[0].revents & POLLIN) != 0 ||
        (fds[2].revents & POLLIN) != 0)
      emptied = drain_socket_(driver);
    monitor_due_ = monitor_news && !emptied;
    if (monitor_news && emptied) drain_monitor_();
    session_.end_turn(Clock::now());
  }

  // Callers may wait on the sockets for their own calls only where nothing else needs
  // this thread: handlers (ServiceOptions::on_io_thread) and callbacks
  // (ClientOptions::inline_callbacks) run on it, and events are not to wait for a caller's
  // next call.
  bool callers_may_drive_() const {
    return session_.serves_nothing() && owner_.inline_callbacks_.empty();
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
      session_.flush();  // the requests the callbacks made, together
    }
  }

  // The I/O thread while callers drive, without mutex_ (so that it never holds up a
  // caller): returns when asked to take the sockets back (wake_io_thread_: a request, an
  // outbox or callbacks that need it), or to stop, or once no caller has waited on them
  // for a nap. Naps start at kNap and double, up to kLongestNap, while callers keep
  // driving: a client whose callers call back to back wakes this thread ~60 times a
  // second, not 1,000 (each wake-up a context switch).
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
    if (polling_ == Polling::none) {
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
    const bool writable = session_.wants_out() && (events & ZMQ_POLLOUT) != 0;
    const bool sooner = session_.next_wakeup() < wakes_for_;
    if (readable || writable || sooner || callbacks) owner_.wake_();
  }

  // Starts `start` on a user thread (call(), try_start()), after handling what was posted
  // before, so that it goes out after what the same thread posted earlier.
  void start_here_(command::Start& start, bool more = false) {
    session_.advance(Clock::now());
    bool any = false;
    {
      std::lock_guard lock(owner_.commands_mutex_);
      any = !owner_.commands_.empty();
    }
    if (any) drain_commands_();
    session_.start(start, more);
  }

  void drain_commands_() {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto n = ::read(owner_.wake_fd_, &count, sizeof count);
    {
      std::lock_guard lock(owner_.commands_mutex_);
      taken_.swap(owner_.commands_);
    }
    for (auto& command : taken_) {
      session_.handle(command);
      // A chunk the session copied into a batch leaves its buffer, to copy another into.
      if (auto* chunk = std::get_if<command::SendChunk>(&command); chunk && !chunk->payload.empty())
        spent_chunks_.push_back(std::move(chunk->payload));
    }
    taken_.clear();  // keeps its storage, which the next swap hands back to post_()
    if (!spent_chunks_.empty()) owner_.reuse_chunk_buffers_(spent_chunks_);
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
      std::uint32_t value = 0;
      if (event.size() >= sizeof id + sizeof value)
        std::memcpy(&value, static_cast<const char*>(event.data()) + sizeof id, sizeof value);
      switch (id) {
        case ZMQ_EVENT_CONNECTED:
          session_.on_link_event(LinkEvent::connected);
          break;
        case ZMQ_EVENT_CONNECT_RETRIED:
          session_.on_link_event(LinkEvent::connect_failed);
          break;
        case ZMQ_EVENT_DISCONNECTED:
          session_.on_link_event(LinkEvent::disconnected);
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:  // the broker's ZAP handler said no
          session_.on_link_event(LinkEvent::key_refused);
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
          session_.on_link_event(LinkEvent::handshake_failed);
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
          session_.on_link_event(value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                                     ? LinkEvent::mechanism_mismatch
                                     : LinkEvent::handshake_failed);
          break;
        default:
          break;
      }
    }
  }

  // Reads what the socket has, up to kReceiveBatch messages; a caller (Polling::caller)
  // stops after a message that ended a call() (its own, likely), sparing the read that
  // would find nothing: the next turn asks events() first. True when it found the socket
  // empty.
  bool drain_socket_(Polling driver) {
    const auto sync_ends = session_.sync_ends();
    bool emptied = false;
    for (int i = 0; i < kReceiveBatch; ++i) {
      if (driver == Polling::caller && session_.sync_ends() != sync_ends) break;
      zmq::message_t header_frame;
      if (!wire::receive(socket_, header_frame, zmq::recv_flags::dontwait)) {
        quiet_ = emptied = true;
        break;
      }
      quiet_ = false;
      frames_.clear();
      for (bool more = header_frame.more(); more; more = frames_.back().more()) {
        frames_.emplace_back();
        (void)wire::receive(socket_, frames_.back(), zmq::recv_flags::dontwait);
      }
      session_.advance(Clock::now());
      session_.on_message(header_frame, frames_);
    }
    session_.end_of_input();
    return emptied;
  }

  void shut_down_() {
    socket_.set(zmq::sockopt::linger, 100);  // let the GOODBYE out
    session_.shut_down();
    zmq_socket_monitor(socket_.handle(), nullptr, 0);
  }

  // While callers drive, the I/O thread wakes after kNap, then twice as long each time,
  // up to kLongestNap, to see whether they still do (nap_).
  static constexpr milliseconds kNap{1};
  static constexpr milliseconds kLongestNap{16};

  Connection& owner_;
  // Held by whichever thread runs the driver (the I/O thread, or a caller in call()),
  // except while it waits in ppoll(): guards everything below, the session and every use
  // of the sockets.
  std::mutex mutex_;
  Polling polling_ = Polling::none;
  Clock::time_point wakes_for_;  // the timer the thread in ppoll() waits for
  // Callers wait on the sockets; the I/O thread naps. Written under mutex_, read by the
  // napping I/O thread without it, as are the two below.
  std::atomic<bool> callers_drive_{false};
  std::atomic<bool> caller_polling_{false};  // polling_ == Polling::caller
  std::atomic<Clock::rep> caller_left_{0};   // when a caller last stopped waiting
  std::mutex nap_mutex_;                     // the nap's, with nap_cv_ and take_over_
  std::condition_variable nap_cv_;
  bool take_over_ = false;           // wake_io_thread_() asked
  int driving_ = 0;                  // callers in drive_()
  std::condition_variable left_cv_;  // with mutex_: the last of them left, while stopping
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
  std::vector<zmq::message_t> frames_;     // payload frames of the message being read
  std::vector<command::Command> taken_;    // the commands being handled; empty between
  std::vector<std::string> spent_chunks_;  // drain_commands_'s, empty between
  Session session_;
};

void run_io_thread(Connection& connection, std::promise<void>& started) {
  std::unique_ptr<Driver> driver;
  try {
    driver = std::make_unique<Driver>(connection);
  } catch (const zmq::error_t& e) {
    started.set_exception(std::make_exception_ptr(
        Error(Status::invalid_argument,
              "cannot use endpoint '" + connection.options().endpoint + "': " + e.what())));
    return;
  }
  started.set_value();
  driver->run();
}

Outcome call(Driver& driver, RequestSpec&& spec, const Interrupt* interrupt) {
  return driver.call(std::move(spec), interrupt);
}

bool try_start(Driver& driver, command::Start& start, bool from_callback) {
  return driver.try_start(start, from_callback);
}

bool in_callbacks(const Driver& driver) {
  return driver.in_callbacks();
}

void wake_if_napping(Driver& driver) {
  driver.wake_if_napping();
}

}  // namespace sagebus::detail
