// Requests: calls and everything else the broker answers with a REPLY; their deadlines,
// the order they go in, and their one outcome each.
#include "session.hpp"

#include <algorithm>
#include <limits>

#include "../service_core.hpp"
#include "../subscription_core.hpp"
#include "protocol.hpp"
#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"
#include "sagebus/wire/kinds.hpp"

namespace sagebus::detail {

using namespace protocol;
using std::chrono::duration_cast;

namespace {

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

// A request that ends before it is taken up or sent, without finish_: its control is
// released as finish_ releases it.
static void release(RequestSpec& spec) {
  if (!spec.control) return;
  spec.control->key = 0;
  for (auto& [token, registration] : spec.control->registrations)
    token.forget(registration);
  spec.control->registrations.clear();
}

void Session::handle_(command::Start& c) {
  if (c.spec.control && c.spec.control->cancel_early) {
    release(c.spec);
    return c.done(failure(Status::cancelled, c.spec.control->cancel_why));
  }
  // Refused before it is taken up: released first.
  const auto refuse = [&](Outcome outcome) {
    release(c.spec);
    c.done(std::move(outcome));
  };
  const auto& o = c.spec.options;
  if (o.timeout.count() <= 0 ||
      o.timeout > milliseconds(std::numeric_limits<std::uint32_t>::max() / 2))
    return refuse(
        failure(Status::invalid_argument, "timeout must be between 1 ms and 2^31 ms, not " +
                                              std::to_string(o.timeout.count()) + " ms"));
  if (requests_.size() >= options_.max_pending)
    return refuse(
        failure(Status::overloaded, "this client already has " + std::to_string(requests_.size()) +
                                        " requests outstanding (ClientOptions::max_pending)"));
  if (link_ == Link::failing && (hopeless_ || !o.wait_for_ready))
    return refuse(failure(unsent_status_(), not_connected_text_()));
  const auto id = ++next_id_;
  const auto deadline = c.spec.deadline ? *c.spec.deadline : c.spec.asked + o.timeout + c.spec.hold;
  if (c.spec.control) c.spec.control->key = id;
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
void Session::send_request_(std::uint64_t id) {
  flush_outbox_();  // unconfirmed publishes made before it go first
  if (!waiting_for_room_.empty() || !try_send_request_(id)) {
    deadlines_.emplace(requests_.at(id).deadline, id);
    waiting_for_room_.push_back(id);
  }
}

// Sends what waits for room in the socket's queue, in order, while it takes them.
void Session::flush_waiting_requests_() {
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
bool Session::try_send_request_(std::uint64_t id) {
  auto node = requests_.extract(id);
  Request& request = node.mapped();
  if (request.deadline <= now_) {
    release(request.spec);
    request.done(deadline_failure_(request));
    return true;
  }
  if (request.spec.payload.size() > max_payload_) {
    release(request.spec);
    request.done(failure(Status::invalid_argument, "payload of " +
                                                       std::to_string(request.spec.payload.size()) +
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
          .map(H::kHeadersFieldNumber, o.headers)
          .string(H::kTraceparentFieldNumber, spec.traceparent);
      if (spec.stream) head_.varint(H::kCreditFieldNumber, o.window_bytes);
      if (same_host_)
        head_.varint(H::kDeadlineUsFieldNumber, wire::to_deadline_us(request.deadline));
      head_.varint(H::kStreamFieldNumber, spec.stream).varint(H::kAllFieldNumber, spec.all);
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
          .varint(H::kTagFieldNumber, spec.tag)
          .varint(H::kTransientFieldNumber, spec.transient)
          .varint(H::kTtlMsFieldNumber, static_cast<std::uint32_t>(spec.ttl.count()));
      break;
  }
  std::optional<zmq::message_t> payload;
  if (wire::kind_info(spec.kind).payload) {
    payload.emplace();
    payload->copy(request.spec.payload);  // shares the buffer: kept to re-send
  }
  // A small one waits for the end of the turn, to go with others (gather_).
  const bool gathered = gathers_(spec.payload.size(), wire::kCallBatchLimits);
  if (gathered ? !gather_(head_.bytes(), payload ? &*payload : nullptr, wire::kCallBatchLimits)
               : !send_header_(head_.frame(), std::move(payload))) {
    requests_.insert(std::move(node));
    return false;
  }
  if (gathered) gathered_requests_.push_back(fresh);
  request.sent = true;
  request.in_doubt = false;
  node.key() = fresh;
  if (request.spec.control) request.spec.control->key = fresh;
  request.last_chunk = now_;
  deadlines_.emplace(idle_check_(request), fresh);
  requests_.insert(std::move(node));
  // Entries of requests that ended stay until their time comes; keep them from
  // outnumbering the live ones (at 100,000 calls/s with 10 s deadlines, a million).
  if (deadlines_.size() > 2 * requests_.size() + kDeadlineSlack) prune_deadlines_();
  return true;
}

// One entry per request still open, at its deadline (expire_requests_ adds the grace).
void Session::prune_deadlines_() {
  std::vector<Deadline> open;
  open.reserve(requests_.size() + kDeadlineSlack);
  for (const auto& [id, request] : requests_)
    open.emplace_back(request.sent ? idle_check_(request) : request.deadline, id);
  deadlines_ = decltype(deadlines_)(std::greater<>(), std::move(open));
}

// The REPLY in in_, whose payload is `payload`.
void Session::on_reply_message_() {
  on_reply_(frames_.empty() ? std::string_view() : frames_.front().to_string_view());
}

void Session::on_reply_(std::string_view payload) {
  if (auto it = requests_.find(in_.id()); it != requests_.end()) {
    // A call's outcome is never later than its deadline: a reply read after it is
    // dropped, counted (but the broker's own DEADLINE_EXCEEDED, which is no reply of
    // the service), and the call ends DEADLINE_EXCEEDED now (expire_requests_ would have
    // ended it, had this thread woken first). A call_all's is the broker's, decided at
    // the deadline: it is taken within the grace, as a send's is.
    if (it->second.spec.kind == wire::REQUEST && !it->second.spec.all &&
        now_ > it->second.deadline) {
      if (in_.status() != wire::DEADLINE_EXCEEDED) host_.late_reply();
      finish_(it, deadline_failure_(it->second));
      return;
    }
    Outcome outcome{
        from_wire(in_.status()), in_.message(),    std::string(payload), in_.count(), in_.tag(),
        in_.deliveries(),        in_.redelivered()};
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
    if (failure_status_ == Status::unauthenticated) {  // our key is no longer accepted
      refused_ = true;
      hopeless_ = true;
    }
    set_link_(Link::failing);
    fail_unsent_impatient_();
  }
  // Otherwise: the answer to a request that already ended (its deadline passed).
}

// Each record of a BATCH, as the message it holds, had it come alone (docs/protocol.md,
// "Batches").
void Session::on_batch_() {
  if (frames_.size() != 1) return;  // not a batch: not ours to fix
  const zmq::message_t batch = std::move(frames_.front());
  wire::BatchReader reader(batch);
  wire::MessageRecord record;
  while (reader.next(record)) {
    if (wire::decode(record.header.data(), record.header.size(), in_) != wire::DecodeResult::ok ||
        !wire::kind_info(in_.kind()).batchable)
      continue;
    if (in_.kind() == wire::REPLY) {  // the common case, read in place
      on_reply_(record.payload);
      continue;
    }
    frames_.clear();
    frames_.emplace_back(record.payload.data(), record.payload.size());
    dispatch_();
  }
}

void Session::finish_(Requests::iterator it, Outcome outcome) {
  auto done = std::move(it->second.done);
  sync_ends_ += it->second.sync;
  release(it->second.spec);
  requests_.erase(it);
  done(std::move(outcome));
}

// A CHUNK: a stream's chunk or a call_all's outcome, to the request's control, in order.
// Dropped when its call has ended (the broker may have sent it before it read our
// CANCEL) or is neither. A call_all's outcomes at its deadline (DEADLINE_EXCEEDED for each
// instance not answered) come from the broker then, and are taken within the grace.
void Session::on_chunk_() {
  auto it = requests_.find(in_.id());
  if (it == requests_.end() || !(it->second.spec.stream || it->second.spec.all)) return;
  // As a late reply (on_reply_): the deadline ends it now.
  if (!it->second.spec.all && now_ > it->second.deadline) {
    send_cancel_(it->first);
    finish_(it, deadline_failure_(it->second));
    return;
  }
  it->second.last_chunk = now_;
  CallControl& control = *it->second.spec.control;
  control.on_chunk(in_, frames_.empty() ? std::string_view() : frames_.front().to_string_view());
  if (!control.unflushed) {
    control.unflushed = true;
    chunks_to_flush_.push_back(it->second.spec.control);
  }
}

void Session::handle_(command::Cancel& c) {
  CallControl& control = *c.control;
  if (control.key == 0) {  // not taken up yet (handle_(Start) refuses it), or ended
    control.cancel_early = true;
    control.cancel_why = std::move(c.why);
    return;
  }
  auto it = requests_.find(control.key);
  if (it == requests_.end() || it->second.spec.control != c.control) return;
  if (it->second.sent) send_cancel_(it->first);
  finish_(it, failure(Status::cancelled, std::move(c.why)));
}

void Session::handle_(command::StreamCredit& c) {
  if (c.control->key == 0 || link_ != Link::ready) return;
  auto it = requests_.find(c.control->key);
  if (it == requests_.end() || !it->second.sent) return;
  using H = wire::Header;
  head_.start(wire::CREDIT)
      .varint(H::kIdFieldNumber, it->first)
      .varint(H::kCreditFieldNumber, c.credit);
  send_or_hold_(head_.bytes(), nullptr, wire::kCallBatchLimits);
}

void Session::send_cancel_(std::uint64_t id) {
  if (link_ != Link::ready) return;  // the broker cancels a lost caller's calls itself
  head_.start(wire::CANCEL).varint(wire::Header::kIdFieldNumber, id);
  send_or_hold_(head_.bytes(), nullptr, wire::kCallBatchLimits);
}

Clock::time_point Session::idle_check_(const Request& request) const {
  const auto idle = request.spec.options.idle_timeout;
  if (!request.spec.stream || idle.count() <= 0) return request.deadline;
  return std::min(request.deadline, request.last_chunk + idle);
}

// Fails every request sent to the broker.
void Session::fail_sent_(const std::string& why) {
  for_each_request_([&](Requests::iterator it) {
    if (it->second.sent) finish_(it, failure(lost_status_(it->second), why));
  });
}

// Request `it` was sent, and the broker may not answer it any more. A QUEUE_GET that
// waits for ready is asked again after the next WELCOME, within its timeout, if the broker
// has `forgotten` it (asked twice, a broker that still held it could hand an item to the
// copy nobody reads); the ack it carried goes with it, moot now that the connection that
// held the item is gone (its tag may name another item on a new broker). Any other
// request ends with `why`.
void Session::requeue_or_fail_(Requests::iterator it, bool forgotten, const std::string& why) {
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
Status Session::lost_status_(const Request& request) {
  return request.spec.kind == wire::SEND ? Status::undeliverable : Status::unavailable;
}

// Fails the unsent requests that did not ask to wait for the connection, and when waiting
// will not help (hopeless_: the broker refused our credentials), those that did too.
void Session::fail_unsent_impatient_() {
  for_each_request_([&](Requests::iterator it) {
    if (!it->second.sent && (hopeless_ || !it->second.spec.options.wait_for_ready))
      finish_(it, failure(unsent_status_(), not_connected_text_()));
  });
}

std::string Session::not_connected_text_() const {
  if (refused_)
    return "not connected to sage-busd at " + endpoint_ + " (" + last_failure_ +
           "); the client keeps trying in the background";
  if (replaced_)
    return "not connected to sage-busd at " + endpoint_ + " (" + last_failure_ +
           "); this client does not reconnect by itself: make a new Client, with "
           "ClientOptions::takeover to reclaim the name";
  return "not connected to sage-busd at " + endpoint_ + " (" + last_failure_ +
         "); the client keeps retrying in the background; set "
         "CallOptions::wait_for_ready to wait for it";
}

Outcome Session::deadline_failure_(const Request& request) const {
  const auto waited = duration_cast<milliseconds>(request.spec.options.timeout + request.spec.hold);
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

// Ends the requests whose deadline has passed: a call at its deadline; a request whose
// outcome the broker decides a grace later, if the broker has not answered by then.
void Session::expire_requests_() {
  while (!deadlines_.empty() && deadlines_.top().first <= now_) {
    const auto [when, id] = deadlines_.top();
    deadlines_.pop();
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;  // ended already, or re-sent under another id
    Request& request = it->second;
    if (now_ < request.deadline) {  // a stream's idle check (CallOptions::idle_timeout)
      if (!request.sent || !request.spec.stream) {  // unsent again since: its deadline only
        deadlines_.emplace(request.deadline, id);
        continue;
      }
      if (const auto next = idle_check_(request); next > now_) {
        deadlines_.emplace(next, id);
        continue;
      }
      send_cancel_(id);
      finish_(it, failure(Status::deadline_exceeded,
                          describe(request.spec) + " had no chunk for " +
                              std::to_string(request.spec.options.idle_timeout.count()) +
                              " ms (CallOptions::idle_timeout)"));
      continue;
    }
    if (request.sent && request.spec.stream) send_cancel_(id);  // its deadline: free the instance
    if (it->second.sent && (it->second.spec.kind != wire::REQUEST || it->second.spec.all) &&
        now_ < it->second.deadline + kLocalGrace) {
      // The broker decides the outcome and answers at the deadline (a call_all's too: each
      // instance not answered is DEADLINE_EXCEEDED, the gather OK); give its answer a
      // moment to arrive.
      deadlines_.emplace(it->second.deadline + kLocalGrace, id);
      continue;
    }
    finish_(it, deadline_failure_(it->second));
  }
}

}  // namespace sagebus::detail
