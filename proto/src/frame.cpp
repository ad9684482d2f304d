#include "sagebus/wire/frame.hpp"

#include <google/protobuf/stubs/common.h>

#include <cstring>
#include <limits>

#include "sagebus/wire/varint.hpp"

namespace sagebus::wire {

namespace {

// Protobuf's wire format (its encoding guide): a field is a key varint, field number << 3
// | wire type, then a varint (type 0) or a length varint and that many bytes (type 2).
// Varints are 7 bits a byte, low first, the high bit set on every byte but the last.
constexpr std::uint32_t kVarint = 0;
constexpr std::uint32_t kLengthDelimited = 2;

// Whether a string field's bytes pass protobuf's own check for proto3 strings. ASCII,
// which names and topics are, is valid UTF-8 by any definition and is checked here a word
// at a time; anything else asks protobuf's checker, so that both sides agree exactly on
// what is valid (its parser fails on the rest and logs why, which the fallback keeps).
bool valid_utf8(const std::uint8_t* p, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, p + i, sizeof word);
    if ((word & 0x8080808080808080ULL) != 0) break;
  }
  for (; i < n; ++i)
    if (p[i] >= 0x80)
      return google::protobuf::internal::IsStructurallyValidUTF8(reinterpret_cast<const char*>(p),
                                                                 static_cast<int>(n));
  return true;
}

// Empties `out` exactly as Clear() does, for about half its cost: Clear() empties the map
// and each of the eight strings through a call into libprotobuf, and checks the arena
// once per submessage, whatever they hold; most of them hold nothing, and what does not
// is left alone here. It names every field of Header, so that only unknown fields are
// left for Clear() at the end (a field added to wire.proto and not here would be too, at
// Clear()'s cost).
void clear(Header& out) {
  if (out.headers_size() != 0) out.clear_headers();
  if (out.has_hello()) out.clear_hello();
  if (out.has_welcome()) out.clear_welcome();
  if (out.has_registration()) out.clear_registration();
  if (!out.message().empty()) out.clear_message();
  if (!out.service().empty()) out.clear_service();
  if (!out.method().empty()) out.clear_method();
  if (!out.routing_key().empty()) out.clear_routing_key();
  if (!out.traceparent().empty()) out.clear_traceparent();
  if (!out.topic().empty()) out.clear_topic();
  if (!out.peer().empty()) out.clear_peer();
  if (!out.queue().empty()) out.clear_queue();
  out.clear_version();
  out.clear_kind();
  out.clear_id();
  out.clear_status();
  out.clear_timeout_ms();
  out.clear_idempotent();
  out.clear_wait_for_ready();
  out.clear_subscription();
  out.clear_dropped();
  out.clear_credit();
  out.clear_confirm();
  out.clear_count();
  out.clear_hold_ms();
  out.clear_tag();
  out.clear_no_answer();
  out.clear_idle();
  out.clear_stream();
  // Only unknown fields can be left, after protobuf parsed the previous frame. Neither
  // runtime's proto3 code has unknown_fields(), and the lite one (sage-busd's) has no
  // reflection either; but a header holding nothing else encodes to nothing.
  if (out.ByteSizeLong() != 0) out.Clear();
}

}  // namespace

namespace detail {

bool parse_common(const void* data, std::size_t size, Header& out) {
  // Emptied first, as ParseFromArray does: whatever `out` held (a map, a submessage,
  // unknown fields, fields the caller set) goes, and absent fields read as zero.
  clear(out);
  const auto* p = static_cast<const std::uint8_t*>(data);
  const auto* const end = p + size;
  while (p != end) {
    // Keys of the fields handled here take one or two bytes. Protobuf reads a two-byte
    // key whatever its second byte (0x88 0x00 is key 8, like 0x08); longer keys go to it.
    std::uint32_t tag = *p++;
    if (tag >= 0x80) {
      if (p == end || *p >= 0x80) return false;
      tag = (tag & 0x7f) | static_cast<std::uint32_t>(*p++) << 7;
    }
    if ((tag & 7) == kVarint) {
      std::uint64_t v;
      if (!read_varint(p, end, v)) return false;
      const auto u32 = static_cast<std::uint32_t>(v);
      switch (tag >> 3) {
        case Header::kVersionFieldNumber:
          out.set_version(u32);
          break;
        // Proto3 enums are open: any value is kept, as the int the generated parser
        // casts it to.
        case Header::kKindFieldNumber:
          out.set_kind(static_cast<Kind>(static_cast<std::int32_t>(u32)));
          break;
        case Header::kIdFieldNumber:
          out.set_id(v);
          break;
        case Header::kStatusFieldNumber:
          out.set_status(static_cast<Status>(static_cast<std::int32_t>(u32)));
          break;
        case Header::kTimeoutMsFieldNumber:
          out.set_timeout_ms(u32);
          break;
        case Header::kIdempotentFieldNumber:
          out.set_idempotent(v != 0);
          break;
        case Header::kWaitForReadyFieldNumber:
          out.set_wait_for_ready(v != 0);
          break;
        case Header::kSubscriptionFieldNumber:
          out.set_subscription(v);
          break;
        case Header::kDroppedFieldNumber:
          out.set_dropped(v);
          break;
        case Header::kCreditFieldNumber:
          out.set_credit(u32);
          break;
        case Header::kConfirmFieldNumber:
          out.set_confirm(v != 0);
          break;
        case Header::kCountFieldNumber:
          out.set_count(v);
          break;
        case Header::kHoldMsFieldNumber:
          out.set_hold_ms(u32);
          break;
        case Header::kTagFieldNumber:
          out.set_tag(v);
          break;
        case Header::kNoAnswerFieldNumber:
          out.set_no_answer(v != 0);
          break;
        case Header::kIdleFieldNumber:
          out.set_idle(v != 0);
          break;
        case Header::kDeadlineUsFieldNumber:
          out.set_deadline_us(v);
          break;
        case Header::kStreamFieldNumber:
          out.set_stream(v != 0);
          break;
        // Field 0, unknown fields, and known fields sent as a varint though they are not
        // one (protobuf keeps the last two as unknown fields).
        default:
          return false;
      }
    } else if ((tag & 7) == kLengthDelimited) {
      // Protobuf reads lengths of up to 5 bytes; four (up to 256 MiB) are ample here.
      std::uint64_t n;
      const std::uint8_t* const length_at = p;
      if (!read_varint(p, end, n) || p - length_at > 4 || n > static_cast<std::size_t>(end - p))
        return false;
      std::string* field = nullptr;
      switch (tag >> 3) {
        case Header::kMessageFieldNumber:
          field = out.mutable_message();
          break;
        case Header::kServiceFieldNumber:
          field = out.mutable_service();
          break;
        case Header::kMethodFieldNumber:
          field = out.mutable_method();
          break;
        case Header::kRoutingKeyFieldNumber:
          field = out.mutable_routing_key();
          break;
        case Header::kTraceparentFieldNumber:
          field = out.mutable_traceparent();
          break;
        case Header::kTopicFieldNumber:
          field = out.mutable_topic();
          break;
        case Header::kPeerFieldNumber:
          field = out.mutable_peer();
          break;
        case Header::kQueueFieldNumber:
          field = out.mutable_queue();
          break;
        // The headers map, the submessages, unknown fields, and scalars sent
        // length-delimited.
        default:
          return false;
      }
      if (!valid_utf8(p, n)) return false;
      // Into the mutable string, as protobuf's own parser does: set_service(p, n) would
      // build a temporary std::string first. clear() and append() rather than assign(),
      // whose general case (the source may overlap the string) costs twice as much.
      field->clear();
      field->append(reinterpret_cast<const char*>(p), n);
      p += n;
    } else {
      // Wire types 1 and 5 (no field of Header has them), groups, and type 6 and 7, which
      // do not exist.
      return false;
    }
  }
  return true;
}

}  // namespace detail

zmq::message_t encode(Header& header) {
  header.set_version(kProtocolVersion);
  zmq::message_t frame(header.ByteSizeLong());
  header.SerializeWithCachedSizesToArray(static_cast<std::uint8_t*>(frame.data()));
  return frame;
}

DecodeResult decode(const zmq::message_t& frame, Header& out, std::size_t max_bytes) {
  // Each of size() and data() is a call into libzmq; once is enough.
  return decode(frame.data(), frame.size(), out, max_bytes);
}

DecodeResult decode(const void* const data, const std::size_t size, Header& out,
                    std::size_t max_bytes) {
  // ParseFromArray takes an int; no limit may let a larger frame reach it.
  if (size > max_bytes || size > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    return DecodeResult::too_large;
  // What the hand-written parser does not take, protobuf parses again from the start.
  if (!detail::parse_common(data, size, out) && !out.ParseFromArray(data, static_cast<int>(size)))
    return DecodeResult::malformed;
  if (out.version() != kProtocolVersion) return DecodeResult::bad_version;
  return DecodeResult::ok;
}

std::optional<KindAndId> peek_kind_and_id(const zmq::message_t& frame) {
  const auto* p = static_cast<const std::uint8_t*>(frame.data());
  const std::uint8_t* const end = p + frame.size();
  std::optional<std::uint64_t> kind;
  // Keys of fields 1, 2 and 3 as varints are one byte each: 0x08, 0x10, 0x18.
  for (std::uint8_t expected : {std::uint8_t{0x08}, std::uint8_t{0x10}, std::uint8_t{0x18}}) {
    if (p == end || *p != expected) {
      if (expected == 0x08) continue;  // version is optional here; kind and id are not
      return std::nullopt;
    }
    ++p;
    std::uint64_t value = 0;
    if (!detail::read_varint(p, end, value)) return std::nullopt;
    if (expected == 0x10) kind = value;
    if (expected == 0x18 && value != 0 && kind)
      return KindAndId{static_cast<Kind>(static_cast<int>(*kind)), value};
  }
  return std::nullopt;
}

std::string_view status_name(Status status) {
  if (!Status_IsValid(status)) return "UNKNOWN_STATUS";
  return Status_Name(status);
}

std::string_view kind_name(Kind kind) {
  if (!Kind_IsValid(kind)) return "UNKNOWN_KIND";
  return Kind_Name(kind);
}

std::string_view strategy_name(Strategy strategy) {
  if (!Strategy_IsValid(strategy)) return "UNKNOWN_STRATEGY";
  return Strategy_Name(strategy);
}

std::optional<std::string> check_name(std::string_view what, std::string_view name) {
  if (name.empty()) return std::string(what) + " is empty";
  if (name.size() > kMaxNameBytes)
    return std::string(what) + " is " + std::to_string(name.size()) + " bytes long; the limit is " +
           std::to_string(kMaxNameBytes);
  for (std::size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '/' || c == '-' ||
                    (c == '$' && i == 0);
    if (!ok)
      return std::string(what) + " '" + std::string(name) + "' has a character outside " +
             "[A-Za-z0-9_.:/-] at offset " + std::to_string(i);
  }
  return std::nullopt;
}

}  // namespace sagebus::wire
