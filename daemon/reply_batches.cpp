#include "reply_batches.hpp"

namespace sagebus::broker {

namespace {

// Two length varints of at most 10 bytes each around a record's header and payload.
constexpr std::size_t kRecordOverhead = 20;

}  // namespace

std::size_t ReplyBatch::bytes_of(std::size_t header,
                                 std::span<const zmq::message_t> payload) noexcept {
  return kRecordOverhead + header + (payload.empty() ? 0 : payload.front().size());
}

bool ReplyBatch::batchable(std::size_t header, std::span<const zmq::message_t> payload) noexcept {
  return payload.size() <= 1 &&
         (payload.empty() || payload.front().size() <= wire::kMaxBatchedPayload) &&
         bytes_of(header, payload) <= wire::kMaxBatchBytes;
}

bool ReplyBatch::fits(std::size_t header, std::span<const zmq::message_t> payload) const noexcept {
  return size() < wire::kMaxBatchRecords &&
         bytes_ + bytes_of(header, payload) <= wire::kMaxBatchBytes;
}

void ReplyBatch::add(std::string_view header, std::span<zmq::message_t> payload,
                     wire::Status status) {
  bytes_ += bytes_of(header.size(), payload);
  if (empty()) {
    first_header_.rebuild(header.data(), header.size());
    first_has_payload_ = !payload.empty();
    if (first_has_payload_) first_payload_.move(payload.front());
  } else {
    if (size() == 1) writer_.add_message(view(first_header_), view(first_payload_));
    writer_.add_message(header, payload.empty() ? std::string_view() : view(payload.front()));
  }
  statuses_.push_back(status);
}

void ReplyBatch::clear() noexcept {
  statuses_.clear();
  writer_.clear();
  bytes_ = 0;
  first_has_payload_ = false;
  first_payload_.rebuild();
}

}  // namespace sagebus::broker
