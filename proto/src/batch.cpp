#include "sagebus/wire/batch.hpp"

#include <algorithm>
#include <cstring>

namespace sagebus::wire {

void BatchWriter::add_event(std::uint64_t subscription, std::uint64_t dropped,
                            std::string_view topic, std::string_view payload) {
  std::uint8_t* out = reserve_(topic.size(), payload.size());
  out = detail::put_varint(out, subscription);
  out = detail::put_varint(out, dropped);
  out = string_(topic_(out, topic), payload);
  size_ = static_cast<std::size_t>(out - buffer_.data());
  ++records_;
}

void BatchWriter::add_publish(std::string_view topic, std::string_view payload) {
  std::uint8_t* out = string_(topic_(reserve_(topic.size(), payload.size()), topic), payload);
  size_ = static_cast<std::size_t>(out - buffer_.data());
  ++records_;
}

void BatchWriter::add_message(std::string_view header, std::string_view payload) {
  std::uint8_t* out = string_(string_(reserve_(header.size(), payload.size()), header), payload);
  size_ = static_cast<std::size_t>(out - buffer_.data());
  ++records_;
}

namespace {

std::string_view view_of(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

}  // namespace

void MessageBatch::add(std::string_view header, zmq::message_t* payload) {
  if (size_ != 0) return add(header, payload != nullptr ? view_of(*payload) : std::string_view());
  bytes_ += record_bytes(header.size(), payload != nullptr ? payload->size() : 0);
  first_header_.rebuild(header.data(), header.size());
  first_has_payload_ = payload != nullptr;
  if (first_has_payload_) first_payload_.move(*payload);
  ++size_;
}

void MessageBatch::add(std::string_view header, std::string_view payload) {
  if (size_ == 0) {  // kept as frames, to go as itself if it stays alone
    zmq::message_t frame(payload.data(), payload.size());
    return add(header, &frame);
  }
  bytes_ += record_bytes(header.size(), payload.size());
  if (size_ == 1) writer_.add_message(view_of(first_header_), view_of(first_payload_));
  writer_.add_message(header, payload);
  ++size_;
}

void MessageBatch::clear() noexcept {
  size_ = 0;
  bytes_ = 0;
  first_has_payload_ = false;
  first_payload_.rebuild();
  writer_.clear();
}

void BatchWriter::clear() noexcept {
  size_ = 0;
  records_ = 0;
  topic_at_ = 0;
  topic_size_ = 0;
}

std::uint8_t* BatchWriter::reserve_(std::size_t topic, std::size_t payload) {
  const std::size_t n = kMaxRecordOverhead + topic + payload;
  if (buffer_.size() - size_ < n) buffer_.resize(std::max(2 * buffer_.size(), size_ + n));
  return buffer_.data() + size_;
}

std::uint8_t* BatchWriter::topic_(std::uint8_t* out, std::string_view topic) {
  if (records_ != 0 && !topic.empty() && topic.size() == topic_size_ &&
      std::memcmp(buffer_.data() + topic_at_, topic.data(), topic.size()) == 0) {
    *out++ = 0;  // the same as the record before
    return out;
  }
  out = detail::put_varint(out, topic.size());
  topic_at_ = static_cast<std::size_t>(out - buffer_.data());
  topic_size_ = topic.size();
  if (!topic.empty()) std::memcpy(out, topic.data(), topic.size());
  return out + topic.size();
}

std::uint8_t* BatchWriter::string_(std::uint8_t* out, std::string_view value) {
  out = detail::put_varint(out, value.size());
  if (!value.empty()) std::memcpy(out, value.data(), value.size());
  return out + value.size();
}

}  // namespace sagebus::wire
