// The scatter-gather half of the Broker (docs/protocol.md, "Scatter-gather"): a REQUEST with
// `all` asks every live instance of its service that has its method, and its caller gets one
// outcome per instance, each named.
//
// One mechanism: the gather is a Call of kind `gather`, never dispatched, that holds the
// caller, the deadline and how many instances it asked; each instance's part is a Call of
// kind `request` whose `parent` is the gather (routing/pending.hpp), dispatched, replied to,
// lost, timed and cancelled exactly as any call is. Only its outcome goes elsewhere:
// answer_caller_ hands it to part_outcome_, which sends it to the gather's caller as a CHUNK
// naming the instance, and the gather's final REPLY after the last one. The caller is sent,
// in this order, each through the Outbox's path for a stream's chunks (a small one rides the
// caller's BATCH): CHUNK {count = N}; a CHUNK {peer, status, message, headers} + payload per
// instance, as its outcome is known; REPLY OK {count = N}.
#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"

namespace sagebus::broker {

namespace {

std::string instance_of(const std::string& instance_id, const std::string& name,
                        const std::string& service) {
  return "instance " + instance_id + " ('" + name + "') of service '" + service + "'";
}

}  // namespace

void Broker::gather_(ClientInfo& caller, Frames& frames, MethodStats* stats) {
  const std::uint64_t id = in_.id();
  // Every live instance (not draining) that has the method is asked; one at its
  // max-inflight too, whose outcome is then OVERLOADED at once.
  Service* service = registry_.service(in_.service());
  std::vector<ClientHandle> asked;
  bool live = false;
  if (service != nullptr)
    for (const Instance& i : service->instances) {
      if (i.draining) continue;
      live = true;
      if (i.has_method(in_.method())) asked.push_back(i.handle);
    }
  // The gather and each of its parts take a place in the call table.
  if (const std::size_t room = calls_.room(); room < asked.size() + 1) {
    metrics_.refused(Limit::max_calls);
    const std::string why = "the broker's call table has room for " + std::to_string(room) +
                            " more calls (its max-calls), and a gather to " +
                            std::to_string(asked.size()) + " instances needs " +
                            std::to_string(asked.size() + 1) + "; try again later";
    spdlog::log(refusal_log_limiter_.take(now_) ? spdlog::level::info : spdlog::level::debug,
                "refused a gather from '{}': {}", caller.name, why);
    refuse_(caller.rid, wire::OVERLOADED, why);
    return;
  }
  Call* gather = calls_.add_in_place([&](Call& c) {
    accept_call_(c, caller, frames, stats);
    c.kind = CallKind::gather;
    c.asked = static_cast<std::uint32_t>(asked.size());
  });
  const CallId gid = gather->id;
  ++stats->calls;
  ++stats->in_flight;
  ++metrics_.gathers;
  if (debug_)
    spdlog::debug("gather #{} {}.{} from '{}' (its id {}, {} ms): {} instances asked{}", gid,
                  gather->service, gather->method, caller.name, id, in_.timeout_ms(), asked.size(),
                  trace_note_(*gather));
  if (asked.empty()) {  // as a plain call is answered
    if (live)
      answer_caller_(*gather, wire::NOT_FOUND,
                     "service '" + gather->service + "' has no method '" + gather->method + "'");
    else
      answer_caller_(*gather, wire::NO_RESPONDERS,
                     "service '" + gather->service + "' has no live instance");
    calls_.erase(gid);
    return;
  }

  // First, how many were asked. A caller found gone is being removed, which cancels the
  // gather (forget_caller_).
  head_.start(wire::CHUNK)
      .varint(wire::Header::kIdFieldNumber, id)
      .varint(wire::Header::kCountFieldNumber, asked.size());
  if (outbox_.chunk(caller.rid, caller.batches, head_.bytes(), {}, gid) == Sent::would_block) {
    answer_caller_(*gather, wire::OVERLOADED,
                   "this connection's queue is full (it is not reading its messages): the "
                   "gather " +
                       gather->service + "." + gather->method + " could not start");
    calls_.erase(gid);
    return;
  }

  // The parts, one after another: their ids follow the gather's (routing/pending.hpp). Each
  // shares the payload's buffers, none copies them.
  for (const ClientHandle handle : asked) {
    calls_.add_in_place([&](Call& c) {
      c.parent = gid;
      c.caller_id = id;  // the id its outcome goes under: the header's size is checked with it
      c.service = gather->service;
      c.service_entry = service->handle;
      c.method = gather->method;
      c.traceparent = gather->traceparent;
      c.headers = gather->headers;
      c.payload.resize(gather->payload.size());
      for (std::size_t i = 0; i < c.payload.size(); ++i)
        c.payload[i].copy(gather->payload[i]);
      c.accepted = now_;
      c.deadline = gather->deadline;
      c.peer = service->find(handle)->client_name;
    });
  }
  gather->payload.clear();

  // Then each is dispatched, or has its outcome at once. Everything is found again each
  // time: an outcome the caller's queue cannot take ends the gather (part_outcome_), and
  // the last outcome ends it too.
  for (std::size_t i = 0; i < asked.size(); ++i) {
    const CallId part_id = gid + 1 + i;
    Call* part = calls_.find(part_id);
    if (part == nullptr) continue;  // dropped: the gather ended
    Service* s = registry_.service(part->service_entry);
    Instance* instance = s == nullptr ? nullptr : s->find(asked[i]);
    if (instance == nullptr) {  // not seen: nothing removes an instance meanwhile
      answer_caller_(*part, wire::UNAVAILABLE, "the instance '" + part->peer + "' left");
      calls_.erase(part_id);
      continue;
    }
    if (instance->in_flight >= instance->max_inflight) {
      answer_caller_(*part, wire::OVERLOADED,
                     "instance " + instance->instance_id + " of service '" + s->name +
                         "' is at its max-inflight of " + std::to_string(instance->max_inflight));
      calls_.erase(part_id);
      continue;
    }
    switch (dispatch_(*part, *instance)) {
      case Sent::ok:
        break;
      case Sent::would_block:
        refuse_full_(*part, *instance);
        break;
      case Sent::peer_gone:
        answer_caller_(*part, wire::UNAVAILABLE,
                       instance_of(instance->instance_id, part->peer, s->name) + " was found gone");
        calls_.erase(part_id);
        break;
    }
  }
}

void Broker::part_outcome_(Call& part, wire::Status status, std::string_view message,
                           std::span<zmq::message_t> payload, const HeaderMap* headers) {
  metrics_.count_status(status);
  Call* gather = calls_.find(part.parent);
  // Ended (cancelled, its caller gone, its deadline passed): nobody waits for this.
  if (gather == nullptr || gather->outcome_claimed()) return;
  ++gather->chunks;
  if (debug_)
    spdlog::debug("gather #{} {}.{}: part #{} of '{}' ends {}{}{} ({} of {}){}", gather->id,
                  gather->service, gather->method, part.id, part.peer, wire::status_name(status),
                  message.empty() ? "" : ": ", message, gather->chunks, gather->asked,
                  trace_note_(*gather));
  // Known while the gather's outcome is unclaimed: removing a client claims its calls'.
  if (const ClientInfo* caller = registry_.client(gather->caller)) {
    head_.start(wire::CHUNK)
        .varint(wire::Header::kIdFieldNumber, gather->caller_id)
        .enumeration(wire::Header::kStatusFieldNumber, status)
        .string(wire::Header::kMessageFieldNumber, message);
    if (headers != nullptr) head_.map(wire::Header::kHeadersFieldNumber, *headers);
    head_.string(wire::Header::kPeerFieldNumber, part.peer);
    // Its caller would miss this outcome: the gather ends instead. A caller found gone is
    // being removed, which cancels the gather (forget_caller_).
    if (outbox_.chunk(caller->rid, caller->batches, head_.bytes(), payload, gather->id) ==
        Sent::would_block) {
      end_stream_(*gather, wire::OVERLOADED,
                  "this connection's queue is full (it is not reading its messages): the "
                  "outcome of '" +
                      part.peer + "' for the gather " + gather->service + "." + gather->method +
                      " could not be passed on, and the gather ended",
                  "its caller is not reading its messages");
      return;
    }
  }
  if (gather->chunks < gather->asked) return;
  const CallId gid = gather->id;
  answer_caller_(*gather, wire::OK, {}, {}, nullptr, gather->asked);
  calls_.erase(gid);
}

void Broker::expire_gather_(Call& gather) {
  const CallId gid = gather.id;
  const std::uint32_t asked = gather.asked;
  const std::string what = gather.method + " within " +
                           std::to_string(millis_between(gather.accepted, gather.deadline)) + " ms";
  const std::string service = gather.service;
  for (std::uint32_t i = 1; i <= asked; ++i) {
    Call* part = calls_.find(gid + i);
    if (part == nullptr || part->parent != gid || part->outcome_claimed()) continue;
    const ClientInfo* holder = registry_.client(part->instance);
    answer_caller_(*part, wire::DEADLINE_EXCEEDED,
                   (holder != nullptr ? instance_of(holder->instance_id, part->peer, service)
                                      : "'" + part->peer + "'") +
                       " did not reply to " + what);
    // A dispatched part stays in the table, holding its instance's slot, until the late
    // reply or the instance's loss: a hung handler is not given more than max_inflight.
    if (part->state != CallState::dispatched) calls_.erase(gid + i);
  }
  // The last part's outcome ended the gather; this only guards against a part gone
  // without one.
  if (Call* left = calls_.find(gid); left != nullptr && !left->outcome_claimed()) {
    answer_caller_(*left, wire::OK, {}, {}, nullptr, asked);
    calls_.erase(gid);
  }
}

void Broker::drop_gather_(Call& gather, std::string_view why) {
  const CallId gid = gather.id;
  const std::uint32_t asked = gather.asked;
  for (std::uint32_t i = 1; i <= asked; ++i) {
    Call* part = calls_.find(gid + i);
    if (part == nullptr || part->parent != gid || !calls_.claim_outcome(*part)) continue;
    drop_call_(*part, why);
  }
  calls_.erase(gid);
}

}  // namespace sagebus::broker
