#include "routing/pending.hpp"

namespace sagebus::broker {

void Call::reset_() noexcept {
  // Every field, as declared. A field added to Call changes its size and fails this (the
  // size checked is that of 64-bit libstdc++; other targets are not checked).
  static_assert(sizeof(void*) != 8 || sizeof(Call) == 384,
                "a field was added to Call: reset_() must reset it too, then update this size");
  id = 0;
  kind = CallKind::request;
  caller = {};
  caller_id = 0;
  service.clear();
  service_entry = {};
  method.clear();
  routing_key.clear();
  traceparent.clear();
  headers.clear();
  idempotent = false;
  wait_for_ready = false;
  stream = false;
  payload.clear();
  accepted = {};
  deadline = {};
  peer.clear();
  send_deadline = {};
  state = CallState::waiting;
  instance = {};
  retried = false;
  lost_reason.clear();
  caller_lost = false;
  stats = nullptr;
  credit = 0;
  asked = 0;
  chunks = 0;
  parent = 0;
  outcome_claimed_ = false;
  counted_ = false;
  indexed_ = false;
}

PendingCalls::Table::node_type PendingCalls::blank_node_() {
  if (spare_.empty()) {
    scratch_.try_emplace(0);
    return scratch_.extract(scratch_.begin());
  }
  Table::node_type node = std::move(spare_.back());
  spare_.pop_back();
  return node;
}

Call* PendingCalls::enter_(Table::node_type node) {
  Call& call = node.mapped();
  call.id = next_id_++;
  node.key() = call.id;
  call.counted_ = call.caller && !call.outcome_claimed();
  if (call.counted_) {
    if (call.caller.slot >= pending_by_caller_.size())
      pending_by_caller_.resize(call.caller.slot + std::size_t{1});
    CallerCount& count = pending_by_caller_[call.caller.slot];
    if (count.caller != call.caller) count = {call.caller, 0};  // the slot's new owner
    ++count.pending;
  }
  const TimePoint deadline = call.deadline;
  Call* entered = &calls_.insert(std::move(node)).position->second;
  if (entered->kind != CallKind::send && entered->caller) index_(*entered);
  deadlines_.push(deadline, entered->id);
  if (deadlines_.size() > 2 * calls_.size() + 1024) compact_heap_();
  return entered;
}

Call* PendingCalls::find(CallId id) {
  auto it = calls_.find(id);
  return it == calls_.end() ? nullptr : &it->second;
}

const Call* PendingCalls::find(CallId id) const {
  auto it = calls_.find(id);
  return it == calls_.end() ? nullptr : &it->second;
}

void PendingCalls::erase(CallId id) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  uncount_(it->second);
  unindex_(it->second);
  if (spare_.size() >= kSpareNodes) {
    calls_.erase(it);
    return;
  }
  Table::node_type node = calls_.extract(it);
  // Blanked now: the payload's buffers are released at once, not at the node's next use.
  node.mapped().reset_();
  spare_.push_back(std::move(node));
}

std::size_t PendingCalls::CallerKeyHash::operator()(const CallerKey& key) const noexcept {
  // The SDK's ids differ in their low bits (a counter); the handle's words keep two
  // connections' equal ids apart.
  std::uint64_t h = key.id ^ ((std::uint64_t{key.caller.slot} << 32 | key.caller.generation) *
                              0x9e3779b97f4a7c15ULL);
  h ^= h >> 29;
  return static_cast<std::size_t>(h);
}

void PendingCalls::index_(Call& call) {
  ByCaller::node_type node;
  if (spare_keys_.empty()) {
    scratch_keys_.try_emplace(CallerKey{});
    node = scratch_keys_.extract(scratch_keys_.begin());
  } else {
    node = std::move(spare_keys_.back());
    spare_keys_.pop_back();
  }
  node.key() = CallerKey{call.caller, call.caller_id};
  node.mapped() = call.id;
  auto inserted = by_caller_.insert(std::move(node));
  if (inserted.inserted) {
    call.indexed_ = true;
  } else if (spare_keys_.size() < kSpareNodes) {
    // The caller has a call of that id already (no SDK sends one): that one stays found.
    spare_keys_.push_back(std::move(inserted.node));
  }
}

void PendingCalls::unindex_(Call& call) {
  if (!call.indexed_) return;
  call.indexed_ = false;
  auto it = by_caller_.find(CallerKey{call.caller, call.caller_id});
  if (it == by_caller_.end() || it->second != call.id) return;
  if (spare_keys_.size() >= kSpareNodes) {
    by_caller_.erase(it);
    return;
  }
  spare_keys_.push_back(by_caller_.extract(it));
}

Call* PendingCalls::find_by_caller(ClientHandle caller, std::uint64_t caller_id) {
  auto it = by_caller_.find(CallerKey{caller, caller_id});
  return it == by_caller_.end() ? nullptr : find(it->second);
}

void PendingCalls::erase_cancelled(CallId id) {
  Call* call = find(id);
  if (call == nullptr) return;
  if (call->state == CallState::dispatched) {
    const Cancelled entry{id, call->instance};
    if (cancelled_.size() < kRecentCancels)
      cancelled_.push_back(entry);
    else
      cancelled_[next_cancelled_] = entry;
    next_cancelled_ = (next_cancelled_ + 1) % kRecentCancels;
  }
  erase(id);
}

bool PendingCalls::claim_outcome(Call& call) {
  if (!call.claim_outcome()) return false;
  uncount_(call);
  return true;
}

std::size_t PendingCalls::pending_of(ClientHandle caller) const {
  if (caller.slot >= pending_by_caller_.size()) return 0;
  const CallerCount& count = pending_by_caller_[caller.slot];
  return count.caller == caller ? count.pending : 0;
}

void PendingCalls::uncount_(Call& call) {
  if (!call.counted_) return;
  call.counted_ = false;
  CallerCount& count = pending_by_caller_[call.caller.slot];  // made by enter_
  if (count.caller == call.caller && count.pending > 0) --count.pending;
}

void PendingCalls::set_dispatched(Call& call, ClientHandle instance) {
  call.state = CallState::dispatched;
  call.instance = instance;
}

void PendingCalls::set_waiting(Call& call) {
  call.state = CallState::waiting;
  call.instance = {};
}

void PendingCalls::set_deadline(Call& call, TimePoint deadline) {
  if (deadline == call.deadline) return;  // one heap entry per (deadline, call)
  call.deadline = deadline;
  deadlines_.push(deadline, call.id);
  if (deadlines_.size() > 2 * calls_.size() + 1024) compact_heap_();
}

PendingCalls::ReplyCheck PendingCalls::check_reply(CallId id, ClientHandle from, Call** out) {
  Call* call = find(id);
  if (call == nullptr) {
    // Rare (a reply nobody was given, or one after a cancel): a scan of at most
    // kRecentCancels ids.
    for (const Cancelled& c : cancelled_)
      if (c.id == id && c.instance == from) return ReplyCheck::cancelled;
    return ReplyCheck::unknown_id;
  }
  if (call->state != CallState::dispatched || call->instance != from)
    return ReplyCheck::wrong_sender;
  *out = call;
  return ReplyCheck::accepted;
}

void PendingCalls::drop_stale_top_() {
  while (!deadlines_.empty()) {
    const Call* call = find(deadlines_.top().second);
    if (call != nullptr && !call->outcome_claimed() && call->deadline == deadlines_.top().first)
      return;
    deadlines_.pop();
  }
}

std::optional<TimePoint> PendingCalls::next_deadline() {
  drop_stale_top_();
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.top().first;
}

std::vector<CallId> PendingCalls::take_expired(TimePoint now) {
  std::vector<CallId> expired;
  for (drop_stale_top_(); !deadlines_.empty() && deadlines_.top().first <= now; drop_stale_top_()) {
    // A deadline moved away and back leaves two equal entries, which pop together.
    if (expired.empty() || expired.back() != deadlines_.top().second)
      expired.push_back(deadlines_.top().second);
    deadlines_.pop();
  }
  return expired;
}

void PendingCalls::compact_heap_() {
  std::vector<Entry> live;
  live.reserve(calls_.size());
  for (const auto& [id, call] : calls_)
    if (!call.outcome_claimed()) live.emplace_back(call.deadline, id);
  deadlines_.assign(std::move(live));
}

CallId first_dispatch_id(std::chrono::system_clock::time_point started) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(started.time_since_epoch());
  constexpr CallId kBelowTopBit = (CallId{1} << 63) - 1;
  return ((static_cast<CallId>(ms.count()) << 20) & kBelowTopBit) | 1;
}

}  // namespace sagebus::broker
