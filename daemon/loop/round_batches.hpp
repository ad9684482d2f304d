// RoundBatches<Batch>: the batches of one round of the broker's loop, one per connection
// (docs/protocol.md, "Batches"): EventBatches gathers subscribers' events in it,
// CallBatches callers' replies and instances' calls. A round ends when the loop has
// handled what it received at once, or has run its timers; flush() then sends every batch
// that holds something, in the order they were started, and starts the next round.
//
// `Batch` has a RoutingId client_ (set here; this class is its friend), empty(), and is
// default-constructible. Batch objects are reused from round to round (their storage too,
// up to kKeptBatches of them), so a steady load allocates nothing. The batch of a
// connection is found by a view of its routing id. Not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "routing/pending.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/header_writer.hpp"

namespace sagebus::broker {

template <class Batch>
class RoundBatches {
 public:
  // `kind`: what the batches go as (the header() they share).
  explicit RoundBatches(wire::Kind kind) {
    wire::HeaderWriter writer;
    header_ = writer.start(kind).bytes();
  }

  // The batch of connection `client` in this round, started if there is none.
  Batch& of(const RoutingId& client) {
    if (auto it = by_client_.find(client); it != by_client_.end()) return *it->second;
    if (used_ == batches_.size()) batches_.push_back(std::make_unique<Batch>());
    Batch* batch = batches_[used_++].get();
    batch->client_ = client;
    by_client_.emplace(batch->client_, batch);
    return *batch;
  }
  // The batch of connection `client` in this round, if it holds something.
  Batch* pending(std::string_view client) const {
    if (used_ == 0) return nullptr;  // the common case of a round without batches
    const auto it = by_client_.find(client);
    return it != by_client_.end() && !it->second->empty() ? it->second : nullptr;
  }
  // Calls send(batch) for every batch of this round that holds something, in the order
  // they were started, then starts the next round. `send` must empty the batch.
  template <class Send>
  void flush(Send&& send) {
    for (std::size_t i = 0; i < used_; ++i)
      if (!batches_[i]->empty()) send(*batches_[i]);
    used_ = 0;
    by_client_.clear();
    if (batches_.size() > kKeptBatches) batches_.resize(kKeptBatches);
    ++round_;
  }
  // The header frame of a batch.
  zmq::message_t header() const { return zmq::message_t(header_.data(), header_.size()); }
  // This round's number, for callers that remember a batch for the round.
  std::uint64_t round() const noexcept { return round_; }

  static constexpr std::size_t kKeptBatches = 64;

 private:
  std::string header_;
  std::uint64_t round_ = 1;
  std::vector<std::unique_ptr<Batch>> batches_;  // the first used_ are this round's
  std::size_t used_ = 0;
  // This round's batches by connection; the keys view Batch::client_.
  std::unordered_map<std::string_view, Batch*> by_client_;
};

}  // namespace sagebus::broker
