#include "sagebus/wire/batch.hpp"

#include "sagebus/wire/varint.hpp"

namespace sagebus::wire {

void BatchWriter::add_event(std::uint64_t subscription, std::uint64_t dropped,
                            std::string_view topic, std::string_view payload) {
  varint_(subscription);
  varint_(dropped);
  topic_(topic);
  string_(payload);
  ++records_;
}

void BatchWriter::add_publish(std::string_view topic, std::string_view payload) {
  topic_(topic);
  string_(payload);
  ++records_;
}

void BatchWriter::clear() noexcept {
  bytes_.clear();
  records_ = 0;
  topic_at_ = 0;
  topic_size_ = 0;
}

void BatchWriter::varint_(std::uint64_t value) {
  for (; value >= 0x80; value >>= 7)
    bytes_.push_back(static_cast<char>(value | 0x80));
  bytes_.push_back(static_cast<char>(value));
}

void BatchWriter::string_(std::string_view value) {
  varint_(value.size());
  bytes_.append(value);
}

void BatchWriter::topic_(std::string_view topic) {
  if (records_ != 0 && !topic.empty() &&
      std::string_view(bytes_).substr(topic_at_, topic_size_) == topic) {
    varint_(0);  // the same as the record before
    return;
  }
  varint_(topic.size());
  topic_at_ = bytes_.size();
  topic_size_ = topic.size();
  bytes_.append(topic);
}

bool BatchReader::next(EventRecord& out) noexcept {
  if (p_ == end_) return false;
  return (varint_(out.subscription) && varint_(out.dropped) && topic_(out.topic) &&
          string_(out.payload)) ||
         fail_();
}

bool BatchReader::next(PublishRecord& out) noexcept {
  if (p_ == end_) return false;
  return (topic_(out.topic) && string_(out.payload)) || fail_();
}

bool BatchReader::varint_(std::uint64_t& value) noexcept {
  return detail::read_varint(p_, end_, value);
}

bool BatchReader::string_(std::string_view& value) noexcept {
  std::uint64_t size = 0;
  if (!varint_(size) || size > static_cast<std::uint64_t>(end_ - p_)) return false;
  value = {reinterpret_cast<const char*>(p_), static_cast<std::size_t>(size)};
  p_ += size;
  return true;
}

bool BatchReader::topic_(std::string_view& topic) noexcept {
  if (!string_(topic)) return false;
  if (!topic.empty()) {
    last_topic_ = topic;
    return true;
  }
  if (last_topic_.empty()) return false;  // the first record names its topic
  topic = last_topic_;
  return true;
}

}  // namespace sagebus::wire
