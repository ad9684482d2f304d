#include "loop/event_batches.hpp"

namespace sagebus::broker {

void EventBatch::add(Subscription& sub, std::string_view topic, std::string_view payload) {
  const std::uint64_t gap = sub.add_to_batch();
  writer_.add_event(sub.id, gap, topic, payload);
  held_.push_back({&sub, gap});
}

void EventBatch::settle(bool sent) noexcept {
  for (const Held& held : held_) {
    if (sent)
      held.sub->batch_sent();
    else
      held.sub->batch_refused(held.gap);
  }
  held_.clear();
  writer_.clear();
}

EventBatch& EventBatches::of(Subscription& sub) {
  if (sub.batch_round == round()) return *sub.batch;
  EventBatch& batch = of(sub.client);
  sub.batch = &batch;
  sub.batch_round = round();
  return batch;
}

}  // namespace sagebus::broker
