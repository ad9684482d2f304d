// The call half of the Broker: accepting REQUESTs, choosing instances, routing REPLYs,
// deadlines, wait queues, and what happens to calls when a connection is lost.
#include <algorithm>
#include <bit>

#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"
#include "sagebus/wire/traceparent.hpp"

namespace sagebus::broker {

namespace {

// The bytes a header's id field takes for `id` (none for 0: proto3 leaves it out), and
// at most (a key byte and a 10-byte varint).
std::size_t id_field_bytes(std::uint64_t id) {
  return id == 0 ? 0 : 1 + (static_cast<std::size_t>(std::bit_width(id)) + 6) / 7;
}
constexpr std::size_t kMaxIdFieldBytes = 11;

// The bytes the `peer` field (23: a two-byte key) takes for `name`: what a part of a gather's
// outcome adds to its instance's reply, as a CHUNK naming the instance.
std::size_t peer_field_bytes(std::string_view name) {
  const std::size_t length = name.size();
  return 2 + std::max<std::size_t>(1, (static_cast<std::size_t>(std::bit_width(length)) + 6) / 7) +
         length;
}

// Whether `header`, parsed from a frame of `frame_bytes`, could take more than `limit`
// bytes when protobuf encodes it again; if not, the checks below need not measure it
// (ByteSizeLong() is a pass over all 26 fields, twice per call). Encoded again, a header is
// no longer than the frame it was parsed from (keys, lengths and varints only get their
// shortest form, a repeated field keeps its last value, unknown fields their bytes), but
// for two things: a negative kind or status takes 10 bytes where the frame may have used
// 5, and map entries and submessages may grow more (an entry gets its empty key and value
// written), so headers with them are always measured.
bool may_encode_over(const wire::Header& header, std::size_t frame_bytes, std::size_t limit) {
  constexpr std::size_t kEnumGrowth = 2 * 5;
  return frame_bytes + kEnumGrowth > limit || header.headers_size() != 0 || header.has_hello() ||
         header.has_welcome() || header.has_registration();
}

// Rounded down, so that the instance's deadline is never later than the caller's.
std::uint32_t millis_left(TimePoint deadline, TimePoint now) {
  const auto left = std::chrono::floor<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<std::uint32_t>(std::max<std::int64_t>(left, 1));
}

}  // namespace

void Broker::on_request_(ClientInfo& caller, Frames& frames) {
  const RoutingId& from = caller.rid;
  const std::uint64_t id = in_.id();
  if (in_.timeout_ms() == 0) {
    answer_(from, id, wire::INVALID_ARGUMENT, "timeout_ms is 0: a call needs a deadline");
    return;
  }
  if (auto error = wire::check_traceparent(in_.traceparent())) {
    answer_(from, id, wire::INVALID_ARGUMENT, *error);
    return;
  }
  if (in_.all() && (in_.stream() || in_.service() == wire::kBrokerService)) {
    answer_(from, id, wire::INVALID_ARGUMENT,
            in_.stream() ? "a REQUEST may ask for a stream or for all instances (all), not both"
                         : "all: the broker's own service '$broker' has no instances to ask");
    return;
  }
  if (in_.stream() && (in_.credit() == 0 || in_.credit() > wire::kMaxStreamWindow)) {
    answer_(from, id, wire::INVALID_ARGUMENT,
            "a stream's credit (the bytes of chunks its caller can take at first) is " +
                std::to_string(in_.credit()) + "; it must be 1 to " +
                std::to_string(wire::kMaxStreamWindow));
    return;
  }
  // The method table holds only pairs whose names passed these checks (they are added
  // below, after them), so a pair called before skips them.
  MethodStats* stats = metrics_.methods.find(in_.service(), in_.method());
  if (stats == nullptr) {
    if (auto error = wire::check_name("service name", in_.service())) {
      answer_(from, id, wire::INVALID_ARGUMENT, *error);
      return;
    }
    if (auto error = wire::check_name("method name", in_.method())) {
      answer_(from, id, wire::INVALID_ARGUMENT, *error);
      return;
    }
  }
  // Dispatched under the broker's id instead of the caller's, the header must still be
  // one an instance reads (found by the fuzz harness: tests/fuzz/regressions/
  // request-header-grows-past-what-an-instance-reads.txt).
  if (const std::size_t bytes =
          may_encode_over(in_, frames[1].size(), wire::kMaxHeaderBytes - kMaxIdFieldBytes)
              ? in_.ByteSizeLong() - id_field_bytes(id) + kMaxIdFieldBytes
              : 0;
      bytes > wire::kMaxHeaderBytes) {
    metrics_.refused(Limit::max_header);
    answer_(from, id, wire::INVALID_ARGUMENT,
            "the request's header would be up to " + std::to_string(bytes) +
                " bytes with the broker's dispatch id, over the " +
                std::to_string(wire::kMaxHeaderBytes) +
                " an instance reads; send less in headers, routing_key or traceparent");
    return;
  }
  ++metrics_.calls;
  if (in_.service() == wire::kBrokerService && requests_ != nullptr &&
      (in_.method() == "reload" || in_.method() == "drain")) {
    // Acted on between ticks, as the signals are (SIGHUP, SIGTERM).
    if (in_.method() == "reload") {
      requests_->reload.store(true);
      answer_(from, id, wire::OK,
              "reload requested: sage-busd re-reads its configuration and auth rules now; its "
              "log says what changed");
    } else {
      if (requests_->stop.load() == 0) requests_->stop.store(1);
      answer_(from, id, wire::OK,
              "drain requested: calls in flight may finish, new ones are refused; sage-busd "
              "stops when they have");
    }
    return;
  }
  if (in_.service() == wire::kBrokerService) {
    const std::string_view request =
        frames.size() > 2
            ? std::string_view(static_cast<const char*>(frames[2].data()), frames[2].size())
            : std::string_view();
    if (answer_store_admin_(from, id, request)) return;
    AdminAnswer a = answer_admin(in_.method(), request, admin_sources_());
    zmq::message_t payload(a.payload.data(), a.payload.size());
    answer_(from, id, a.status, a.message, 0, 0,
            a.status == wire::OK ? std::span<zmq::message_t>(&payload, 1)
                                 : std::span<zmq::message_t>());
    return;
  }
  if (refuse_call_(caller, "calls")) return;
  if (stats == nullptr) stats = metrics_.methods.find_or_add(in_.service(), in_.method());
  if (in_.all()) return gather_(caller, frames, stats);

  // Filled in place: the call table lends the storage of a call that ended.
  Call* call = calls_.add_in_place([&](Call& c) {
    accept_call_(c, caller, frames, stats);
    c.routing_key = in_.routing_key();
    c.idempotent = in_.idempotent();
    c.wait_for_ready = in_.wait_for_ready();
    c.stream = in_.stream();
    c.credit = c.stream ? in_.credit() : 0;
  });
  ++call->stats->calls;
  ++call->stats->in_flight;
  if (call->stream) ++metrics_.streams;
  // Per-call debug lines are guarded: their arguments cost lookups even when not logged.
  if (debug_)
    spdlog::debug("{} #{} {}.{} from '{}' (its id {}, {} ms{}){}", call->stream ? "stream" : "call",
                  call->id, call->service, call->method, caller.name, id, in_.timeout_ms(),
                  call->stream ? ", window " + std::to_string(call->credit) + " B" : "",
                  trace_note_(*call));
  route_(*call);
}

// Fills a blank Call with what every call takes from the REQUEST in in_ (a plain call's,
// or a gather's): its caller, names, trace, headers, payload (moved) and deadline.
void Broker::accept_call_(Call& c, const ClientInfo& caller, Frames& frames, MethodStats* stats) {
  c.caller = caller.handle;
  c.caller_id = in_.id();
  c.service = in_.service();
  c.method = in_.method();
  c.traceparent = in_.traceparent();
  for (const auto& [k, v] : in_.headers())
    c.headers.emplace_back(k, v);
  c.payload.reserve(frames.size() - 2);
  for (std::size_t i = 2; i < frames.size(); ++i)
    c.payload.push_back(std::move(frames[i]));
  c.accepted = now_;
  c.deadline = wire::deadline_of(now_, in_.timeout_ms(), caller.same_host ? in_.deadline_us() : 0);
  c.stats = stats;
}

void Broker::route_(Call& call) {
  Service* service = registry_.service(call.service);
  if (place_(call, service) == Placement::done) return;
  Service& s = service != nullptr ? *service : registry_.ensure_service(call.service);
  if (s.waiting.size() >= config_.max_waiting_per_service) {
    metrics_.refused(Limit::max_waiting);
    const CallId id = call.id;
    answer_caller_(call, wire::OVERLOADED,
                   "service '" + s.name + "' has " + std::to_string(s.waiting.size()) +
                       " calls waiting for capacity, its max-waiting; try again later");
    calls_.erase(id);
    registry_.prune(s.name);
    return;
  }
  calls_.set_waiting(call);
  s.waiting.push_back(call.id);
  if (debug_)
    spdlog::debug("call #{} waits in the queue of '{}' ({} waiting){}", call.id, s.name,
                  s.waiting.size(), trace_note_(call));
}

// Dispatches the call, or answers it and erases it (done), or says it must wait (the
// caller queues it). After `done`, `call` no longer exists.
Broker::Placement Broker::place_(Call& call, Service* service) {
  const CallId id = call.id;
  // A retried call that cannot be placed tells its caller about the loss, not about the
  // service in general.
  auto fail = [&](wire::Status status, const std::string& message) {
    if (call.retried)
      answer_caller_(call, wire::UNAVAILABLE, call.lost_reason + "; no other instance can take it");
    else
      answer_caller_(call, status, message);
    calls_.erase(id);
    return Placement::done;
  };
  if (service == nullptr) {
    if (call.wait_for_ready) return Placement::wait;
    return fail(wire::NO_RESPONDERS, "service '" + call.service + "' has no live instance");
  }
  call.service_entry = service->handle;
  // Each pass that finds its instance gone marks it draining, so this ends.
  for (;;) {
    loads_.clear();
    for (const auto& i : service->instances)
      loads_.push_back(
          {i.instance_id, i.in_flight, i.max_inflight, i.draining, i.has_method(call.method)});
    const Pick pick = service->balancer.pick(loads_, call.routing_key);
    switch (pick.outcome) {
      case Pick::Outcome::chosen:
        switch (dispatch_(call, service->instances[pick.index])) {
          case Sent::ok:
            return Placement::done;
          case Sent::peer_gone:
            continue;
          case Sent::would_block:
            refuse_full_(call, service->instances[pick.index]);
            return Placement::done;
        }
        break;
      case Pick::Outcome::busy:
        return Placement::wait;
      case Pick::Outcome::no_instance:
        if (call.wait_for_ready) return Placement::wait;
        return fail(wire::NO_RESPONDERS, "service '" + call.service + "' has no live instance");
      case Pick::Outcome::no_method:
        return fail(wire::NOT_FOUND,
                    "service '" + call.service + "' has no method '" + call.method + "'");
    }
  }
}

Sent Broker::dispatch_(Call& call, Instance& instance) {
  head_.start(wire::REQUEST)
      .varint(wire::Header::kIdFieldNumber, call.id)
      .string(wire::Header::kServiceFieldNumber, call.service)
      .string(wire::Header::kMethodFieldNumber, call.method)
      .varint(wire::Header::kTimeoutMsFieldNumber, millis_left(call.deadline, now_))
      .varint(wire::Header::kIdempotentFieldNumber, call.idempotent)
      .string(wire::Header::kRoutingKeyFieldNumber, call.routing_key)
      .map(wire::Header::kHeadersFieldNumber, call.headers)
      .string(wire::Header::kTraceparentFieldNumber, call.traceparent)
      // A stream's window as it stands now: the bytes its caller can still take (a call is
      // dispatched before any chunk, so this is above 0).
      .varint(wire::Header::kCreditFieldNumber,
              call.stream ? static_cast<std::uint64_t>(std::max<std::int64_t>(call.credit, 0)) : 0);
  if (instance.same_host)
    head_.varint(wire::Header::kDeadlineUsFieldNumber, wire::to_deadline_us(call.deadline));
  // A gather's part says so: the instance's interceptors see CallInfo::all.
  head_.varint(wire::Header::kStreamFieldNumber, call.stream)
      .varint(wire::Header::kAllFieldNumber, call.parent != 0);
  // An idempotent call keeps its payload until it can no longer be retried.
  const bool keep_payload = call.idempotent && !call.retried;
  const Sent sent = outbox_.dispatch(instance.client, instance.batches, head_.bytes(), call.payload,
                                     keep_payload, call.id);
  if (sent == Sent::ok) {
    calls_.set_dispatched(call, instance.handle);
    ++instance.in_flight;
    if (debug_)
      spdlog::debug("call #{} dispatched to instance {} of '{}' ({}/{} in flight){}", call.id,
                    instance.instance_id, call.service, instance.in_flight, instance.max_inflight,
                    trace_note_(call));
  }
  return sent;
}

// Answers a call whose instance's queue is full, and erases it.
void Broker::refuse_full_(Call& call, const Instance& instance) {
  answer_caller_(call, wire::OVERLOADED,
                 "instance " + instance.instance_id + " of service '" + call.service +
                     "' is not reading its messages (its queue is full)");
  calls_.erase(call.id);
}

// Calls dispatched to `to` in a batch that did not go (Outbox::flush), settled as place_
// settles a dispatch that cannot go at once: placed again when the connection is gone (it
// is draining now, never chosen again), answered OVERLOADED when its queue is full. A call
// that has moved on meanwhile (ended, or lost with its instance and placed again) is left
// as it is.
void Broker::undelivered_(const RoutingId& to, std::span<const CallId> calls, Sent sent) {
  for (const CallId id : calls) {
    Call* call = calls_.find(id);
    if (call == nullptr || call->state != CallState::dispatched) continue;
    Service* service = registry_.service(call->service_entry);
    Instance* instance = service == nullptr ? nullptr : service->find(call->instance);
    if (instance == nullptr || instance->client != to) continue;
    if (instance->in_flight > 0) --instance->in_flight;
    const std::string name = service->name;
    calls_.set_waiting(*call);
    if (call->outcome_claimed()) {  // its deadline passed, or its caller left
      calls_.erase(id);
    } else if (sent == Sent::would_block) {
      refuse_full_(*call, *instance);
    } else if (call->parent != 0) {  // a part of a gather goes to no other instance
      answer_caller_(*call, wire::UNAVAILABLE,
                     "instance " + instance->instance_id + " ('" + call->peer + "') of service '" +
                         name + "' was found gone");
      calls_.erase(id);
    } else {
      route_(*call);
    }
    pump_(name);
  }
}

// A REPLY or CHUNK (`kind`) the instance sent before it heard of its call's cancel:
// nobody waits for it.
void Broker::after_cancel_(std::string_view kind, CallId id, const ClientInfo& from) {
  ++metrics_.replies_after_cancel;
  if (debug_)
    spdlog::debug("dropped a {} for call #{} from '{}': the call was cancelled", kind, id,
                  from.name);
}

void Broker::on_reply_(ClientInfo& from, Frames& frames) {
  const CallId id = in_.id();
  Call* call = nullptr;
  switch (calls_.check_reply(id, from.handle, &call)) {
    case PendingCalls::ReplyCheck::accepted:
      break;
    case PendingCalls::ReplyCheck::cancelled:
      return after_cancel_("REPLY", id, from);
    case PendingCalls::ReplyCheck::unknown_id:
    case PendingCalls::ReplyCheck::wrong_sender:
      ++metrics_.rejected_replies;
      if (debug_) {
        const Call* known = calls_.find(id);
        spdlog::debug("rejected a REPLY for dispatch id {} from '{}': not given that call{}", id,
                      from.name, known != nullptr ? trace_note_(*known) : std::string());
      }
      return;
  }
  if (call->kind == CallKind::send) return on_send_reply_(*call, frames);
  // The entry it was placed in: an instance keeps it (not empty) while it holds the call.
  // Nothing below adds or removes a service entry before pump_.
  Service* service = registry_.service(call->service_entry);
  Instance* instance = service == nullptr ? nullptr : service->find(from.handle);
  if (instance != nullptr) {
    if (instance->in_flight > 0) --instance->in_flight;
    ++instance->served;
  }
  if (call->caller_lost) {
    ++metrics_.dropped_replies;
  } else if (call->outcome_claimed()) {
    ++metrics_.late_replies;
    if (debug_)
      spdlog::debug("late reply for call #{} {}.{} dropped: its caller already had its outcome{}",
                    id, call->service, call->method, trace_note_(*call));
  } else {
    forward_reply_(*call, frames);
  }
  calls_.erase(id);
  if (instance != nullptr) leave_if_drained_(*service, *instance);
  pump_(service);
}

void Broker::leave_if_drained_(const Service& service, const Instance& instance) {
  if (!instance.draining || instance.in_flight != 0) return;
  // One marked draining because its connection was found gone leaves with its client, in
  // apply_removals_.
  if (std::any_of(removals_.begin(), removals_.end(),
                  [&](const auto& r) { return r.first == instance.client; }))
    return;
  const std::string instance_id = instance.instance_id;
  const RoutingId rid = instance.client;  // remove_instance erases `instance`
  registry_.remove_instance(service.name, rid);
  spdlog::info("instance {} of '{}' left: unregistered and drained", instance_id, service.name);
}

std::string Broker::trace_note_(const Call& call) {
  const std::string_view trace = wire::trace_id_of(call.traceparent);
  return trace.empty() ? std::string() : "; trace " + std::string(trace);
}

bool Broker::refuse_call_(const ClientInfo& from, std::string_view what) {
  std::string why;
  if (const std::size_t mine = calls_.pending_of(from.handle);
      mine >= config_.max_calls_per_client) {
    metrics_.refused(Limit::max_calls_per_client);
    why = "this connection has " + std::to_string(mine) + " " + std::string(what) +
          " pending, the broker's max-calls-per-client; wait for some to end, or raise "
          "max-calls-per-client";
  } else if (calls_.full()) {
    metrics_.refused(Limit::max_calls);
    why = "the broker's call table is full (" + std::to_string(calls_.size()) +
          " calls and sends pending, its max-calls); try again later";
  } else {
    return false;
  }
  spdlog::log(refusal_log_limiter_.take(now_) ? spdlog::level::info : spdlog::level::debug,
              "refused a {} from '{}': {}", wire::kind_name(in_.kind()), from.name, why);
  refuse_(from.rid, wire::OVERLOADED, why);
  return true;
}

void Broker::forward_reply_(Call& call, Frames& frames) {
  std::span<zmq::message_t> payload(frames.data() + 2, frames.size() - 2);
  std::uint64_t bytes = 0;
  for (const auto& frame : payload)
    bytes += frame.size();
  // The caller gets the reply's message and headers under its own id, which may take more
  // bytes than the instance's: a header larger than a client reads would be dropped by
  // the caller's SDK, and the call would end at its deadline instead (found by the fuzz
  // harness: tests/fuzz/regressions/reply-header-grows-past-what-a-client-reads.txt).
  // A part of a gather's goes to the gather's caller (whose id its caller_id is) naming
  // its instance.
  const std::size_t peer_bytes = call.parent == 0 ? 0 : peer_field_bytes(call.peer);
  const std::size_t header_bytes =
      may_encode_over(in_, frames[1].size(), wire::kMaxHeaderBytes - kMaxIdFieldBytes - peer_bytes)
          ? in_.ByteSizeLong() - id_field_bytes(in_.id()) + id_field_bytes(call.caller_id) +
                peer_bytes
          : 0;
  std::string too_large;
  if (truncated_) {
    metrics_.refused(Limit::max_payload);
    too_large = "had more than " + std::to_string(wire::kMaxPayloadFrames) +
                " payload frames, the most a message may carry";
  } else if (bytes > config_.max_payload) {
    metrics_.refused(Limit::max_payload);
    too_large = "was " + std::to_string(bytes) + " bytes, over the broker's max-payload of " +
                std::to_string(config_.max_payload) + " bytes";
  } else if (header_bytes > wire::kMaxHeaderBytes) {
    metrics_.refused(Limit::max_header);
    too_large = "would have a header of " + std::to_string(header_bytes) +
                " bytes (its message and headers), over the " +
                std::to_string(wire::kMaxHeaderBytes) + " a client reads";
  } else {
    answer_caller_(call, in_.status(), in_.message(), payload, &in_.headers());
    return;
  }
  // The answer cannot be passed on; the caller still gets its one outcome.
  const ClientInfo* from = registry_.client(call.instance);
  const std::string who = from != nullptr ? "'" + from->name + "'" : "the instance";
  const std::string what = call.kind == CallKind::send
                               ? "the answer of peer '" + call.peer + "' to a send"
                               : "the reply of " + who + " to " + call.service + "." + call.method;
  answer_caller_(call, wire::HANDLER_ERROR, what + " " + too_large);
}

void Broker::pump_(const std::string& name) {
  pump_(registry_.service(name));
}

void Broker::pump_(Service* service) {
  // Runs after every reply: the common case, nothing waiting, must cost nothing.
  if (service == nullptr || service->waiting.empty()) return;
  std::deque<CallId> queue;
  queue.swap(service->waiting);
  std::deque<CallId> keep;
  // When live instances exist but none has room, nothing in the queue can move.
  auto saturated = [&] {
    bool live = false;
    for (const auto& i : service->instances) {
      if (i.draining) continue;
      live = true;
      if (i.in_flight < i.max_inflight) return false;
    }
    return live;
  };
  for (const CallId id : queue) {
    Call* call = calls_.find(id);
    if (call == nullptr || call->outcome_claimed()) {
      if (call != nullptr) calls_.erase(id);
      continue;
    }
    if (saturated()) {
      keep.push_back(id);
      continue;
    }
    // FIFO: every call gets its chance in order; one whose instance is busy stays in
    // place and the ones behind it may still go elsewhere.
    if (place_(*call, service) == Placement::wait) keep.push_back(id);
  }
  // place_ never queues, so nothing was added to service->waiting meanwhile.
  service->waiting = std::move(keep);
  registry_.prune(std::string(service->name));  // a copy: prune may erase the entry
}

void Broker::run_deadlines_() {
  for (const CallId id : calls_.take_expired(now_)) {
    Call* call = calls_.find(id);
    // Ended, or answered, by one expired before it (a gather, with its parts).
    if (call == nullptr || call->outcome_claimed()) continue;
    if (call->kind == CallKind::send) {
      send_expired_(*call);
      continue;
    }
    // A gather and its parts share a deadline; whichever comes first ends them all.
    if (call->kind == CallKind::gather || call->parent != 0) {
      if (Call* gather = call->parent == 0 ? call : calls_.find(call->parent))
        expire_gather_(*gather);
      else
        calls_.claim_outcome(*call);  // not left unclaimed without a deadline
      continue;
    }
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(call->deadline - call->accepted)
            .count();
    if (call->state == CallState::waiting) {
      const std::string name = call->service;
      if (Service* service = registry_.service(name)) std::erase(service->waiting, id);
      answer_caller_(
          *call, wire::DEADLINE_EXCEEDED,
          "no instance of '" + name + "' could take the call within " + std::to_string(ms) + " ms");
      calls_.erase(id);
      registry_.prune(name);
    } else {
      // Stays in the table, holding its instance's slot, until the late reply or the
      // instance's loss: a hung handler is not given more than max_inflight.
      answer_caller_(*call, wire::DEADLINE_EXCEEDED,
                     "service '" + call->service + "' did not reply to " + call->method +
                         " within " + std::to_string(ms) + " ms");
    }
  }
}

void Broker::instance_lost_(CallId id, const std::string& why) {
  Call* call = calls_.find(id);
  if (call == nullptr) return;
  if (call->outcome_claimed()) {  // its caller is gone or already had its outcome
    calls_.erase(id);
    return;
  }
  // A stream that delivered chunks cannot start again: its caller has them.
  if (call->idempotent && !call->retried && call->chunks == 0) {
    call->retried = true;
    call->lost_reason = why;
    calls_.set_waiting(*call);
    ++metrics_.retried;
    if (debug_) spdlog::debug("call #{} retried: {}{}", id, why, trace_note_(*call));
    route_(*call);
    return;
  }
  if (call->chunks == 0)
    answer_caller_(*call, wire::UNAVAILABLE, why);
  else
    answer_caller_(*call, wire::UNAVAILABLE,
                   why + "; the stream ended after " + std::to_string(call->chunks) + " chunks");
  calls_.erase(id);
}

void Broker::forget_caller_(ClientHandle caller) {
  std::vector<CallId> ended;
  calls_.for_each([&](Call& call) {
    if (call.caller != caller || call.outcome_claimed()) return;
    // Nobody is left to answer. A dispatched send stays until its peer answers (a peer is
    // not told to forget a message); every other call ends now.
    calls_.claim_outcome(call);
    call.caller_lost = true;
    if (call.stats != nullptr) call.stats->forget();
    if (call.kind != CallKind::send) ++metrics_.cancelled;
    if (call.kind != CallKind::send || call.state == CallState::waiting) ended.push_back(call.id);
  });
  for (const CallId id : ended) {
    Call* call = calls_.find(id);
    if (call == nullptr) continue;       // a waiting call a pump below already dropped
    if (call->kind == CallKind::send) {  // held for a peer
      forget_held_(*call);
      calls_.erase(id);
      continue;
    }
    if (debug_)
      spdlog::debug("call #{} {}.{} cancelled: its caller left{}", id, call->service, call->method,
                    trace_note_(*call));
    drop_call_(*call, "its caller disconnected");
  }
}

}  // namespace sagebus::broker
