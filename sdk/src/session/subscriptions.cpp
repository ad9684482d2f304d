// Subscriptions: SUBSCRIBE and its replay, credit, and the events delivered.
#include "session.hpp"

#include <algorithm>

#include "../subscription_core.hpp"
#include "protocol.hpp"

namespace sagebus::detail {

using namespace protocol;
using std::chrono::duration_cast;

void Session::handle_(command::AddSubscription& c) {
  subscription_cores_.push_back(c.core);
  if (link_ == Link::ready) send_subscribe_(c.core);
}

void Session::handle_(command::RemoveSubscription& c) {
  std::erase(subscription_cores_, c.core);
  if (subscriptions_.erase(c.core->wire_id) && link_ == Link::ready) {
    out_.Clear();
    out_.set_kind(wire::UNSUBSCRIBE);
    out_.set_id(++next_id_);
    out_.set_subscription(c.core->wire_id);
    (void)send_();
  }
}

void Session::handle_(command::Credit& c) {
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
void Session::send_subscribe_(const std::shared_ptr<SubscriptionCore>& core) {
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

void Session::on_event_() {
  std::string_view payload;
  if (!frames_.empty()) payload = frames_.front().to_string_view();
  deliver_(subscription_(in_.subscription()), in_.topic(), payload, in_.dropped());
}

// Several events in one frame (sagebus/wire/batch.hpp), in order. A malformed record
// ends the batch: the events before it are delivered.
void Session::on_event_batch_() {
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
const std::shared_ptr<SubscriptionCore>* Session::subscription_(std::uint64_t id) const {
  auto it = subscriptions_.find(id);
  return it == subscriptions_.end() ? nullptr : &it->second;
}

void Session::deliver_(const std::shared_ptr<SubscriptionCore>* core, std::string_view topic,
                       std::string_view payload, std::uint64_t dropped) {
  if (core == nullptr) return;  // unsubscribed meanwhile
  // Flushed at the end of the batch: only the subscriptions that got something, so
  // that a client with thousands of them does not walk them all for every batch.
  if (!(*core)->holds_unflushed()) to_flush_.push_back(*core);
  (*core)->deliver(topic, payload, dropped);
}

}  // namespace sagebus::detail
