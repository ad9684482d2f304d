#include "event_batches.hpp"

#include "sagebus/wire/header_writer.hpp"

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

EventBatches::EventBatches() {
  wire::HeaderWriter writer;
  header_ = writer.start(wire::EVENT_BATCH).bytes();
}

EventBatch& EventBatches::of(Subscription& sub) {
  if (sub.batch_round == round_) return *sub.batch;
  EventBatch* batch;
  if (auto it = by_client_.find(sub.client); it != by_client_.end()) {
    batch = it->second;
  } else {
    if (used_ == batches_.size()) batches_.push_back(std::make_unique<EventBatch>());
    batch = batches_[used_++].get();
    batch->client_ = sub.client;
    by_client_.emplace(batch->client_, batch);
  }
  sub.batch = batch;
  sub.batch_round = round_;
  return *batch;
}

void EventBatches::next_round_() {
  ++round_;
  used_ = 0;
  by_client_.clear();
  if (batches_.size() > kKeptBatches) batches_.resize(kKeptBatches);
}

}  // namespace sagebus::broker
