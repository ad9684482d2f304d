// EventHeader: the serialized sagebus.wire.Header of the EVENTs one publish fans out,
// built by hand rather than through protobuf, once per publish.
//
// Every EVENT of a publish has the same version, kind and topic; only its subscription
// id and gap differ. reset() writes those three fields once; frame() appends a
// subscriber's two and returns the whole header, ready to send. A protobuf parser reads
// fields in any order and the result is exactly the Header the generated code would have
// written (tests/unit/test_event_header.cpp decodes it to check). Proto3 leaves zero
// values out, and so does this.
//
// The wire format used, from protobuf's encoding guide: each field is a key varint
// (field number << 3 | wire type) followed by a varint (type 0) or by a length varint
// and that many bytes (type 2); varints are 7 bits a byte, low first, with the high bit
// set on every byte but the last.
//
// A value type; not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "sagebus/wire.pb.h"
#include "sagebus/wire/frame.hpp"

namespace sagebus::broker {

class EventHeader {
 public:
  // Starts the header of the EVENTs for one publish on `topic`.
  void reset(std::string_view topic) {
    prefix_.clear();
    put_field(wire::Header::kVersionFieldNumber, wire::kProtocolVersion);
    put_field(wire::Header::kKindFieldNumber, wire::EVENT);
    if (!topic.empty()) {
      put_varint(key(wire::Header::kTopicFieldNumber, kLengthDelimited));
      put_varint(topic.size());
      prefix_.append(topic);
    }
  }

  // The header of the EVENT for subscription `subscription` that missed `dropped` events
  // just before it.
  zmq::message_t frame(std::uint64_t subscription, std::uint64_t dropped) const {
    std::uint8_t tail[4 * kMaxVarint];
    std::uint8_t* end = tail;
    if (subscription != 0) end = put_field(end, wire::Header::kSubscriptionFieldNumber, subscription);
    if (dropped != 0) end = put_field(end, wire::Header::kDroppedFieldNumber, dropped);
    const auto tail_size = static_cast<std::size_t>(end - tail);
    zmq::message_t out(prefix_.size() + tail_size);
    auto* data = static_cast<std::uint8_t*>(out.data());
    std::memcpy(data, prefix_.data(), prefix_.size());
    std::memcpy(data + prefix_.size(), tail, tail_size);
    return out;
  }

 private:
  static constexpr std::size_t kMaxVarint = 10;
  static constexpr std::uint64_t kVarint = 0;
  static constexpr std::uint64_t kLengthDelimited = 2;

  static std::uint64_t key(int field, std::uint64_t type) {
    return static_cast<std::uint64_t>(field) << 3 | type;
  }
  static std::uint8_t* put_varint(std::uint8_t* out, std::uint64_t v) {
    for (; v >= 0x80; v >>= 7)
      *out++ = static_cast<std::uint8_t>(v | 0x80);
    *out++ = static_cast<std::uint8_t>(v);
    return out;
  }
  static std::uint8_t* put_field(std::uint8_t* out, int field, std::uint64_t value) {
    return put_varint(put_varint(out, key(field, kVarint)), value);
  }
  void put_varint(std::uint64_t v) {
    std::uint8_t buffer[kMaxVarint];
    prefix_.append(reinterpret_cast<const char*>(buffer),
                   static_cast<std::size_t>(put_varint(buffer, v) - buffer));
  }
  void put_field(int field, std::uint64_t value) {
    if (value == 0) return;
    put_varint(key(field, kVarint));
    put_varint(value);
  }

  std::string prefix_;
};

}  // namespace sagebus::broker
