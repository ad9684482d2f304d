// HeaderWriter: a sagebus.wire.Header serialized by hand, for the headers sent on every
// call and answer (the broker's REQUEST, REPLY, DELIVER and EVENT; the SDK's requests and
// replies), where protobuf's Clear(), setters, ByteSizeLong() and serializer cost more
// than the message they write.
//
// start() writes the version and kind; the caller then adds fields in rising field
// number, as protobuf's generated code writes them, and takes frame(). Zero values
// (0, false, "") are left out, as proto3 leaves them out, so the bytes are exactly the
// ones wire::encode would write for the same Header; tests/unit/test_header_writer.cpp
// checks that over many combinations of fields. The one freedom is the headers map
// (field 12): protobuf writes its entries in its Map's iteration order, which no caller
// can rely on, and so does any order here; every order parses to the same Header.
//
// The wire format, from protobuf's encoding guide: each field is a key varint (field
// number << 3 | wire type) followed by a varint (type 0) or by a length varint and that
// many bytes (type 2); varints are 7 bits a byte, low first, the high bit set on every
// byte but the last. An enum is an int32, and a negative one is sign-extended to ten
// bytes. A map entry is a message of its key (field 1) and value (field 2), both always
// written, even when empty.
//
// A value type whose buffer is reused from one message to the next; not thread safe.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "sagebus/wire.pb.h"
#include "sagebus/wire/frame.hpp"

namespace sagebus::wire {

class HeaderWriter {
 public:
  // Starts a header of kind `kind`, with the protocol version wire::encode stamps.
  HeaderWriter& start(Kind kind) {
    size_ = 0;
    last_field_ = 0;
    varint(Header::kVersionFieldNumber, kProtocolVersion);
    return enumeration(Header::kKindFieldNumber, kind);
  }

  // A uint32, uint64 or bool field.
  HeaderWriter& varint(int field, std::uint64_t value) {
    if (value == 0) return *this;
    std::uint8_t* out = reserve_(2 * kMaxVarint, field);
    size_ = end_of_(put_varint_(put_varint_(out, key_(field, kVarint)), value));
    return *this;
  }

  // An enum field (Kind, Status): an int32 on the wire, whatever value it holds.
  HeaderWriter& enumeration(int field, int value) {
    return varint(field, static_cast<std::uint64_t>(static_cast<std::int64_t>(value)));
  }

  // A string field.
  HeaderWriter& string(int field, std::string_view value) {
    if (value.empty()) return *this;
    std::uint8_t* out = reserve_(2 * kMaxVarint + value.size(), field);
    out = put_varint_(put_varint_(out, key_(field, kLengthDelimited)), value.size());
    std::memcpy(out, value.data(), value.size());
    size_ = end_of_(out + value.size());
    return *this;
  }

  // One entry of a map<string, string> field; call once per entry, entries together.
  HeaderWriter& map_entry(int field, std::string_view key, std::string_view value) {
    const std::size_t entry = 2 + varint_size_(key.size()) + key.size() +
                              varint_size_(value.size()) + value.size();
    std::uint8_t* out = reserve_(2 * kMaxVarint + entry, field);
    out = put_varint_(put_varint_(out, key_(field, kLengthDelimited)), entry);
    out = put_varint_(put_varint_(out, key_(1, kLengthDelimited)), key.size());
    std::memcpy(out, key.data(), key.size());
    out = put_varint_(put_varint_(out + key.size(), key_(2, kLengthDelimited)), value.size());
    std::memcpy(out, value.data(), value.size());
    size_ = end_of_(out + value.size());
    return *this;
  }

  // Every entry of `map`, in its own order.
  template <class Map>
  HeaderWriter& map(int field, const Map& map) {
    for (const auto& [key, value] : map)
      map_entry(field, key, value);
    return *this;
  }

  // Where the header stands now, and a way back to it: for headers that share a start
  // and differ in their last fields (EventHeader).
  struct Mark {
    std::size_t size;
    int last_field;
  };
  Mark mark() const noexcept { return {size_, last_field_}; }
  HeaderWriter& rewind(Mark to) noexcept {
    size_ = to.size;
    last_field_ = to.last_field;
    return *this;
  }

  // Bytes written so far.
  std::size_t size() const noexcept { return size_; }
  std::string_view bytes() const noexcept {
    return {reinterpret_cast<const char*>(buffer_.data()), size_};
  }
  zmq::message_t frame() const { return zmq::message_t(buffer_.data(), size_); }

 private:
  static constexpr std::size_t kMaxVarint = 10;
  static constexpr std::uint64_t kVarint = 0;
  static constexpr std::uint64_t kLengthDelimited = 2;

  static std::uint64_t key_(int field, std::uint64_t type) {
    return static_cast<std::uint64_t>(field) << 3 | type;
  }
  static std::size_t varint_size_(std::uint64_t v) {
    std::size_t n = 1;
    for (; v >= 0x80; v >>= 7)
      ++n;
    return n;
  }
  static std::uint8_t* put_varint_(std::uint8_t* out, std::uint64_t v) {
    for (; v >= 0x80; v >>= 7)
      *out++ = static_cast<std::uint8_t>(v | 0x80);
    *out++ = static_cast<std::uint8_t>(v);
    return out;
  }
  // Room for `n` more bytes; the buffer only grows, so steady traffic allocates nothing.
  std::uint8_t* reserve_(std::size_t n, int field) {
    // Out of order, the bytes would still parse, but would not be protobuf's.
    assert(field >= last_field_);
    last_field_ = field;
    if (buffer_.size() - size_ < n) buffer_.resize(std::max(2 * buffer_.size(), size_ + n));
    return buffer_.data() + size_;
  }
  std::size_t end_of_(const std::uint8_t* end) const {
    return static_cast<std::size_t>(end - buffer_.data());
  }

  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(256);
  std::size_t size_ = 0;
  int last_field_ = 0;
};

}  // namespace sagebus::wire
