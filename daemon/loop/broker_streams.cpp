// The stream and cancellation half of the Broker (docs/protocol.md, "Streams" and
// "Cancellation"): an instance's CHUNKs of a streamed reply, passed on to the caller within
// the credit the caller granted; the caller's CREDITs, passed on to the instance; and the
// caller's CANCEL, which ends its call at once and frees the instance that held it (a
// gather's: every instance that holds a part of it, broker_gather.cpp).
//
// Each acts only on a call its sender is party to, so none needs a guard: a CHUNK on a call
// dispatched to the sender's connection (checked as a REPLY is), a CREDIT or a CANCEL on
// a call the sender made, found by the sender's own id for it (PendingCalls::find_by_caller).
// What names no such call is dropped and counted, and disturbs nothing else.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "sagebus/wire/frame.hpp"

namespace sagebus::broker {

void Broker::on_chunk_(ClientInfo& from, Frames& frames) {
  const CallId id = in_.id();
  Call* call = nullptr;
  const auto reject = [&](std::string_view why) {
    ++metrics_.rejected_chunks;
    if (!debug_) return;
    const Call* known = call != nullptr ? call : calls_.find(id);
    spdlog::debug("rejected a CHUNK for dispatch id {} from '{}': {}{}", id, from.name, why,
                  known != nullptr ? trace_note_(*known) : std::string());
  };
  switch (calls_.check_reply(id, from.handle, &call)) {
    case PendingCalls::ReplyCheck::accepted:
      break;
    case PendingCalls::ReplyCheck::cancelled:
      return after_cancel_("CHUNK", id, from);
    case PendingCalls::ReplyCheck::unknown_id:
      return reject("no call has that id (never given out, or ended)");
    case PendingCalls::ReplyCheck::wrong_sender:
      return reject("its connection does not hold that call");
  }
  if (call->kind != CallKind::request || !call->stream)
    return reject("the call is not a stream (its caller asked for one reply)");
  if (call->outcome_claimed()) {  // its deadline passed: the caller was told
    ++metrics_.late_chunks;
    if (debug_)
      spdlog::debug("late chunk of stream #{} {}.{} dropped: its caller already had its outcome{}",
                    id, call->service, call->method, trace_note_(*call));
    return;
  }
  if (call->credit <= 0) return reject("the stream has no credit left (its caller's window)");

  std::span<zmq::message_t> payload(frames.data() + 2, frames.size() - 2);
  std::uint64_t bytes = 0;
  for (const auto& frame : payload)
    bytes += frame.size();
  if (truncated_ || bytes > config_.max_payload) {
    // The stream cannot go on without it; the caller still gets its one outcome.
    metrics_.refused(Limit::max_payload);
    const std::string what =
        truncated_ ? "had more than " + std::to_string(wire::kMaxPayloadFrames) +
                         " payload frames, the most a message may carry"
                   : "was " + std::to_string(bytes) + " bytes, over the broker's max-payload of " +
                         std::to_string(config_.max_payload) + " bytes";
    end_stream_(*call, wire::HANDLER_ERROR,
                "chunk " + std::to_string(call->chunks + 1) + " of '" + from.name + "' for " +
                    call->service + "." + call->method + " " + what,
                "a chunk was over the broker's max-payload: the stream ended HANDLER_ERROR");
    return;
  }
  // Known while the outcome is unclaimed: removing a client claims its calls' outcomes.
  const ClientInfo* caller = registry_.client(call->caller);
  if (caller == nullptr) return;
  call->credit -= wire::chunk_cost(bytes);
  ++call->chunks;
  ++metrics_.chunks;
  head_.start(wire::CHUNK).varint(wire::Header::kIdFieldNumber, call->caller_id);
  // A small chunk goes in the caller's batch of this round, as a reply would. A caller
  // found gone is being removed, which cancels the stream (forget_caller_).
  if (outbox_.chunk(caller->rid, caller->batches, head_.bytes(), payload, id) == Sent::would_block)
    end_stream_(*call, wire::OVERLOADED,
                "this connection's queue is full (it is not reading its messages): chunk " +
                    std::to_string(call->chunks) + " of " + call->service + "." + call->method +
                    " could not be passed on, and the stream ended",
                "its caller is not reading its messages");
}

void Broker::chunks_undelivered_(const RoutingId&, std::span<const CallId> calls, Sent sent) {
  // A caller found gone is being removed, which cancels its streams (forget_caller_).
  if (sent != Sent::would_block) return;
  for (const CallId id : calls) {
    Call* call = calls_.find(id);
    if (call == nullptr || call->outcome_claimed()) continue;  // ended meanwhile
    const bool gather = call->kind == CallKind::gather;
    end_stream_(*call, wire::OVERLOADED,
                "this connection's queue is full (it is not reading its messages): " +
                    std::string(gather ? "the outcomes of the gather " : "chunks of ") +
                    call->service + "." + call->method + " could not be passed on, and the " +
                    (gather ? "gather" : "stream") + " ended",
                "its caller is not reading its messages");
  }
}

void Broker::on_stream_credit_(ClientInfo& caller) {
  const std::uint64_t id = in_.id();
  Call* call = calls_.find_by_caller(caller.handle, id);
  if (call == nullptr || !call->stream || call->outcome_claimed()) {
    ++metrics_.rejected_credits;
    if (debug_)
      spdlog::debug("rejected a CREDIT from '{}' for its id {}: {}{}", caller.name, id,
                    call == nullptr ? "it has no call of that id open"
                    : !call->stream ? "that call is not a stream"
                                    : "that stream already had its outcome",
                    call != nullptr ? trace_note_(*call) : std::string());
    return;
  }
  // The caller's window is bounded: no more than kMaxStreamWindow bytes outstanding.
  const std::int64_t room = std::int64_t{wire::kMaxStreamWindow} - call->credit;
  const auto added = static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(in_.credit(), 0, std::max<std::int64_t>(room, 0)));
  if (added == 0) return;
  call->credit += added;
  // A waiting call carries its credit, as it stands then, in its dispatch.
  if (call->state != CallState::dispatched) return;
  const ClientInfo* instance = registry_.client(call->instance);
  if (instance == nullptr) return;  // being removed: instance_lost_ settles the call
  head_.start(wire::CREDIT)
      .varint(wire::Header::kIdFieldNumber, call->id)
      .varint(wire::Header::kCreditFieldNumber, added);
  // An instance that does not read its messages would never hear of the credit, and the
  // stream would stall until its deadline: end it now instead.
  if (outbox_.send(instance->rid, head_.frame()) == Sent::would_block)
    end_stream_(*call, wire::OVERLOADED,
                "instance " + instance->instance_id + " of service '" + call->service +
                    "' is not reading its messages (its queue is full)",
                "it is not reading its messages");
}

void Broker::on_cancel_(ClientInfo& caller, Frames&) {
  const std::uint64_t id = in_.id();
  Call* call = calls_.find_by_caller(caller.handle, id);
  if (call == nullptr) {
    ++metrics_.rejected_cancels;
    if (debug_)
      spdlog::debug("rejected a CANCEL from '{}' for its id {}: it has no call of that id open",
                    caller.name, id);
    return;
  }
  if (call->outcome_claimed()) {
    // Its deadline passed: the caller was told, and the handler has the same deadline. It
    // holds its instance until the late reply, as any call past its deadline does.
    ++metrics_.late_cancels;
    if (debug_)
      spdlog::debug("late CANCEL for call #{} {}.{} from '{}': its deadline had passed{}", call->id,
                    call->service, call->method, caller.name, trace_note_(*call));
    return;
  }
  // The caller's SDK ended the call CANCELLED itself: it is sent nothing.
  ++metrics_.cancelled;
  calls_.claim_outcome(*call);
  if (call->stats != nullptr)
    call->stats->finish(wire::CANCELLED, std::chrono::duration_cast<std::chrono::microseconds>(
                                             now_ - call->accepted));
  if (debug_)
    spdlog::debug("call #{} {}.{} cancelled by its caller '{}' ({}){}", call->id, call->service,
                  call->method, caller.name,
                  call->kind == CallKind::gather         ? "a gather: its instances are told"
                  : call->state == CallState::dispatched ? "its instance is told"
                                                         : "it was waiting",
                  trace_note_(*call));
  drop_call_(*call, "cancelled by its caller");
}

void Broker::end_stream_(Call& call, wire::Status status, std::string_view message,
                         std::string_view why) {
  answer_caller_(call, status, message);
  drop_call_(call, why);
}

void Broker::drop_call_(Call& call, std::string_view why) {
  if (call.kind == CallKind::gather) return drop_gather_(call, why);
  const CallId id = call.id;
  if (call.state == CallState::waiting) {
    const std::string name = call.service;
    if (Service* service = registry_.service(name)) std::erase(service->waiting, id);
    calls_.erase(id);
    registry_.prune(name);
    return;
  }
  // The entry it was placed in: the instance keeps it while it holds the call.
  Service* service = registry_.service(call.service_entry);
  Instance* instance = service == nullptr ? nullptr : service->find(call.instance);
  if (instance != nullptr) {
    // Its slot is free at once, so the balancer may give it new work; the handler hears
    // of the cancel now and should stop.
    if (instance->in_flight > 0) --instance->in_flight;
    head_.start(wire::CANCEL)
        .varint(wire::Header::kIdFieldNumber, id)
        .string(wire::Header::kMessageFieldNumber, why);
    outbox_.send(instance->client, head_.frame());
  }
  // Remembered: what the instance sent for it before hearing of the cancel is counted as
  // such (replies_after_cancel), not as a reply nobody was given.
  calls_.erase_cancelled(id);
  if (instance != nullptr) leave_if_drained_(*service, *instance);
  pump_(service);
}

}  // namespace sagebus::broker
