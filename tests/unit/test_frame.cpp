// The header codec and the name rules of proto/: what every side of the wire relies on.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/wire/frame.hpp"

using namespace sagebus;

namespace {

// Raw wire-format bytes, for inputs that protobuf's serializer would never write.
struct Bytes {
  std::string s;
  Bytes& varint(std::uint64_t v) {
    for (; v >= 0x80; v >>= 7)
      s += static_cast<char>(v | 0x80);
    s += static_cast<char>(v);
    return *this;
  }
  Bytes& key(std::uint32_t field, std::uint32_t type) { return varint(field << 3 | type); }
  Bytes& number(std::uint32_t field, std::uint64_t v) { return key(field, 0).varint(v); }
  Bytes& text(std::uint32_t field, const std::string& t) {
    key(field, 2).varint(t.size());
    s += t;
    return *this;
  }
  Bytes& raw(const std::string& r) {
    s += r;
    return *this;
  }
};

// What disagrees between decode's hand-written parser and protobuf's ParseFromArray on
// `bytes`, parsed into `reused` (which keeps whatever the previous input left in it);
// empty when they agree. Sets `took` to whether the hand-written parser took the bytes.
std::string disagreement(const std::string& bytes, wire::Header& reused, bool& took) {
  wire::Header reference;
  const bool accepted = reference.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  took = wire::detail::parse_common(bytes.data(), bytes.size(), reused);
  if (took && !accepted) return "the hand-written parser takes bytes that protobuf refuses";
  if (took && !google::protobuf::util::MessageDifferencer::Equals(reused, reference))
    return "the hand-written parser reads [" + reused.ShortDebugString() + "], protobuf [" +
           reference.ShortDebugString() + "]";
  if (took && reused.SerializeAsString() != reference.SerializeAsString())
    return "the two re-encode differently";
  // decode() as a whole: the hand-written parser, then protobuf where it did not take them.
  const zmq::message_t frame(bytes.data(), bytes.size());
  const auto decoded = wire::decode(frame, reused, bytes.size());
  const auto expected = !accepted ? wire::DecodeResult::malformed
                        : reference.version() == wire::kProtocolVersion
                            ? wire::DecodeResult::ok
                            : wire::DecodeResult::bad_version;
  if (decoded != expected)
    return "decode returns " + std::to_string(static_cast<int>(decoded)) + ", not " +
           std::to_string(static_cast<int>(expected));
  if (accepted && !google::protobuf::util::MessageDifferencer::Equals(reused, reference))
    return "decode reads [" + reused.ShortDebugString() + "], protobuf [" +
           reference.ShortDebugString() + "]";
  return {};
}

std::string hex(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// A header holding something in every field, unknown fields included, so that a parse
// into it shows whether anything of it survives.
wire::Header full_header() {
  wire::Header h;
  const std::string every = Bytes{}
                                .number(1, 3)
                                .number(2, 9)
                                .number(3, 77)
                                .text(5, "old")
                                .text(6, "svc")
                                .text(13, "trace")
                                .text(17, "a.b")
                                .number(26, 5)
                                .number(99, 1)
                                .s;
  REQUIRE(h.ParseFromString(every));
  (*h.mutable_headers())["k"] = "v";
  h.mutable_hello()->set_name("n");
  h.mutable_welcome()->set_heartbeat_ms(1);
  h.mutable_registration()->add_methods("m");
  return h;
}

// Typical headers of every kind, as the SDK and the broker write them.
std::vector<wire::Header> typical_headers() {
  std::vector<wire::Header> out;
  constexpr std::uint64_t kSdkId = (std::uint64_t{1} << 63) | (std::uint64_t{0x2345678} << 32);
  constexpr std::uint64_t kDispatchId = std::uint64_t{1764000000000} << 20;
  for (int k = wire::Kind_MIN; k <= wire::Kind_MAX; ++k) {
    wire::Header h;
    h.set_version(wire::kProtocolVersion);
    h.set_kind(static_cast<wire::Kind>(k));
    h.set_id(kSdkId + static_cast<std::uint64_t>(k));
    switch (h.kind()) {
      case wire::HELLO:
        h.mutable_hello()->set_name("pipeline");
        h.mutable_hello()->set_instance_id("0123abcd");
        break;
      case wire::HEARTBEAT:
        h.set_no_answer(true);
        h.set_idle(true);
        break;
      case wire::WELCOME:
        h.mutable_welcome()->set_broker_session("s-1");
        h.mutable_welcome()->set_max_payload(1 << 20);
        break;
      case wire::REGISTER:
        h.set_service("memory");
        h.mutable_registration()->add_methods("retrieve");
        h.mutable_registration()->set_max_inflight(16);
        break;
      case wire::REQUEST:
        h.set_id(kDispatchId + 3);
        h.set_service("memory");
        h.set_method("retrieve");
        h.set_timeout_ms(2000);
        h.set_idempotent(true);
        h.set_wait_for_ready(true);
        h.set_routing_key("user-7");
        h.set_traceparent("4bf92f3577b34da6");
        h.set_deadline_us(std::uint64_t{5'000'000'123});
        h.set_stream(true);
        h.set_credit(64);
        break;
      case wire::REPLY:
        h.set_status(wire::DEADLINE_EXCEEDED);
        h.set_message("the call's deadline passed first");
        h.set_tag(12);
        h.set_count(3);
        break;
      case wire::SUBSCRIBE:
      case wire::PUBLISH:
      case wire::EVENT:
        h.set_topic("events.user.login");
        h.set_subscription(kSdkId + 1);
        h.set_dropped(4);
        h.set_credit(1000);
        h.set_confirm(true);
        break;
      case wire::SEND:
      case wire::DELIVER:
        h.set_peer("node-7");
        h.set_hold_ms(5000);
        break;
      case wire::QUEUE_PUT:
      case wire::QUEUE_GET:
      case wire::QUEUE_ACK:
      case wire::QUEUE_SIZE:
        h.set_queue("service_response_MemoryRetrieval_0");
        h.set_tag(99);
        break;
      default:
        break;
    }
    out.push_back(h);
  }
  wire::Header with_map = out[wire::REQUEST];
  (*with_map.mutable_headers())["tenant"] = "acme";
  out.push_back(with_map);
  return out;
}

}  // namespace

TEST_CASE("a header survives encode and decode unchanged", "[frame]") {
  wire::Header h;
  h.set_kind(wire::REQUEST);
  h.set_id(42);
  h.set_service("memory");
  h.set_method("retrieve");
  h.set_timeout_ms(2500);
  h.set_idempotent(true);
  h.set_routing_key("user-7");
  (*h.mutable_headers())["tenant"] = "acme";
  h.set_traceparent("t-1");

  const zmq::message_t frame = wire::encode(h);
  wire::Header out;
  REQUIRE(wire::decode(frame, out) == wire::DecodeResult::ok);
  CHECK(out.version() == wire::kProtocolVersion);
  CHECK(out.kind() == wire::REQUEST);
  CHECK(out.id() == 42);
  CHECK(out.service() == "memory");
  CHECK(out.method() == "retrieve");
  CHECK(out.timeout_ms() == 2500);
  CHECK(out.idempotent());
  CHECK(out.routing_key() == "user-7");
  CHECK(out.headers().at("tenant") == "acme");
  CHECK(out.traceparent() == "t-1");
}

TEST_CASE("encode stamps the protocol version whatever the header held", "[frame]") {
  wire::Header h;
  h.set_version(99);
  h.set_kind(wire::HEARTBEAT);
  wire::Header out;
  REQUIRE(wire::decode(wire::encode(h), out) == wire::DecodeResult::ok);
  CHECK(out.version() == 1);
}

TEST_CASE("peek_kind_and_id reads a header's kind and id from its first bytes", "[frame]") {
  wire::Header h;
  h.set_kind(wire::REQUEST);
  h.set_service(std::string(100000, 's'));  // far over any limit: only the start is read
  for (const std::uint64_t id : {std::uint64_t{1}, std::uint64_t{300}, ~std::uint64_t{0}}) {
    h.set_id(id);
    const auto head = wire::peek_kind_and_id(wire::encode(h));
    REQUIRE(head);
    CHECK(head->kind == wire::REQUEST);
    CHECK(head->id == id);
  }
  // No version field is fine; no id, id 0, another field first, or a cut-off varint is not.
  const auto bytes = [](std::string s) { return zmq::message_t(s.data(), s.size()); };
  CHECK(wire::peek_kind_and_id(bytes(std::string("\x10\x08\x18\x05", 4)))->id == 5);
  CHECK_FALSE(wire::peek_kind_and_id(bytes(std::string("\x08\x01\x10\x08", 4))));
  CHECK_FALSE(wire::peek_kind_and_id(bytes(std::string("\x08\x01\x10\x08\x18\x00", 6))));
  CHECK_FALSE(wire::peek_kind_and_id(bytes(std::string("\x32\x01s\x10\x08\x18\x05", 7))));
  CHECK_FALSE(wire::peek_kind_and_id(bytes(std::string("\x10\x08\x18\xff", 4))));
  CHECK_FALSE(wire::peek_kind_and_id(bytes("")));
}

TEST_CASE("decoding into a reused header leaves nothing of the previous one", "[frame]") {
  wire::Header first;
  first.set_kind(wire::REQUEST);
  first.set_service("memory");
  wire::Header second;
  second.set_kind(wire::HEARTBEAT);
  wire::Header reused;
  REQUIRE(wire::decode(wire::encode(first), reused) == wire::DecodeResult::ok);
  REQUIRE(wire::decode(wire::encode(second), reused) == wire::DecodeResult::ok);
  CHECK(reused.kind() == wire::HEARTBEAT);
  CHECK(reused.service().empty());
}

TEST_CASE("a header frame larger than 64 KiB is too large", "[frame]") {
  const zmq::message_t frame(wire::kMaxHeaderBytes + 1);
  wire::Header out;
  CHECK(wire::decode(frame, out) == wire::DecodeResult::too_large);
}

TEST_CASE("decode takes the largest header size as its limit", "[frame]") {
  wire::Header h;
  h.set_kind(wire::REQUEST);
  h.set_service(std::string(100, 's'));
  const zmq::message_t frame = wire::encode(h);
  wire::Header out;
  CHECK(wire::decode(frame, out, frame.size()) == wire::DecodeResult::ok);
  CHECK(wire::decode(frame, out, frame.size() - 1) == wire::DecodeResult::too_large);
  const zmq::message_t big(wire::kMaxHeaderBytes + 1);
  CHECK(wire::decode(big, out, 2 * wire::kMaxHeaderBytes) != wire::DecodeResult::too_large);
}

TEST_CASE("bytes that are not a header are malformed", "[frame]") {
  const std::string garbage = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  const zmq::message_t frame(garbage.data(), garbage.size());
  wire::Header out;
  CHECK(wire::decode(frame, out) == wire::DecodeResult::malformed);
}

TEST_CASE("another protocol version is reported with the header still readable", "[frame]") {
  wire::Header h;
  h.set_version(2);
  h.set_kind(wire::REQUEST);
  h.set_id(7);
  const std::string bytes = h.SerializeAsString();  // not encode(): it would stamp 1
  const zmq::message_t frame(bytes.data(), bytes.size());
  wire::Header out;
  REQUIRE(wire::decode(frame, out) == wire::DecodeResult::bad_version);
  CHECK(out.id() == 7);  // so the broker can answer it
  CHECK(out.version() == 2);
}

TEST_CASE("an empty frame decodes as a version-0 header, which is a bad version", "[frame]") {
  const zmq::message_t frame;
  wire::Header out;
  CHECK(wire::decode(frame, out) == wire::DecodeResult::bad_version);
}

TEST_CASE("check_name accepts exactly the documented names", "[frame]") {
  struct Row {
    std::string name;
    bool valid;
  };
  const Row rows[] = {
      {"memory", true},
      {"Memory_Retrieval-0", true},
      {"a.b:c/d", true},
      {"$broker", true},  // valid here; the broker refuses to register it
      {std::string(wire::kMaxNameBytes, 'x'), true},
      {"", false},
      {std::string(wire::kMaxNameBytes + 1, 'x'), false},
      {"has space", false},
      {"a$b", false},
      {"caf\xc3\xa9", false},
      {"new\nline", false},
  };
  for (const auto& row : rows) {
    INFO("name: '" << row.name << "'");
    CHECK(wire::check_name("service name", row.name).has_value() == !row.valid);
  }
}

TEST_CASE("check_name's error names the thing and the offending offset", "[frame]") {
  const auto error = wire::check_name("method name", "bad name");
  REQUIRE(error);
  CHECK(error->find("method name") != std::string::npos);
  CHECK(error->find("offset 3") != std::string::npos);
}

TEST_CASE("status, kind and strategy names are the enum names, unknown values say so", "[frame]") {
  CHECK(wire::status_name(wire::NO_RESPONDERS) == "NO_RESPONDERS");
  CHECK(wire::status_name(wire::OK) == "OK");
  CHECK(wire::status_name(static_cast<wire::Status>(999)) == "UNKNOWN_STATUS");
  CHECK(wire::kind_name(wire::HELLO_REQUIRED) == "HELLO_REQUIRED");
  CHECK(wire::kind_name(static_cast<wire::Kind>(999)) == "UNKNOWN_KIND");
  CHECK(wire::strategy_name(wire::CONSISTENT_HASH) == "CONSISTENT_HASH");
  CHECK(wire::strategy_name(static_cast<wire::Strategy>(999)) == "UNKNOWN_STRATEGY");
}

TEST_CASE("decode's own parser reads every kind's typical header exactly as protobuf does",
          "[frame][parser]") {
  wire::Header reused = full_header();
  int taken = 0;
  for (const auto& h : typical_headers()) {
    const std::string bytes = h.SerializeAsString();
    INFO(h.ShortDebugString());
    bool took = false;
    CHECK(disagreement(bytes, reused, took).empty());
    taken += took;
    // Only the map and the submessages are protobuf's to parse.
    const bool protobufs =
        h.headers_size() != 0 || h.has_hello() || h.has_welcome() || h.has_registration();
    CHECK(took == !protobufs);
  }
  CHECK(taken == wire::Kind_MAX + 1 - 3);
}

TEST_CASE("decode's own parser leaves nothing of what the header held before", "[frame][parser]") {
  // Every field of Header set through reflection, so that a field added to wire.proto
  // is held to this too.
  wire::Header reused = full_header();
  const auto* const descriptor = wire::Header::GetDescriptor();
  const auto* const reflection = wire::Header::GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const auto* const field = descriptor->field(i);
    using Field = google::protobuf::FieldDescriptor;
    if (field->is_repeated()) {
      reflection->AddMessage(&reused, field);
      continue;
    }
    switch (field->cpp_type()) {
      case Field::CPPTYPE_UINT32:
        reflection->SetUInt32(&reused, field, 7);
        break;
      case Field::CPPTYPE_UINT64:
        reflection->SetUInt64(&reused, field, 7);
        break;
      case Field::CPPTYPE_BOOL:
        reflection->SetBool(&reused, field, true);
        break;
      case Field::CPPTYPE_ENUM:
        reflection->SetEnumValue(&reused, field, 7);
        break;
      case Field::CPPTYPE_STRING:
        reflection->SetString(&reused, field, "x");
        break;
      case Field::CPPTYPE_MESSAGE:
        reflection->MutableMessage(&reused, field);
        break;
      default:
        FAIL("a field of a type the test does not set: " << field->name());
    }
  }
  bool took = false;
  REQUIRE(disagreement(Bytes{}.number(2, wire::HEARTBEAT).s, reused, took).empty());
  CHECK(took);
  wire::Header fresh;
  fresh.set_kind(wire::HEARTBEAT);
  CHECK(google::protobuf::util::MessageDifferencer::Equals(reused, fresh));
}

TEST_CASE("empty input, extreme values and odd encodings read as protobuf reads them",
          "[frame][parser]") {
  constexpr auto kMax64 = std::numeric_limits<std::uint64_t>::max();
  const std::string ten_bytes_high = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f";
  const std::string padded_one = std::string("\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00", 10);
  const std::vector<std::string> inputs = {
      "",
      // Every scalar at its largest, the enums negative (ten-byte varints).
      Bytes{}
          .number(1, kMax64)
          .number(2, kMax64)
          .number(3, kMax64)
          .number(4, kMax64)
          .number(8, kMax64)
          .number(9, kMax64)
          .number(10, kMax64)
          .number(18, kMax64)
          .number(19, kMax64)
          .number(20, kMax64)
          .number(21, kMax64)
          .number(22, kMax64)
          .number(24, kMax64)
          .number(26, kMax64)
          .s,
      Bytes{}.number(2, static_cast<std::uint64_t>(-1)).number(4, std::uint64_t{1} << 31).s,
      // Enum values no enum names: proto3 keeps them.
      Bytes{}.number(2, 1000).number(4, 77).s,
      // Uint32 fields given values past 32 bits keep the low 32.
      Bytes{}.number(1, (std::uint64_t{5} << 32) | 1).number(8, std::uint64_t{1} << 32).s,
      // Bits past the 64th in a ten-byte varint; a value padded to ten bytes.
      Bytes{}.key(3, 0).raw(ten_bytes_high).key(1, 0).raw(ten_bytes_high).s,
      Bytes{}.key(3, 0).raw(padded_one).key(9, 0).raw(padded_one).s,
      // Eleven-byte varints, which protobuf refuses.
      Bytes{}.key(3, 0).raw("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").s,
      Bytes{}.key(1, 0).raw(std::string("\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11)).s,
      // A key written in two bytes though one would do; one of three bytes.
      Bytes{}.raw(std::string("\x88\x00\x01\x90\x00\x04", 6)).s,
      Bytes{}.raw(std::string("\x88\x80\x00\x01", 4)).s,
      // A length written in more bytes than it needs.
      Bytes{}
          .key(6, 2)
          .raw(std::string("\x83\x00"
                           "abc",
                           5))
          .s,
      Bytes{}
          .key(6, 2)
          .raw(std::string("\x83\x80\x80\x80\x00"
                           "abc",
                           8))
          .s,
      // Empty strings, and fields given twice: the last one wins.
      Bytes{}.text(6, "").text(17, "").number(3, 0).s,
      Bytes{}
          .number(3, 1)
          .text(6, "first")
          .number(3, 2)
          .text(6, "second")
          .number(9, 1)
          .number(9, 0)
          .s,
      Bytes{}.text(6, "a-much-longer-first-value-on-the-heap").text(6, "b").s,
      // Valid UTF-8 of two, three and four bytes.
      Bytes{}.text(5, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80").text(17, "\xf4\x8f\xbf\xbf").s,
  };
  wire::Header reused = full_header();
  for (const auto& bytes : inputs) {
    INFO("bytes: " << hex(bytes));
    bool took = false;
    CHECK(disagreement(bytes, reused, took).empty());
  }
}

TEST_CASE("what protobuf refuses, decode refuses", "[frame][parser]") {
  google::protobuf::LogSilencer quiet;  // protobuf logs each invalid UTF-8 string
  const std::string request = typical_headers()[wire::REQUEST].SerializeAsString();
  std::vector<std::string> inputs;
  // Cut short at every byte but between fields.
  for (std::size_t n = 1; n < request.size(); ++n)
    if (wire::Header cut; !cut.ParseFromString(request.substr(0, n)))
      inputs.push_back(request.substr(0, n));
  REQUIRE(inputs.size() > request.size() / 2);
  // Invalid UTF-8 in each string field: a lone continuation byte, an overlong '/', a
  // surrogate, a code point past U+10FFFF, a sequence cut short, a byte never used.
  for (const std::string bad :
       {"\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\xff", "ok\xfe"})
    for (const std::uint32_t field : {5, 6, 7, 11, 13, 17, 23, 25})
      inputs.push_back(Bytes{}.number(1, 1).text(field, "abc" + bad + "def").s);
  // An earlier invalid value fails the parse though a valid one follows.
  inputs.push_back(Bytes{}.text(6, "\xc0\xaf").text(6, "memory").s);
  // A length past the end; field number 0; an end-group key; wire types 6 and 7.
  inputs.push_back(Bytes{}.key(6, 2).varint(10).raw("abc").s);
  inputs.push_back(Bytes{}.key(6, 2).varint(std::uint64_t{1} << 31).raw("abc").s);
  inputs.push_back(Bytes{}.number(0, 1).s);
  inputs.push_back(Bytes{}.number(1, 1).key(3, 4).s);
  inputs.push_back(Bytes{}.key(3, 6).varint(1).s);
  inputs.push_back(Bytes{}.key(3, 7).varint(1).s);
  wire::Header reused = full_header();
  for (const auto& bytes : inputs) {
    INFO("bytes: " << hex(bytes));
    REQUIRE_FALSE(wire::Header().ParseFromString(bytes));
    bool took = false;
    CHECK(disagreement(bytes, reused, took).empty());
    CHECK_FALSE(took);
  }
}

TEST_CASE("fields decode's own parser does not take go to protobuf, with its result",
          "[frame][parser]") {
  const std::vector<std::string> inputs = {
      // Known fields in another wire type: protobuf keeps them as unknown fields.
      Bytes{}.number(1, 1).number(6, 5).s,
      Bytes{}.number(1, 1).text(3, "x").s,
      Bytes{}.number(1, 1).key(3, 1).raw("12345678").s,
      Bytes{}.number(1, 1).key(3, 5).raw("1234").s,
      // Unknown field numbers, small and largest; a group.
      Bytes{}.number(1, 1).number(27, 5).text(100, "x").s,
      Bytes{}.number(1, 1).number((1u << 29) - 1, 5).s,
      Bytes{}.number(1, 1).key(40, 3).number(1, 2).key(40, 4).number(3, 9).s,
      // The map and the submessages, including an empty hello.
      Bytes{}.number(1, 1).text(12, Bytes{}.text(1, "k").text(2, "v").s).s,
      Bytes{}.number(1, 1).text(14, "").number(3, 9).s,
      Bytes{}.number(1, 1).text(15, Bytes{}.number(2, 100).s).s,
      Bytes{}.number(1, 1).key(16, 2).varint(2).raw("\x0a\x00").s,
  };
  wire::Header reused = full_header();
  for (const auto& bytes : inputs) {
    INFO("bytes: " << hex(bytes));
    bool took = true;
    CHECK(disagreement(bytes, reused, took).empty());
    CHECK_FALSE(took);
  }
}

TEST_CASE("random bytes and random mutations of headers decode as protobuf decodes them",
          "[frame][parser]") {
  google::protobuf::LogSilencer quiet;  // some mutations make invalid UTF-8
  std::mt19937_64 random(20261124);     // fixed: a failure repeats
  auto below = [&](std::size_t n) { return static_cast<std::size_t>(random() % n); };
  std::vector<std::string> seeds;
  for (const auto& h : typical_headers())
    seeds.push_back(h.SerializeAsString());
  // Headers of random fields and values of every length of varint.
  const std::uint32_t fields[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 13, 17,
                                  18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 34};
  const std::string strings[] = {
      "", "a", "memory", "events.user.login", "caf\xc3\xa9", std::string(200, 'x')};
  for (int i = 0; i < 200; ++i) {
    Bytes b;
    for (std::size_t n = below(8); n > 0; --n) {
      const std::uint32_t field = fields[below(std::size(fields))];
      const bool is_string = field == 5 || field == 6 || field == 7 || field == 11 || field == 13 ||
                             field == 17 || field == 23 || field == 25;
      if (is_string)
        b.text(field, strings[below(std::size(strings))]);
      else
        b.number(field, random() >> below(64));
    }
    seeds.push_back(b.s);
  }
  const char interesting[] = {'\x00', '\x01', '\x7f', '\x80', '\xff',
                              '\x08', '\x0a', '\x62', '\x72'};
  wire::Header reused = full_header();
  int random_inputs = 0, mutated = 0, taken = 0;
  for (int i = 0; i < 40000; ++i) {
    std::string bytes;
    if (i % 4 == 0) {
      // Random bytes, mostly short.
      bytes.resize(below(48));
      for (auto& c : bytes)
        c = static_cast<char>(random());
      ++random_inputs;
    } else {
      bytes = seeds[below(seeds.size())];
      for (std::size_t m = 1 + below(3); m > 0; --m) {
        const std::size_t at = bytes.empty() ? 0 : below(bytes.size());
        switch (below(7)) {
          case 0:
            if (!bytes.empty()) bytes[at] = static_cast<char>(random());
            break;
          case 1:
            if (!bytes.empty()) bytes[at] = interesting[below(std::size(interesting))];
            break;
          case 2:
            if (!bytes.empty()) bytes[at] = static_cast<char>(bytes[at] ^ (1 << below(8)));
            break;
          case 3:
            bytes.insert(at, 1, static_cast<char>(random()));
            break;
          case 4:
            if (!bytes.empty()) bytes.erase(at, 1 + below(4));
            break;
          case 5:
            bytes.resize(at);
            break;
          case 6:
            bytes += seeds[below(seeds.size())];
            break;  // fields again: last wins
        }
      }
      ++mutated;
    }
    bool took = false;
    const std::string why = disagreement(bytes, reused, took);
    taken += took;
    if (!why.empty()) {
      INFO("bytes: " << hex(bytes));
      FAIL_CHECK(why);
    }
    // Now and then a header full of what the next parse must drop.
    if (i % 97 == 0) reused = full_header();
  }
  CHECK(random_inputs == 10000);
  CHECK(mutated == 30000);
  // The mutations keep the hand-written parser busy, not only protobuf.
  CHECK(taken > mutated / 4);
}
