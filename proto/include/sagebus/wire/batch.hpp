// Batches: several events, publishes or whole messages in the one payload frame of an
// EVENT_BATCH, a PUBLISH_BATCH or a BATCH (docs/protocol.md, "Batches"). A ZeroMQ message
// costs its sender and its receiver far more than the bytes of a small event (about 1,300
// instructions each side in libzmq), so a subscriber due many small events at once gets
// them as one message, a publisher with several small publishes waiting sends them as one,
// and a service, or the broker, with several small replies due at once sends them as one.
//
// The frame is a sequence of records and nothing else. Numbers are varints (7 bits a
// byte, low first, at most 10 bytes, as in protobuf); a string is a length varint and
// that many bytes.
//
//   EVENT_BATCH record:    subscription, dropped, topic, payload
//   PUBLISH_BATCH record:  topic, payload
//   BATCH record:          header, payload
//
// A BATCH record is a whole message: its header is an encoded Header, as a header frame
// holds it, and its payload is that message's one payload frame (empty when it has none).
//
// A topic of length 0 repeats the topic of the record before it (a valid topic is never
// empty); the first record must name one. A record's topic is not checked here: the
// broker checks a PUBLISH_BATCH's as it checks a PUBLISH's.
//
// BatchWriter builds a frame, BatchReader reads one, MessageBatch gathers whole messages
// for a BATCH (sending a lone one as itself), checking every length against the
// frame's end: a record cut short, a varint longer than 10 bytes or a first record
// without a topic stops it with malformed() set, never a read past the end.
//
// Value types; not thread safe. BatchReader views the bytes it was given: they must
// outlive it and the string_views it returns. It is inline: a subscriber reads every event
// through it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "sagebus/wire/varint.hpp"

namespace sagebus::wire {

// Payloads larger than this are never batched: they travel alone (EVENT, PUBLISH, REPLY,
// REQUEST), their frames moved, not copied.
inline constexpr std::size_t kMaxBatchedPayload = 1024;
// The most bytes a writer (the broker, the SDK) puts in one batch frame: libzmq's own TCP
// write batch. Larger batches would save little more per event, and a connection's queue,
// which counts messages, holds batches of up to this size (docs/protocol.md, "Batches").
inline constexpr std::size_t kMaxBatchBytes = 8 * 1024;
// A stream's chunks (CHUNK, in a BATCH) are batched larger: payloads of up to 16 KiB, and
// a batch of chunks may grow to 64 KiB. A message costs libzmq, the kernel and the thread
// it wakes far more than copying a few KiB, and a stream of 4 KiB chunks goes 15 to a
// message instead of one (docs/benchmarks.md, "Streams"). The stream's credit, not the
// queue, bounds how many are outstanding, so larger batches hold no more memory.
inline constexpr std::size_t kMaxBatchedChunk = 16 * 1024;
inline constexpr std::size_t kMaxChunkBatchBytes = 64 * 1024;

// The limits above for one kind of message in a BATCH.
struct BatchLimits {
  std::size_t payload;  // the largest payload batched
  std::size_t bytes;    // the most bytes of records a batch grows to with it
};
inline constexpr BatchLimits kCallBatchLimits{kMaxBatchedPayload, kMaxBatchBytes};
inline constexpr BatchLimits kChunkBatchLimits{kMaxBatchedChunk, kMaxChunkBatchBytes};

// The most records in one batch. The broker refuses a PUBLISH_BATCH with more, so that one
// message cannot hold its loop for long.
inline constexpr std::size_t kMaxBatchRecords = 1024;

struct EventRecord {
  std::uint64_t subscription = 0;
  std::uint64_t dropped = 0;
  std::string_view topic;
  std::string_view payload;
};

struct PublishRecord {
  std::string_view topic;
  std::string_view payload;
};

struct MessageRecord {
  std::string_view header;
  std::string_view payload;
};

class BatchWriter {
 public:
  // Whether one more record with this topic and payload keeps the frame within `limit`
  // bytes and kMaxBatchRecords records. (Counted as if the topic were written in full.)
  bool fits(std::string_view topic, std::size_t payload, std::size_t limit) const noexcept {
    return records_ < kMaxBatchRecords &&
           size_ + kMaxRecordOverhead + topic.size() + payload <= limit;
  }
  void add_event(std::uint64_t subscription, std::uint64_t dropped, std::string_view topic,
                 std::string_view payload);
  void add_publish(std::string_view topic, std::string_view payload);
  // A BATCH record: fits() with the header in place of a topic says whether it fits.
  void add_message(std::string_view header, std::string_view payload);

  std::size_t records() const noexcept { return records_; }
  bool empty() const noexcept { return records_ == 0; }
  std::string_view bytes() const noexcept {
    return {reinterpret_cast<const char*>(buffer_.data()), size_};
  }
  // The frame: a copy of bytes().
  zmq::message_t frame() const { return zmq::message_t(buffer_.data(), size_); }
  // Empties the batch, keeping its storage.
  void clear() noexcept;

 private:
  // Four varints of at most 10 bytes each around an event's topic and payload.
  static constexpr std::size_t kMaxRecordOverhead = 40;

  // Room at the end of the batch for a record with this topic and payload.
  std::uint8_t* reserve_(std::size_t topic, std::size_t payload);
  // Writes the topic (or 0 for the one before) and returns the end of it.
  std::uint8_t* topic_(std::uint8_t* out, std::string_view topic);
  static std::uint8_t* string_(std::uint8_t* out, std::string_view value);

  // The first size_ bytes are the batch; the buffer only grows, so that a writer reused
  // for batch after batch allocates nothing.
  std::vector<std::uint8_t> buffer_;
  std::size_t size_ = 0;
  std::size_t records_ = 0;
  // Where the last topic written in full is in buffer_.
  std::size_t topic_at_ = 0;
  std::size_t topic_size_ = 0;
};

// Whole messages gathered to go as one BATCH, by a sender that sends a lone message as
// itself (the broker's replies to a caller, a service's replies). The first message is
// kept as its frames, its payload moved, not copied, so that a batch of one goes exactly
// as that message would have without batches; a second one makes it a BATCH, written as
// records.
class MessageBatch {
 public:
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  // The bytes a message's record takes at most, with its header and payload.
  static std::size_t record_bytes(std::size_t header, std::size_t payload) noexcept {
    return kRecordOverhead + header + payload;
  }
  // Whether one more message of this header and payload keeps the records within `limit`
  // bytes and kMaxBatchRecords messages.
  bool fits(std::size_t header, std::size_t payload, std::size_t limit) const noexcept {
    return size_ < kMaxBatchRecords && bytes_ + record_bytes(header, payload) <= limit;
  }
  // Adds a message: `header` its header's bytes, `payload` its one payload frame (moved
  // from), or nullptr when it has none.
  void add(std::string_view header, zmq::message_t* payload);
  // Adds a message whose one payload frame holds these bytes (copied).
  void add(std::string_view header, std::string_view payload);

  // A batch of one: the frames of its message.
  zmq::message_t& lone_header() noexcept { return first_header_; }
  std::span<zmq::message_t> lone_payload() noexcept {
    return {&first_payload_, first_has_payload_ ? 1u : 0u};
  }
  // A batch of more: the frame of its records.
  zmq::message_t records() const { return writer_.frame(); }
  // Empties the batch, keeping its storage.
  void clear() noexcept;

 private:
  // Two length varints of at most 10 bytes each around a record's header and payload.
  static constexpr std::size_t kRecordOverhead = 20;

  zmq::message_t first_header_;
  zmq::message_t first_payload_;
  bool first_has_payload_ = false;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;  // the records' bytes, the first message's counted as one too
  BatchWriter writer_;
};

class BatchReader {
 public:
  BatchReader(const void* data, std::size_t size) noexcept
      : p_(static_cast<const std::uint8_t*>(data)), end_(p_ + size) {}
  explicit BatchReader(const zmq::message_t& frame) noexcept
      : BatchReader(frame.data(), frame.size()) {}

  // The next record into `out`: false at the end of the frame, or at a malformed record
  // (then malformed() is true, `out` is unspecified, and nothing more is read).
  bool next(EventRecord& out) noexcept {
    if (p_ == end_) return false;
    return (varint_(out.subscription) && varint_(out.dropped) && topic_(out.topic) &&
            string_(out.payload)) ||
           fail_();
  }
  bool next(PublishRecord& out) noexcept {
    if (p_ == end_) return false;
    return (topic_(out.topic) && string_(out.payload)) || fail_();
  }
  bool next(MessageRecord& out) noexcept {
    if (p_ == end_) return false;
    return (string_(out.header) && string_(out.payload)) || fail_();
  }
  bool malformed() const noexcept { return malformed_; }

 private:
  bool varint_(std::uint64_t& value) noexcept { return detail::read_varint(p_, end_, value); }
  bool string_(std::string_view& value) noexcept {
    std::uint64_t size = 0;
    if (!varint_(size) || size > static_cast<std::uint64_t>(end_ - p_)) return false;
    value = {reinterpret_cast<const char*>(p_), static_cast<std::size_t>(size)};
    p_ += size;
    return true;
  }
  bool topic_(std::string_view& topic) noexcept {
    if (!string_(topic)) return false;
    if (!topic.empty()) {
      last_topic_ = topic;
      return true;
    }
    if (last_topic_.empty()) return false;  // the first record names its topic
    topic = last_topic_;
    return true;
  }
  bool fail_() noexcept {
    malformed_ = true;
    p_ = end_;
    return false;
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
  std::string_view last_topic_;
  bool malformed_ = false;
};

}  // namespace sagebus::wire
