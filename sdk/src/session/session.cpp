// The session's turn: what it is fed, how a message reaches its handler, the timers, and
// the one way out to the Port.
#include "session.hpp"

#include <algorithm>
#include <array>

#include "../service_core.hpp"
#include "../subscription_core.hpp"
#include "protocol.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"
#include "sagebus/wire/kinds.hpp"

namespace sagebus::detail {

using namespace protocol;

Session::Session(const ClientOptions& options, Port& port, SessionHost& host, Clock::time_point now)
    : options_(options),
      endpoint_(options.endpoint),
      curve_(!options.server_key.empty()),
      port_(port),
      host_(host),
      now_(now),
      heartbeat_(kDefaultHeartbeatMs),
      liveness_(kDefaultLiveness),
      last_heard_(now),
      watch_from_(now),
      last_heartbeat_(now),
      last_sent_(now),
      last_ran_(now),
      next_heartbeat_(now),
      hello_sent_at_(now - kHelloRetry),
      next_id_(first_own_id()) {
  hello_.set_name(options.name);
  hello_.set_instance_id(random_hex(8));
  hello_.set_sdk_version(SAGEBUS_VERSION);
  hello_.set_takeover(options.takeover);
  hello_.set_event_batches(true);  // on_event_batch_
  hello_.set_batches(true);        // on_batch_
  hello_.set_host(wire::host_id());
  wire::HeaderWriter batch_header;
  batch_header_ = batch_header.start(wire::BATCH).bytes();
}

// --- input -------------------------------------------------------------------------------

void Session::begin_turn(Clock::time_point now) {
  now_ = now;
  check_stall_();
}

void Session::on_message(const zmq::message_t& header, std::vector<zmq::message_t>& frames) {
  if (wire::decode(header, in_) != wire::DecodeResult::ok) return;  // not ours to fix
  last_heard_ = now_;
  watch_from_ = now_;
  frames_.swap(frames);
  dispatch_();
  frames_.swap(frames);  // the driver's vector keeps its storage for the next message
}

void Session::end_of_input() {
  for (const auto& core : to_flush_)
    core->flush();  // hands on what on_event_() took, once per batch
  to_flush_.clear();
  for (const auto& control : chunks_to_flush_) {
    control->unflushed = false;
    control->flush();  // hands on what on_chunk_() gave, once per batch
  }
  chunks_to_flush_.clear();
}

void Session::start(command::Start& start, bool more) {
  handle_(start);
  if (!more) (void)flush_gathered_();
}

void Session::handle(command::Command& command) {
  std::visit([this](auto& c) { handle_(c); }, command);
}

void Session::end_turn(Clock::time_point now) {
  // What the commands and messages of this turn answered and asked.
  (void)flush_gathered_();
  // Timers first: a due heartbeat goes out ahead of queued publishes, or a publisher that
  // keeps the transport full would never be heard and lose its own lease.
  run_timers_();
  flush_held_out_();
  flush_outbox_();
  flush_waiting_requests_();
  (void)flush_gathered_();
  last_ran_ = now;
}

// The session's handler of each kind a broker sends, by kind; the facts about each kind
// (who sends it, whether it carries a payload or travels in a BATCH) are the wire's
// (sagebus/wire/kinds.hpp).
constexpr std::array<Session::KindRow, wire::Kind_ARRAYSIZE> Session::kind_rows_() {
  std::array<KindRow, wire::Kind_ARRAYSIZE> rows{};
  rows[wire::WELCOME] = {&Session::on_welcome_, true};
  rows[wire::HELLO_REQUIRED] = {&Session::on_hello_required_, true};
  rows[wire::HEARTBEAT] = {&Session::on_heartbeat_, true};
  rows[wire::GOODBYE] = {&Session::on_goodbye_, true};
  rows[wire::REQUEST] = {&Session::on_request_, true};
  rows[wire::REPLY] = {&Session::on_reply_message_, true};
  rows[wire::EVENT] = {&Session::on_event_, true};
  rows[wire::DELIVER] = {&Session::on_deliver_, true};
  rows[wire::EVENT_BATCH] = {&Session::on_event_batch_, true};
  rows[wire::BATCH] = {&Session::on_batch_, true};
  rows[wire::CREDIT] = {&Session::on_credit_, true};
  rows[wire::CANCEL] = {&Session::on_cancel_, true};
  rows[wire::CHUNK] = {&Session::on_chunk_, true};
  return rows;
}

namespace {

// A handler for every kind a broker sends, and for nothing else.
template <class Rows>
constexpr bool handles_what_brokers_send(const Rows& rows) {
  for (std::size_t k = 0; k < rows.size(); ++k)
    if (wire::sent_by_broker(wire::kind_info(static_cast<wire::Kind>(k))) != rows[k].handled)
      return false;
  return true;
}

}  // namespace

// The message in in_, to its handler by kind. A kind no broker sends is dropped: nothing
// to answer, and not ours to fix.
void Session::dispatch_() {
  static constexpr auto kRows = kind_rows_();
  static_assert(handles_what_brokers_send(kRows));
  const KindRow& row = kRows[static_cast<std::size_t>(wire::kind_info(in_.kind()).kind)];
  if (row.handled) (this->*row.handler)();
}

// --- timers ------------------------------------------------------------------------------

Clock::time_point Session::next_wakeup() const {
  auto next = now_ + milliseconds(1000);
  if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
  if (link_ == Link::ready) {
    if (!heartbeat_due_) next = std::min(next, next_heartbeat_);  // else room wakes us
    next = std::min(next, watch_from_ + lease_());
  } else if (tcp_up_ && !replaced_) {
    next = std::min(next, hello_sent_at_ + kHelloRetry);
  }
  return next;
}

void Session::run_timers_() {
  expire_requests_();
  if (link_ == Link::ready) {
    if (now_ - watch_from_ > lease_())
      lose_link_("no word from sage-busd at " + endpoint_ + " for " +
                 std::to_string(lease_().count()) + " ms");
    else
      heartbeat_if_due_();
  } else if (tcp_up_ && !replaced_ && now_ - hello_sent_at_ >= kHelloRetry) {
    send_hello_();
  }
}

// --- output ------------------------------------------------------------------------------

// Sends out_ with an optional payload frame. False when the transport's queue is full:
// the message was not sent.
bool Session::send_(std::optional<zmq::message_t> payload) {
  return send_header_(wire::encode(out_), std::move(payload));
}

// Sends `header` (then `payload`); false, and nothing sent, when the queue is full.
bool Session::send_header_(zmq::message_t header, std::optional<zmq::message_t> payload) {
  if (!put_(header, payload ? &*payload : nullptr)) return false;
  take_short_lease_();
  return true;
}

// send_header_() but for the lease, which the caller sets (take_short_lease_(), or the
// heartbeat's own). Messages waiting for company go first, so that this side's messages
// leave in the order it made them. The frames are emptied once sent, kept when refused.
bool Session::put_(zmq::message_t& header, zmq::message_t* payload) {
  return flush_gathered_() && write_(header, payload);
}

// Whether a message with this payload waits for company: a small one (`limits`: its
// kind's), to a broker that reads BATCHes.
bool Session::gathers_(std::size_t payload, const wire::BatchLimits& limits) const {
  return batches_ && payload <= limits.payload;
}

// Adds a message to those that go together at the end of the turn (or when the driver
// calls flush()), as one BATCH, or as itself when alone; none waits longer than
// kMaxGatherWait for the others. `payload` is moved from, or copied when given as bytes.
// False, and nothing added, when the messages waiting had to go first and the queue to the
// broker refused them.
bool Session::gather_(std::string_view header, zmq::message_t* payload,
                      const wire::BatchLimits& limits) {
  if (!make_room_(header.size(), payload != nullptr ? payload->size() : 0, limits)) return false;
  gathered_.add(header, payload);
  return true;
}

bool Session::gather_(std::string_view header, std::string_view payload,
                      const wire::BatchLimits& limits) {
  if (!make_room_(header.size(), payload.size(), limits)) return false;
  gathered_.add(header, payload);
  return true;
}

// gather_()'s: sends the messages waiting first when one more of these sizes would not fit
// with them, or the first has waited kMaxGatherWait; false when the queue refused them.
bool Session::make_room_(std::size_t header, std::size_t payload, const wire::BatchLimits& limits) {
  const std::size_t limit = std::min<std::size_t>(limits.bytes, max_payload_);
  if (!gathered_.fits(header, payload, limit) || gathered_too_long_())
    if (!flush_gathered_()) return false;
  if (gathered_.empty()) gathered_since_ = now_;
  return true;
}

bool Session::gathered_too_long_() const {
  return !gathered_.empty() && now_ - gathered_since_ > kMaxGatherWait;
}

// Sends the messages gathered since the last flush, as one BATCH, or alone when there is
// one: at the end of each turn, after a request started outside one, and before anything
// else is sent (put_), so that this side's messages leave in the order it made them. When
// the queue to the broker is full they stay, whole, first in line for room: false then.
bool Session::flush_gathered_() {
  if (gathered_.empty()) return true;
  bool sent;
  if (gathered_.size() == 1) {
    const auto payload = gathered_.lone_payload();
    sent = write_(gathered_.lone_header(), payload.empty() ? nullptr : payload.data());
  } else {
    zmq::message_t header(batch_header_.data(), batch_header_.size());
    zmq::message_t records = gathered_.records();
    sent = write_(header, &records);
  }
  // Refused, the batch stays whole for the next try (wants_out): nothing in it may be lost
  // (a reply, a chunk, a CANCEL or CREDIT), nor overtaken by what comes after it.
  if (!sent) return false;
  take_short_lease_();
  gathered_requests_.clear();
  gathered_.clear();
  return true;
}

// Drops the messages gathered, which never left, as the link is lost: their replies are
// for a broker session that ended, their requests unsent again (a WELCOME sends them).
void Session::drop_gathered_() {
  for (auto id = gathered_requests_.rbegin(); id != gathered_requests_.rend(); ++id) {
    auto it = requests_.find(*id);
    if (it == requests_.end() || !it->second.sent) continue;  // ended meanwhile
    it->second.sent = false;
  }
  gathered_requests_.clear();
  gathered_.clear();
}

// put_() of this message alone.
bool Session::write_(zmq::message_t& header, zmq::message_t* payload) {
  if (!port_.write(header, payload)) return false;
  last_sent_ = now_;
  return true;
}

void Session::shut_down() {
  (void)flush_gathered_();  // what was asked before goes as it would have
  for_each_request_([&](Requests::iterator it) {
    finish_(it, failure(Status::cancelled, "the client was closed before the request ended"));
  });
  for (auto& [name, entry] : services_)
    entry.core->on_unregistered();
  host_.publishes_sent(outbox_.size());
  outbox_.clear();
  if (link_ == Link::ready) {
    out_.Clear();
    out_.set_kind(wire::GOODBYE);
    out_.set_message("client closed");
    (void)send_();
  }
  set_link_(Link::failing);
}

}  // namespace sagebus::detail
