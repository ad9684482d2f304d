#include "loop/broker.hpp"

#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <system_error>

#include <spdlog/spdlog.h>

#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"
#include "sagebus/wire/kinds.hpp"
#include "sagebus/wire/socket.hpp"

namespace sagebus::broker {

namespace {

constexpr std::size_t kReceiveBatch = 256;

constexpr std::chrono::milliseconds kMaxPollWait{1000};
// A pause of the loop itself longer than this does not count against client leases.
constexpr std::chrono::milliseconds kStall{50};
// At shutdown, how long libzmq may keep flushing the last answers and GOODBYEs.
constexpr int kShutdownLingerMs = 500;

std::string random_session() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (std::uint64_t v = gen(); s.size() < 16; v >>= 4)
    s += kHex[v & 0xf];
  return s;
}

std::string printable(std::string_view rid) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (const char c : rid) {
    s += kHex[(static_cast<unsigned char>(c) >> 4) & 0xf];
    s += kHex[static_cast<unsigned char>(c) & 0xf];
  }
  return s;
}

}  // namespace

Broker::Broker(BrokerConfig config)
    : config_(std::move(config)),
      calls_(config_.max_calls, first_dispatch_id(std::chrono::system_clock::now())),
      queues_(QueueLimits{.max_depth = config_.max_queue_depth,
                          .max_queues = config_.max_queues,
                          .max_waiting = config_.max_queue_waiters,
                          .max_unacked = config_.max_unacked},
              config_.queue_topics) {
  identity_.version = SAGEBUS_VERSION;
  identity_.session = random_session();
  router_ = zmq::socket_t(context_, zmq::socket_type::router);
  router_.set(zmq::sockopt::linger, 0);
  router_.set(zmq::sockopt::router_mandatory, 1);
  router_.set(zmq::sockopt::sndhwm, config_.peer_queue);
  router_.set(zmq::sockopt::rcvhwm, config_.peer_queue);
  // Above max-payload and max-header, so that a message a little over them is read and
  // answered; a frame beyond even this makes libzmq drop its sender's connection.
  router_.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(frame_limit(config_)));
  // A listen backlog as long as the kernel allows (net.core.somaxconn caps it), for
  // clients that all connect at once, as after a restart: beyond ZeroMQ's default of 100,
  // SYNs are dropped and each of those clients waits a second or more to try again.
  router_.set(zmq::sockopt::backlog, 65535);
  if (!config_.auth.empty()) {
    // Before the first bind: no connection is ever accepted unauthenticated.
    auth_.emplace(read_auth_config(config_.auth));
    zap_.emplace(context_);
    zap_fd_ = zap_->fd();
    if (const auto unknown = auth_->unknown_endpoint(config_.endpoints))
      throw std::runtime_error(config_.auth + ": [broker.endpoint-keys] gives a key to " +
                               *unknown +
                               ", which is not an endpoint of this broker; spell it as in the "
                               "broker's endpoint configuration, or remove it");
    ZapHandler::secure(router_, *auth_);
    spdlog::info("authenticating clients with CURVE: {} principals in {}",
                 auth_->principals().size(), config_.auth);
  } else if (config_.allow_anonymous) {
    spdlog::warn(
        "no auth, and allow-anonymous: anyone who reaches an endpoint may act as any "
        "service (docs/security.md)");
  }
  // Before the first bind: a client that can connect finds its queues as they were.
  open_store_();
  monitor_.emplace(context_, router_);
  router_fd_ = router_.get(zmq::sockopt::fd);
  monitor_fd_ = monitor_->socket().get(zmq::sockopt::fd);
  for (const auto& endpoint : config_.endpoints) {
    // libzmq copies the socket's options into the listener at bind(), so each endpoint
    // keeps the key set here, whatever is set for the next one.
    const CurveKeys* keys = auth_ ? &auth_->broker_keys_for(endpoint) : nullptr;
    if (keys != nullptr) router_.set(zmq::sockopt::curve_secretkey, keys->secret_key);
    try {
      router_.bind(endpoint);
    } catch (const zmq::error_t& e) {
      throw BindError(endpoint, e.num(), e.what());
    }
    identity_.endpoints.push_back(router_.get(zmq::sockopt::last_endpoint));
    if (keys != nullptr) {
      served_keys_.emplace(endpoint, keys->public_key);
      spdlog::info("listening on {} (CURVE, broker key {})", identity_.endpoints.back(),
                   keys->public_key);
    } else {
      spdlog::info("listening on {}", identity_.endpoints.back());
    }
  }
  start_http_();
  identity_.started = Clock::now();
  next_lease_check_ = identity_.started;
}

Broker::~Broker() {
  http_.reset();
  http_control_.reset();
  monitor_.reset();
  router_.close();
}

void Broker::run(Requests& requests, const Reloader& reloader) {
  requests_ = &requests;
  spdlog::info(
      "sage-busd {} running (session {}, heartbeat {} ms, idle heartbeat {} ms, liveness {}, "
      "spin {} µs)",
      identity_.version, identity_.session, config_.heartbeat_ms, config_.idle_heartbeat(),
      config_.liveness, config_.spin_us);
  if (config_.spin_us > 0 && !spin_.knows_load())
    spdlog::warn(
        "spin-us is {} but /proc/loadavg cannot be read, so the broker cannot tell "
        "an idle CPU from a busy one and will not spin",
        config_.spin_us);
  for (;;) {
    now_ = Clock::now();
    const int stops = requests.stop.load(std::memory_order_relaxed);
    if (stops > 0 && !draining_) start_drain_(requests.stop_signal.load());
    if (draining_ && drain_over_(stops > 1)) break;
    if (requests.reload.exchange(false, std::memory_order_relaxed)) reload_(reloader);
    tick_();
  }
  shutdown_();
}

void Broker::start_http_() {
  if (config_.http == "off") return;
  const std::string control = "inproc://sage-busd-http-" + identity_.session;
  http_control_.emplace(context_, control);
  try {
    http_ = std::make_unique<HttpEndpoint>(context_, control, config_.http);
    http_fd_ = http_control_->socket().get(zmq::sockopt::fd);
  } catch (const std::exception& e) {
    http_control_.reset();
    const std::string advice =
        "choose another --http HOST:PORT (http in the config file), or --http off";
    if (config_.http_chosen) throw std::runtime_error(std::string(e.what()) + "; " + advice);
    // The default address may be taken by another broker on this host; the bus still runs.
    spdlog::warn("{}: /metrics and /healthz are off; {}", e.what(), advice);
    return;
  }
  spdlog::info("serving /metrics and /healthz on http://{}", config_.http);
}

std::string Broker::answer_http_(const std::string& what, int& status) {
  if (what == "healthz") {
    status = draining_ ? 503 : 200;
    return draining_ ? "draining" : "ok";
  }
  if (what == "metrics") return prometheus_text(admin_sources_(), draining_);
  status = 404;
  return "no such page: " + what;
}

AdminSources Broker::admin_sources_() const {
  return AdminSources{identity_, config_, registry_, calls_,       metrics_, subscriptions_,
                      topics_,   queues_, held_,     store_.get(), now_,     draining_};
}

// ---------------------------------------------------------------------------------------
// The tick

void Broker::tick_() {
  now_ = Clock::now();
  debug_ = spdlog::should_log(spdlog::level::debug);
  // One ::poll() on the sockets' fds (sagebus/wire/socket.hpp, "Waiting"). The ROUTER is
  // also sent on, so ZMQ_EVENTS says whether it can be read before waiting, unless
  // nothing was sent since it last had nothing to read; the monitor and the HTTP control
  // are read whenever their fds say so, until they have nothing.
  const bool can_read = !router_quiet_ && (wire::events(router_) & ZMQ_POLLIN) != 0;
  router_quiet_ = !can_read;
  // poll() skips an fd of -1: no HTTP endpoint, no auth, no store.
  pollfd fds[] = {{router_fd_, POLLIN, 0},
                  {monitor_fd_, POLLIN, 0},
                  {http_fd_, POLLIN, 0},
                  {zap_fd_, POLLIN, 0},
                  {store_fd_, POLLIN, 0}};
  auto timeout = can_read ? std::chrono::milliseconds(0) : poll_timeout_();
  // Shortly after a message, while a CPU is idle, look without sleeping (idle_spin.hpp).
  const bool spin =
      timeout.count() > 0 && spin_.may_spin(now_, std::chrono::microseconds(config_.spin_us));
  if (spin) timeout = std::chrono::milliseconds(0);
  if (::poll(fds, std::size(fds), static_cast<int>(timeout.count())) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
    return;  // a signal: the caller checks its stop flag
  }
  // Waking much later than asked, the broker was not running (SIGSTOP, no CPU); clients
  // could not be heard meanwhile, and their heartbeats are still waiting to be read.
  const TimePoint asked = now_ + timeout;
  now_ = Clock::now();
  if (now_ - asked > kStall) registry_.extend_leases(now_ - asked);
  const TimePoint woke = now_;
  // Connections waiting to be let in, before anything they could send.
  if (zap_ && (zap_due_ || (fds[3].revents & POLLIN) != 0)) {
    metrics_.keys_refused += zap_->serve(*auth_, now_);
    zap_due_ = false;
  }
  // Messages before connection events, so that what a peer sent just before closing
  // (a reply, a GOODBYE) is handled before its connection is declared lost.
  if (can_read || (fds[0].revents & POLLIN) != 0)
    receive_batch_();
  else if (spin)
    ::sched_yield();  // nothing yet: whoever waits for this CPU goes first
  if (http_control_ && (fds[2].revents & POLLIN) != 0)
    http_control_->serve(
        [this](const std::string& what, int& status) { return answer_http_(what, status); });
  if (monitor_due_ || (fds[1].revents & POLLIN) != 0) handle_connection_events_();
  monitor_due_ = false;
  // What the store committed: answers that waited for it, items now to be served.
  if ((fds[4].revents & POLLIN) != 0) collect_store_();
  after_messages_();
  if (now_ >= next_lease_check_) {
    check_leases_();
    apply_removals_();
  }
  // Likewise for a tick that took long: what came in meanwhile has not been read yet.
  if (const auto busy = Clock::now() - woke; busy > kStall) registry_.extend_leases(busy);
}

void Broker::after_messages_() {
  apply_removals_();
  run_deadlines_();
  apply_removals_();
  run_queue_deadlines_();
  apply_removals_();
  outbox_.flush();  // what the deadlines answered, what the queues' deadlines published
}

void Broker::handle_for_test(Frames& frames) {
  // As receive_batch_ reads them.
  truncated_ = frames.size() > kKeptFrames;
  if (truncated_) frames.resize(kKeptFrames);
  now_ = Clock::now();
  debug_ = spdlog::should_log(spdlog::level::debug);
  handle_message_(frames);
  apply_removals_();
  handle_connection_events_();
  after_messages_();
}

std::chrono::milliseconds Broker::poll_timeout_() {
  TimePoint until = std::min(now_ + kMaxPollWait, next_lease_check_);
  if (draining_) until = std::min(until, drain_deadline_);
  if (auto deadline = calls_.next_deadline()) until = std::min(until, *deadline);
  if (auto deadline = queues_.next_deadline()) until = std::min(until, *deadline);
  if (until <= now_) return std::chrono::milliseconds(0);
  // Rounded up: waking a little late is fine, waking early spins.
  return std::chrono::ceil<std::chrono::milliseconds>(until - now_);
}

void Broker::receive_batch_() {
  for (std::size_t n = 0; n < kReceiveBatch; ++n) {
    frames_.clear();
    const auto dropped =
        wire::receive_message(router_, frames_, zmq::recv_flags::dontwait, kKeptFrames);
    if (!dropped) {
      router_quiet_ = true;
      break;
    }
    truncated_ = *dropped != 0;
    router_quiet_ = false;
    spin_.received(now_);
    try {
      handle_message_(frames_);
    } catch (const std::exception& e) {
      // A bug, not the peer's fault; the loop and every other peer carry on.
      spdlog::error("internal error handling {} from {}: {}", wire::kind_name(in_.kind()),
                    printable(frames_.front().to_string()), e.what());
    }
    apply_removals_();
  }
  // The round ends with what came in at once: its events and replies go now
  // (outbox.hpp).
  outbox_.flush();
}

void Broker::handle_message_(Frames& frames, bool in_batch) {
  if (frames.size() < 2) {
    ++metrics_.malformed;
    return;
  }
  // The sender's routing id, as a view of its frame: a known client's is found by it once,
  // and handlers get the registry's copy; only HELLOs and unknown peers need a string.
  const std::string_view rid(static_cast<const char*>(frames[0].data()), frames[0].size());
  switch (wire::decode(frames[1], in_, config_.max_header)) {
    case wire::DecodeResult::ok:
      break;
    case wire::DecodeResult::too_large:
      // Not parsed; but a client's request is answered by the id its first bytes carry,
      // so that its caller hears why at once instead of at its deadline.
      ++metrics_.malformed;
      metrics_.refused(Limit::max_header);
      spdlog::debug("refused a header of {} bytes from {}: over max-header ({} bytes)",
                    frames[1].size(), printable(rid), config_.max_header);
      if (const auto head = wire::peek_kind_and_id(frames[1]);
          head && wire::sent_by_client(wire::kind_info(head->kind)) &&
          wire::may_be_answered_by_reply(wire::kind_info(head->kind)) &&
          registry_.client(rid) != nullptr)
        reply_(RoutingId(rid), head->id, wire::INVALID_ARGUMENT,
               "a header of " + std::to_string(frames[1].size()) +
                   " bytes is over sage-busd's max-header of " +
                   std::to_string(config_.max_header) +
                   " bytes; send less in headers, routing_key or traceparent, or raise max-header");
      return;
    case wire::DecodeResult::malformed:
      // No trustworthy id to answer.
      ++metrics_.malformed;
      spdlog::debug("dropped a malformed header ({} bytes) from {}", frames[1].size(),
                    printable(rid));
      return;
    case wire::DecodeResult::bad_version:
      ++metrics_.malformed;
      reply_(RoutingId(rid), in_.id(), wire::INVALID_ARGUMENT,
             "protocol version " + std::to_string(in_.version()) +
                 " is not supported; this broker speaks version " +
                 std::to_string(wire::kProtocolVersion));
      return;
  }

  const wire::Kind kind = in_.kind();
  if (in_batch && !wire::kind_info(kind).batchable) {
    ++metrics_.malformed;
    spdlog::debug("dropped a {} in a BATCH from {}: it must come alone", wire::kind_name(kind),
                  printable(rid));
    return;
  }
  const KindRow& row = kind_row_(kind);
  // A HELLO carries no payload and is taken while draining: nothing below refuses it.
  if (row.admit == Admit::stranger) return on_hello_(RoutingId(rid), frames[1]);
  ClientInfo* client = registry_.client(rid);
  if (client == nullptr) {
    on_unknown_peer_(RoutingId(rid), row);
    return;
  }
  if (auth_ && !in_batch && !from_its_principal_(*client, frames[1])) return;
  client->last_seen = now_;  // every message renews the lease, the short one but for an
  client->idle = false;      // idle HEARTBEAT (on_heartbeat_)
  // Stays put until this message is handled: clients are removed after it (removals_).
  const RoutingId& from = client->rid;
  if (row.admit == Admit::never) {
    reply_(from, in_.id(), wire::INVALID_ARGUMENT,
           wire::Kind_IsValid(kind) ? "clients may not send " + std::string(wire::kind_name(kind)) +
                                          " (kind " + std::to_string(static_cast<int>(kind)) + ")"
                                    : "kind " + std::to_string(static_cast<int>(kind)) +
                                          " is not a message kind of protocol version " +
                                          std::to_string(wire::kProtocolVersion));
    return;
  }
  if (refuse_payload_(from, frames, row)) return;
  if (draining_ && refuse_while_draining_(from, row)) return;
  if (auth_ && row.guard != nullptr && refuse_unpermitted_(*client, row)) return;
  (this->*row.handler)(*client, frames);
}

void Broker::on_batch_(ClientInfo& from, Frames& frames) {
  // One payload frame of records (sagebus/wire/batch.hpp). A batch is not answered: what
  // cannot be read of it is dropped and counted, as a malformed message would be.
  if (frames.size() != 3 || truncated_) {
    ++metrics_.malformed;
    spdlog::debug("dropped a BATCH from '{}' with {} payload frames: it carries one", from.name,
                  frames.size() - 2);
    return;
  }
  ++metrics_.batches;
  const zmq::message_t batch = std::move(frames[2]);
  wire::BatchReader reader(batch);
  wire::MessageRecord record;
  // Each message it holds, as if it had come alone: the sender's routing id, the header
  // frame and one payload frame.
  record_frames_.resize(3);
  record_frames_[0].rebuild(from.rid.data(), from.rid.size());
  for (std::size_t n = 0; reader.next(record); ++n) {
    if (n == wire::kMaxBatchRecords) {
      ++metrics_.malformed;
      spdlog::debug(
          "dropped what follows record {} of a BATCH from '{}': a batch holds at most "
          "that many",
          n, from.name);
      return;
    }
    record_frames_[1].rebuild(record.header.data(), record.header.size());
    record_frames_[2].rebuild(record.payload.data(), record.payload.size());
    handle_message_(record_frames_, true);
  }
  if (reader.malformed()) {
    ++metrics_.malformed;
    spdlog::debug(
        "dropped the rest of a BATCH from '{}': a record is cut short or has a varint "
        "over 10 bytes",
        from.name);
  }
}

bool Broker::refuse_payload_(const RoutingId& from, const Frames& frames, const KindRow& row) {
  if (row.payload != PayloadLimit::on_arrival) return false;
  std::uint64_t bytes = 0;
  for (std::size_t i = 2; i < frames.size(); ++i)
    bytes += frames[i].size();
  std::string why;
  if (truncated_)
    why = "the message has more than " + std::to_string(wire::kMaxPayloadFrames) +
          " payload frames, the most one may carry; send the payload in one frame";
  else if (bytes > config_.max_payload)
    why = "the payload of " + std::to_string(bytes) +
          " bytes is over the broker's max-payload of " + std::to_string(config_.max_payload) +
          " bytes; send less, or raise max-payload";
  else
    return false;
  metrics_.refused(Limit::max_payload);
  spdlog::debug("refused a {} from {}: {}", wire::kind_name(in_.kind()), printable(from), why);
  refuse_(from, wire::INVALID_ARGUMENT, why);
  return true;
}

// A refusal goes in the round's batch of a connection that reads them: a client refused
// ten thousand times in a burst is sent a few dozen messages, not ten thousand.
void Broker::refuse_(const RoutingId& from, wire::Status status, std::string_view why) {
  const wire::Answer answer = wire::kind_info(in_.kind()).answer;
  if (answer == wire::Answer::reply ||
      (answer == wire::Answer::reply_if_confirmed && in_.confirm())) {
    const ClientInfo* client = registry_.client(from);
    reply_head_(in_.id(), status, why);
    outbox_.reply(from, client != nullptr && client->batches, head_.bytes(), {}, status);
  } else if (answer == wire::Answer::welcome)  // a HELLO refused is answered by a REPLY
    reply_(from, in_.id(), status, why);
}

void Broker::handle_connection_events_() {
  for (const auto& event : monitor_->drain()) {
    if (event.kind != ConnectionEvent::Kind::disconnected) continue;
    ++metrics_.disconnects;
    if (auto rid = registry_.client_by_fd(event.fd)) {
      // Resolved now, while the fd still names this connection; see on_hello_.
      registry_.forget_fd(event.fd);
      schedule_removal_(*rid, "connection closed");
    }
  }
}

void Broker::check_leases_() {
  for (const auto& rid : registry_.expired(now_, config_.lease(false), config_.lease(true))) {
    ++metrics_.leases_expired;
    const bool idle = registry_.client(rid)->idle;
    schedule_removal_(rid, std::string("lease expired (silent for more than ") +
                               std::to_string(config_.lease(idle).count()) + " ms" +
                               (idle ? ", the idle lease)" : ")"));
  }
  next_lease_check_ =
      now_ + std::chrono::milliseconds(std::max<std::uint32_t>(config_.heartbeat_ms / 2, 10));
}

void Broker::shutdown_() {
  spdlog::info(
      "shutting down: answering {} pending calls UNAVAILABLE, saying GOODBYE to {} "
      "clients",
      calls_.size(), registry_.clients().size());
  calls_.for_each([&](Call& call) {
    // A gather's parts are not answered: their gather is (part_outcome_ would erase it).
    if (!call.caller_lost && call.parent == 0)
      answer_caller_(call, wire::UNAVAILABLE, shutdown_reason_);
  });
  for (const auto& [rid, client] : registry_.clients()) {
    out_.Clear();
    out_.set_kind(wire::GOODBYE);
    out_.set_status(wire::UNAVAILABLE);
    out_.set_message("broker shutting down");
    outbox_.send(rid, wire::encode(out_));
  }
  outbox_.flush();
  router_.set(zmq::sockopt::linger, kShutdownLingerMs);
  removals_.clear();
}

// ---------------------------------------------------------------------------------------
// Connections and registrations

void Broker::on_hello_(const RoutingId& from, const zmq::message_t& header_frame) {
  // The fd of the connection this HELLO came in on. libzmq 4.3.4 stamps it on every frame
  // of a message read from the wire (checked: the routing-id frame carries it too); the
  // header frame is the one certain to have been read from the wire.
  const int fd = zmq_msg_get(header_frame.handle(), ZMQ_SRCFD);

  // fd-reuse race: the previous owner of this fd may have closed a moment ago, and the
  // kernel may have handed the same fd number to this new connection. libzmq queues the
  // DISCONNECTED event of the old connection on the monitor before it closes the old fd,
  // so before this connection could even be accepted, let alone its HELLO read. Draining
  // the monitor here, before recording the fd, therefore applies that stale DISCONNECTED
  // to the old client, and it can never later be taken for this new one.
  handle_connection_events_();
  apply_removals_();

  if (auto error = wire::check_name("connection name", in_.hello().name())) {
    reply_(from, in_.id(), wire::INVALID_ARGUMENT, *error);
    return;
  }
  const wire::Hello hello = in_.hello();  // in_ is reused by what a takeover sets off
  const std::uint64_t hello_id = in_.id();
  const Principal* principal = nullptr;
  std::string key;
  if (auth_) {
    principal = principal_of_(header_frame, key);
    if (principal == nullptr) {
      ++metrics_.keys_refused;
      reply_(from, hello_id, wire::UNAUTHENTICATED,
             "this connection's key is no longer a key of any principal in the broker's auth "
             "rules; ask its operator to add it");
      return;
    }
    if (!principal->rules.allows(Verb::name, hello.name())) {
      deny_(from, hello.name(), *principal, Verb::name, hello.name());
      return;
    }
  }
  if (registry_.client(from) == nullptr && registry_.clients().size() >= config_.max_clients) {
    metrics_.refused(Limit::max_clients);
    spdlog::log(refusal_log_limiter_.take(now_) ? spdlog::level::warn : spdlog::level::debug,
                "refused a HELLO from '{}': {} clients connected, the max-clients limit",
                hello.name(), registry_.clients().size());
    reply_(from, hello_id, wire::OVERLOADED,
           "the broker serves " + std::to_string(registry_.clients().size()) +
               " connections, its max-clients limit; try again later or raise max-clients");
    return;
  }
  if (!claim_name_(from)) return;

  if (fd >= 0) {
    // Two open connections cannot share an fd: a different client still mapped to it
    // lost its connection without our hearing of it.
    if (auto owner = registry_.client_by_fd(fd); owner && *owner != from) {
      registry_.forget_fd(fd);
      remove_client_(*owner, "connection closed (its fd was reused)");
    }
  }

  const bool created = registry_.hello(from, hello, fd, now_);
  ClientInfo& c = *registry_.client(from);
  if (principal != nullptr) {
    c.principal = principal;
    c.principal_name = principal->name;
    c.key = std::move(key);
  }
  if (created)
    spdlog::info("client connected: '{}' (instance {}, sdk {}, fd {}{}{})", c.name, c.instance_id,
                 c.sdk_version, fd, principal != nullptr ? ", principal " : "", c.principal_name);
  else
    spdlog::debug("client '{}' said HELLO again; registrations kept", c.name);

  out_.Clear();
  out_.set_kind(wire::WELCOME);
  out_.set_id(hello_id);
  wire::Welcome* w = out_.mutable_welcome();
  w->set_broker_session(identity_.session);
  w->set_heartbeat_ms(config_.heartbeat_ms);
  w->set_liveness(config_.liveness);
  if (config_.idle_offered()) w->set_idle_heartbeat_ms(config_.idle_heartbeat_ms);
  w->set_max_payload(config_.max_payload);
  w->set_max_header(config_.max_header);
  w->set_broker_version(identity_.version);
  w->set_publish_batches(true);
  w->set_batches(true);
  w->set_host(wire::host_id());
  if (outbox_.send(from, wire::encode(out_)) == Sent::ok) release_held_(c);
}

bool Broker::claim_name_(const RoutingId& from) {
  const wire::Hello& hello = in_.hello();
  const auto owner = registry_.client_by_name(hello.name());
  if (!owner || *owner == from) return true;
  const ClientInfo& old = *registry_.client(*owner);
  const std::string name = old.name;
  if (!hello.takeover()) {
    ++metrics_.names_refused;
    // A refused client may retry; the counter has them all, the log the first few.
    spdlog::log(refusal_log_limiter_.take(now_) ? spdlog::level::info : spdlog::level::debug,
                "refused a HELLO (instance {}) naming '{}': live instance {} has that name",
                hello.instance_id(), name, old.instance_id);
    reply_(from, in_.id(), wire::PERMISSION_DENIED,
           "connection name '" + name + "' is taken by a live connection (instance " +
               old.instance_id +
               "); choose another name, or pass takeover to replace that connection");
    return false;
  }
  ++metrics_.takeovers;
  spdlog::info("connection '{}' (instance {}) taken over by instance {}", name, old.instance_id,
               hello.instance_id());
  out_.Clear();
  out_.set_kind(wire::GOODBYE);
  // PERMISSION_DENIED tells the SDK not to say HELLO again: the name is no longer its.
  out_.set_status(wire::PERMISSION_DENIED);
  out_.set_message("replaced by a new connection with the same name");
  outbox_.send(*owner, wire::encode(out_));
  remove_client_(*owner, "replaced by a new connection with the same name");
  return true;
}

void Broker::on_heartbeat_(ClientInfo& client, Frames&) {
  // The client's word is taken: its SDK says idle only when nothing waits on its loss
  // (no service, subscription or request), and refusing it would expire a live client.
  client.idle = in_.idle();
  if (in_.no_answer()) return;  // the lease is renewed; the client knows the broker lives
  head_.start(wire::HEARTBEAT).varint(wire::Header::kIdFieldNumber, in_.id());
  outbox_.send(client.rid, head_.frame());
}

void Broker::on_goodbye_(ClientInfo& sender, Frames&) {
  std::string why = "said goodbye";
  if (!in_.message().empty()) why += " (" + in_.message().substr(0, 200) + ")";
  schedule_removal_(sender.rid, std::move(why));
}

void Broker::on_register_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  const RegisterResult r = registry_.register_instance(from, in_.service(), in_.registration());
  reply_(from, in_.id(), r.status, r.message);
  if (r.status != wire::OK) {
    spdlog::info("refused registration of '{}' by '{}': {}: {}", in_.service(), sender.name,
                 wire::status_name(r.status), r.message);
    return;
  }
  const auto& reg = in_.registration();
  auto log = r.created ? spdlog::level::info : spdlog::level::debug;
  spdlog::log(log, "instance {} of '{}' {}: client '{}', {} methods, max_inflight {}, {}",
              sender.instance_id, in_.service(), r.created ? "registered" : "re-registered",
              sender.name, reg.methods_size(), reg.max_inflight(),
              wire::strategy_name(reg.strategy()));
  pump_(in_.service());
}

void Broker::on_unregister_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  const std::string service = in_.service();
  if (auto error = wire::check_name("service name", service)) {
    reply_(from, in_.id(), wire::INVALID_ARGUMENT, *error);
    return;
  }
  Service* s = registry_.service(service);
  Instance* inst = s == nullptr ? nullptr : s->find(sender.handle);
  const std::uint32_t in_flight = inst == nullptr ? 0 : inst->in_flight;
  const bool was = registry_.unregister_instance(from, service);
  // Idempotent: not being an instance is what was asked for.
  reply_(from, in_.id(), wire::OK, was ? "" : "was not registered");
  if (was)
    spdlog::info("instance of '{}' by '{}' unregistered: {}", service, sender.name,
                 in_flight == 0 ? "left" : "draining " + std::to_string(in_flight) + " calls");
  pump_(service);
}

void Broker::on_unknown_peer_(const RoutingId& from, const KindRow& row) {
  ++metrics_.hello_required;
  if (row.stranger_refusal.empty()) return;
  if (!hello_limiter_.take(now_)) return;  // counted above, dropped here
  out_.Clear();
  out_.set_kind(wire::HELLO_REQUIRED);
  out_.set_id(in_.id());
  out_.set_message(std::string(row.stranger_refusal));
  outbox_.send(from, wire::encode(out_));
}

void Broker::schedule_removal_(const RoutingId& rid, std::string why) {
  if (registry_.client(rid) == nullptr) return;
  // Never chosen again, even before the removal runs.
  registry_.drain_client(rid);
  removals_.emplace_back(rid, std::move(why));
}

void Broker::apply_removals_() {
  // Removing one client may find another gone (a send to its caller fails), so loop.
  while (!removals_.empty()) {
    auto batch = std::move(removals_);
    removals_.clear();
    for (const auto& [rid, why] : batch)
      remove_client_(rid, why);
  }
}

void Broker::remove_client_(const RoutingId& rid, const std::string& why) {
  const ClientInfo* c = registry_.client(rid);
  if (c == nullptr) return;  // already removed (scheduled twice)
  const std::string name = c->name;
  const std::string instance_id = c->instance_id;

  const ClientHandle handle = c->handle;

  std::vector<CallId> on_it;  // calls and sends dispatched to it
  calls_.for_each([&](const Call& call) {
    if (call.state == CallState::dispatched && call.instance == handle) on_it.push_back(call.id);
  });
  outbox_.flush_events();  // batches point at subscriptions
  subscriptions_.remove_client(rid);
  QueueEffects fx;
  queues_.remove_client(rid, fx);
  const std::vector<std::string> services = registry_.remove_client(rid);
  spdlog::info("client left: '{}' (instance {}): {}", name, instance_id, why);
  for (const auto& service : services)
    spdlog::info("instance {} of '{}' left: {}; {} calls in flight on it", instance_id, service,
                 why, std::count_if(on_it.begin(), on_it.end(), [&](CallId id) {
                   const Call* call = calls_.find(id);
                   return call != nullptr && call->kind == CallKind::request &&
                          call->service == service;
                 }));
  // Its own calls and sends next, before those it held are settled, so that one it made to
  // itself is only dropped; its instances are gone, so that none is given a call that
  // waited while they are cancelled.
  forget_caller_(handle);
  for (const CallId id : on_it) {
    const Call* call = calls_.find(id);
    if (call == nullptr) continue;
    if (call->kind == CallKind::send) {
      peer_lost_(id, why);
      continue;
    }
    instance_lost_(id, "instance " + instance_id + " ('" + name + "') of service '" +
                           call->service + "' was lost mid-call: " + why);
  }
  for (const auto& service : services)
    pump_(service);
  apply_(fx);
}

// ---------------------------------------------------------------------------------------
// Answering

Sent Broker::reply_(const RoutingId& to, std::uint64_t id, wire::Status status,
                    std::string_view message) {
  reply_head_(id, status, message);
  metrics_.count_status(status);
  return outbox_.send(to, head_.frame());
}

Sent Broker::answer_(const RoutingId& to, std::uint64_t id, wire::Status status,
                     std::string_view message, std::uint64_t count, std::uint64_t tag,
                     std::span<zmq::message_t> payload) {
  reply_head_(id, status, message, nullptr, count, tag);
  const Sent sent = outbox_.send(to, head_.frame(), payload);
  metrics_.count_outcome(status, sent == Sent::ok);
  return sent;
}

void Broker::reply_head_(std::uint64_t id, wire::Status status, std::string_view message,
                         const HeaderMap* headers, std::uint64_t count, std::uint64_t tag) {
  head_.start(wire::REPLY)
      .varint(wire::Header::kIdFieldNumber, id)
      .enumeration(wire::Header::kStatusFieldNumber, status)
      .string(wire::Header::kMessageFieldNumber, message);
  if (headers != nullptr) head_.map(wire::Header::kHeadersFieldNumber, *headers);
  head_.varint(wire::Header::kCountFieldNumber, count).varint(wire::Header::kTagFieldNumber, tag);
}

bool Broker::answer_caller_(Call& call, wire::Status status, std::string_view message,
                            std::span<zmq::message_t> payload, const HeaderMap* headers,
                            std::uint64_t count) {
  if (!calls_.claim_outcome(call)) return false;
  if (call.parent != 0) {  // a part of a gather: its outcome is the gather's
    part_outcome_(call, status, message, payload, headers);
    return true;
  }
  if (call.stats != nullptr)
    call.stats->finish(status,
                       std::chrono::duration_cast<std::chrono::microseconds>(now_ - call.accepted));
  // Its caller is known while the outcome is unclaimed: removing a client claims the
  // outcomes of its calls (forget_caller_).
  const ClientInfo* caller = registry_.client(call.caller);
  // Guarded: printable() and status_name() would run on every outcome otherwise.
  if (debug_) {
    const std::string from = caller != nullptr ? printable(caller->rid) : "a client that left";
    if (call.kind == CallKind::send)
      spdlog::debug("send #{} to '{}' from {} ends {}{}{}{}", call.id, call.peer, from,
                    wire::status_name(status), message.empty() ? "" : ": ", message,
                    trace_note_(call));
    else
      spdlog::debug("call #{} {}.{} from {} ends {}{}{}{}", call.id, call.service, call.method,
                    from, wire::status_name(status), message.empty() ? "" : ": ", message,
                    trace_note_(call));
  }
  if (caller == nullptr) {
    metrics_.count_outcome(status, false);
    return true;
  }
  reply_head_(call.caller_id, status, message, headers, count);
  outbox_.reply(caller->rid, caller->batches, head_.bytes(), payload, status);
  return true;
}

}  // namespace sagebus::broker
