// The point-to-point half of the Broker (docs/protocol.md, "Point-to-point"). A SEND is a
// Call of kind `send` in the call table, so the table's rules hold for it as for a
// request: one outcome per SEND (answer_caller_), a deadline, and a REPLY accepted only
// from the connection the DELIVER went to. The sender hears OK only when the peer's SDK
// said it took the message; in every other case it hears why not.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/traceparent.hpp"

namespace sagebus::broker {

namespace {

// A header's id field at most: a key byte and a 10-byte varint.
constexpr std::size_t kMaxIdFieldBytes = 11;

}  // namespace

void Broker::on_send_(ClientInfo& sender, Frames& frames) {
  const RoutingId& from = sender.rid;
  const std::uint64_t id = in_.id();
  if (in_.timeout_ms() == 0) {
    answer_(from, id, wire::INVALID_ARGUMENT, "timeout_ms is 0: a send needs a deadline");
    return;
  }
  if (auto error = wire::check_name("peer name", in_.peer())) {
    answer_(from, id, wire::INVALID_ARGUMENT, *error);
    return;
  }
  if (auto error = wire::check_traceparent(in_.traceparent())) {
    answer_(from, id, wire::INVALID_ARGUMENT, *error);
    return;
  }
  // The DELIVER carries the sender's name and the broker's id where the SEND has the
  // peer's name and the sender's: it must still be a header the peer reads (found by the
  // fuzz harness: tests/fuzz/regressions/deliver-header-grows-past-what-a-peer-reads.txt).
  if (const std::size_t bytes = in_.ByteSizeLong() + kMaxIdFieldBytes + wire::kMaxNameBytes;
      bytes > wire::kMaxHeaderBytes) {
    metrics_.refused(Limit::max_header);
    answer_(from, id, wire::INVALID_ARGUMENT,
            "the send's header would be up to " + std::to_string(bytes) +
                " bytes as a DELIVER, over the " + std::to_string(wire::kMaxHeaderBytes) +
                " a peer reads; send less in traceparent");
    return;
  }
  if (refuse_call_(sender, "calls and sends")) return;
  ++metrics_.sends;
  const std::uint32_t hold_ms = in_.hold_ms();
  Call c;
  c.kind = CallKind::send;
  c.caller = sender.handle;
  c.caller_id = id;
  c.peer = in_.peer();
  c.traceparent = in_.traceparent();
  c.payload.reserve(frames.size() - 2);
  for (std::size_t i = 2; i < frames.size(); ++i)
    c.payload.push_back(std::move(frames[i]));
  c.accepted = now_;
  c.send_deadline = now_ + std::chrono::milliseconds(in_.timeout_ms());
  c.deadline = c.send_deadline;
  Call* call = calls_.add(std::move(c));
  const CallId call_id = call->id;

  const auto peer_rid = registry_.client_by_name(call->peer);
  const ClientInfo* peer = peer_rid ? registry_.client(*peer_rid) : nullptr;
  if (peer != nullptr) {
    switch (deliver_(*call, *peer)) {
      case Sent::ok:
        return;
      case Sent::would_block:
        answer_caller_(*call, wire::OVERLOADED,
                       "peer '" + call->peer + "' is not reading its messages (its queue is full)");
        calls_.erase(call_id);
        return;
      case Sent::peer_gone:
        break;  // as if it were not connected
    }
  }
  if (hold_ms == 0) {
    answer_caller_(*call, wire::UNDELIVERABLE,
                   peer != nullptr ? "peer '" + call->peer + "' left before taking the message"
                                   : "no connection named '" + call->peer + "' is connected");
    calls_.erase(call_id);
    return;
  }
  std::deque<CallId>& line = held_[call->peer];
  if (line.size() >= config_.max_held_per_peer) {
    metrics_.refused(Limit::max_held);
    answer_caller_(*call, wire::OVERLOADED,
                   std::to_string(line.size()) + " messages are held for peer '" + call->peer +
                       "' already, the broker's max-held; try again when it connects");
    if (line.empty()) held_.erase(call->peer);
    calls_.erase(call_id);
    return;
  }
  calls_.set_deadline(*call,
                      std::min(now_ + std::chrono::milliseconds(hold_ms), call->send_deadline));
  line.push_back(call_id);
  ++metrics_.held;
  spdlog::debug("send #{} held for '{}' ({} ms; {} held for it)", call_id, call->peer, hold_ms,
                line.size());
}

Sent Broker::deliver_(Call& call, const ClientInfo& peer) {
  const ClientInfo* sender = registry_.client(call.caller);
  head_.start(wire::DELIVER)
      .varint(wire::Header::kIdFieldNumber, call.id)
      .string(wire::Header::kTraceparentFieldNumber, call.traceparent)
      .string(wire::Header::kPeerFieldNumber,
              sender != nullptr ? sender->name : std::string_view());
  const Sent sent = outbox_.send(peer.rid, head_.frame(), call.payload);
  if (sent == Sent::ok) {
    calls_.set_dispatched(call, peer.handle);
    call.payload.clear();  // moved to the peer
  }
  return sent;
}

void Broker::release_held_(const ClientInfo& peer) {
  const std::string& name = peer.name;
  auto it = held_.find(name);
  if (it == held_.end()) return;
  std::deque<CallId> line = std::move(it->second);
  held_.erase(it);
  std::deque<CallId> keep;  // in order: expired ones for run_deadlines_, and any not sent
  while (!line.empty()) {
    const CallId id = line.front();
    line.pop_front();
    Call* call = calls_.find(id);
    if (call == nullptr) continue;
    if (call->deadline <= now_) {  // its hold ended before this HELLO
      keep.push_back(id);
      continue;
    }
    const Sent sent = deliver_(*call, peer);
    if (sent == Sent::ok) {
      calls_.set_deadline(*call, call->send_deadline);
      continue;
    }
    if (sent == Sent::peer_gone) {  // gone again: the rest stay held, in order
      keep.push_back(id);
      keep.insert(keep.end(), line.begin(), line.end());
      break;
    }
    answer_caller_(*call, wire::OVERLOADED,
                   "peer '" + name + "' is not reading its messages (its queue is full)");
    calls_.erase(id);
  }
  if (!keep.empty()) held_[name] = std::move(keep);
}

void Broker::on_send_reply_(Call& call, Frames& frames) {
  const CallId id = call.id;
  if (call.caller_lost) {
    ++metrics_.dropped_replies;
  } else if (call.outcome_claimed()) {
    ++metrics_.late_replies;
    spdlog::debug("late answer from '{}' for send #{} dropped: its sender already had its outcome",
                  call.peer, id);
  } else {
    forward_reply_(call, frames);
  }
  calls_.erase(id);
}

void Broker::send_expired_(Call& call) {
  const CallId id = call.id;
  if (call.state == CallState::waiting) {
    forget_held_(call);
    answer_caller_(call, wire::UNDELIVERABLE,
                   "held " + std::to_string(millis_between(call.accepted, now_)) +
                       " ms; peer never connected");
    calls_.erase(id);
    return;
  }
  // Stays in the table until the peer answers (a late reply) or is lost.
  answer_caller_(call, wire::DEADLINE_EXCEEDED,
                 "peer '" + call.peer + "' did not take the message within " +
                     std::to_string(millis_between(call.accepted, now_)) + " ms");
}

void Broker::peer_lost_(CallId id, const std::string& why) {
  Call* call = calls_.find(id);
  if (call == nullptr) return;
  answer_caller_(*call, wire::UNDELIVERABLE,
                 "peer '" + call->peer + "' left before taking the message (" + why + ")");
  calls_.erase(id);
}

void Broker::forget_held_(const Call& call) {
  auto it = held_.find(call.peer);
  if (it == held_.end()) return;
  std::erase(it->second, call.id);
  if (it->second.empty()) held_.erase(it);
}

}  // namespace sagebus::broker
