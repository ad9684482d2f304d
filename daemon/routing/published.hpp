// Published: the payload of one published message as the broker fans it out
// (Broker::publish_). Either the payload frames of a PUBLISH or a queue item, which the
// EVENTs share or take over without copying a byte, or the bytes of one record of a
// PUBLISH_BATCH, which go into EVENT_BATCHes as they are and are made into a frame only if
// some subscriber is sent the message as an EVENT of its own.
//
// Views what it was made from: the frames or bytes must outlive it. Not thread safe.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include <zmq.hpp>

#include "sagebus/wire/batch.hpp"

namespace sagebus::broker {

class Published {
 public:
  explicit Published(std::span<zmq::message_t> frames) noexcept : frames_(frames) {}
  explicit Published(std::string_view bytes) noexcept : bytes_(bytes), from_bytes_(true) {}
  Published(const Published&) = delete;  // frames_ may view made_
  Published& operator=(const Published&) = delete;

  // Whether it may go in an EVENT_BATCH: at most one frame, of at most
  // wire::kMaxBatchedPayload bytes. (No frame at all is an empty payload there.)
  bool batchable() const noexcept {
    if (from_bytes_) return bytes_.size() <= wire::kMaxBatchedPayload;
    return frames_.empty() ||
           (frames_.size() == 1 && frames_[0].size() <= wire::kMaxBatchedPayload);
  }
  // Its bytes; only when batchable().
  std::string_view bytes() const noexcept {
    if (from_bytes_ || frames_.empty()) return bytes_;
    return frames_[0].to_string_view();
  }
  // Its frames; made of its bytes on first use, when it has no frames of its own.
  std::span<zmq::message_t> frames() {
    if (from_bytes_ && frames_.empty()) {
      made_.rebuild(bytes_.data(), bytes_.size());
      frames_ = std::span<zmq::message_t>(&made_, 1);
    }
    return frames_;
  }

 private:
  std::span<zmq::message_t> frames_;
  std::string_view bytes_;
  bool from_bytes_ = false;
  zmq::message_t made_;
};

}  // namespace sagebus::broker
