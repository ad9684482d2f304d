// HeaderWriter (sagebus/wire/header_writer.hpp): a header written by hand is, byte for byte,
// the one protobuf's generated code writes for the same fields, so that the SDK and
// busctl, which parse it with protobuf, read exactly what they read before.
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/wire/header_writer.hpp"
#include "sagebus/wire/frame.hpp"

using namespace sagebus;

namespace {

constexpr auto kMax64 = std::numeric_limits<std::uint64_t>::max();
constexpr auto kMax32 = std::numeric_limits<std::uint32_t>::max();

// Values that take one, two, five and ten bytes as varints, and zero (left out).
const std::vector<std::uint64_t> kIds{0, 1, 127, 128, 16383, 16384, (std::uint64_t{1} << 63) | 5,
                                      kMax64};
const std::vector<std::string> kStrings{"", "x", "bench-echo", std::string(127, 'a'),
                                        std::string(128, 'b'), std::string(20000, 'c'),
                                        std::string("nul\0inside", 10), "caf\xc3\xa9"};

// The headers map written in the order protobuf's Map iterates, the one freedom the
// writer has, so that the bytes must match too.
void write_headers(wire::HeaderWriter& w, const wire::Header& h) {
  w.map(wire::Header::kHeadersFieldNumber, h.headers());
}

// Not a copy of the Header: a copied map may iterate in another order.
std::string by_protobuf(wire::Header& h) {
  return wire::encode(h).to_string();
}

wire::Header parsed(const wire::HeaderWriter& w) {
  wire::Header h;
  const std::string_view bytes = w.bytes();
  REQUIRE(h.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
  return h;
}

}  // namespace

TEST_CASE("a REQUEST written by hand is the one protobuf writes", "[header_writer]") {
  wire::HeaderWriter w;
  int checked = 0;
  for (const std::uint64_t id : kIds)
    for (const std::string& name : kStrings)
      for (const std::uint32_t timeout : {0u, 1u, 300u, 16384u, kMax32})
        for (const bool idempotent : {false, true}) {
          wire::Header h;
          h.set_kind(wire::REQUEST);
          h.set_id(id);
          h.set_service(name);
          h.set_method(name.empty() ? "m" : name.substr(0, 3));
          h.set_timeout_ms(timeout);
          h.set_idempotent(idempotent);
          h.set_routing_key(idempotent ? name : "");
          h.set_traceparent(idempotent ? "" : name);
          if (timeout == 300) (*h.mutable_headers())["k"] = name;
          if (timeout == 16384) {
            (*h.mutable_headers())[""] = "";
            (*h.mutable_headers())[name + "key"] = "v";
            (*h.mutable_headers())["z"] = std::string(300, 'v');
          }
          w.start(wire::REQUEST)
              .varint(wire::Header::kIdFieldNumber, h.id())
              .string(wire::Header::kServiceFieldNumber, h.service())
              .string(wire::Header::kMethodFieldNumber, h.method())
              .varint(wire::Header::kTimeoutMsFieldNumber, h.timeout_ms())
              .varint(wire::Header::kIdempotentFieldNumber, h.idempotent())
              .string(wire::Header::kRoutingKeyFieldNumber, h.routing_key());
          write_headers(w, h);
          w.string(wire::Header::kTraceparentFieldNumber, h.traceparent());
          REQUIRE(std::string(w.bytes()) == by_protobuf(h));
          CHECK(w.frame().to_string() == std::string(w.bytes()));
          ++checked;
        }
  CHECK(checked == 8 * 8 * 5 * 2);
}

TEST_CASE("a REPLY written by hand is the one protobuf writes, any status", "[header_writer]") {
  wire::HeaderWriter w;
  for (const std::uint64_t id : kIds)
    for (const int status : {0, 1, 2, 8, 11, 12, 127, 128, -1, std::numeric_limits<int>::min(),
                             std::numeric_limits<int>::max()})
      for (const std::string& message : kStrings)
        for (const std::uint64_t count : {std::uint64_t{0}, std::uint64_t{3}, kMax64}) {
          wire::Header h;
          h.set_kind(wire::REPLY);
          h.set_id(id);
          // Proto3 enums are open: an instance may send any int32 as its status.
          h.set_status(static_cast<wire::Status>(status));
          h.set_message(message);
          if (count == 3) (*h.mutable_headers())[message] = message;
          h.set_count(count);
          h.set_tag(count == kMax64 ? id : 0);
          w.start(wire::REPLY)
              .varint(wire::Header::kIdFieldNumber, h.id())
              .enumeration(wire::Header::kStatusFieldNumber, h.status())
              .string(wire::Header::kMessageFieldNumber, h.message());
          write_headers(w, h);
          w.varint(wire::Header::kCountFieldNumber, h.count())
              .varint(wire::Header::kTagFieldNumber, h.tag());
          REQUIRE(std::string(w.bytes()) == by_protobuf(h));
        }
}

TEST_CASE("any set of Header's scalar, string and map fields is written as protobuf writes it",
          "[header_writer]") {
  std::mt19937_64 random(20261124);
  auto pick = [&](const auto& values) { return values[random() % values.size()]; };
  auto maybe = [&] { return random() % 3 == 0; };  // most fields absent, as in real headers
  wire::HeaderWriter w;
  for (int round = 0; round < 5000; ++round) {
    wire::Header h;
    // Every field the broker could write, each present or not, in the order of its number.
    const auto kind = static_cast<wire::Kind>(1 + random() % 20);
    h.set_kind(kind);
    if (maybe()) h.set_id(pick(kIds));
    if (maybe()) h.set_status(static_cast<wire::Status>(static_cast<int>(random() % 13) - 1));
    if (maybe()) h.set_message(pick(kStrings));
    if (maybe()) h.set_service(pick(kStrings));
    if (maybe()) h.set_method(pick(kStrings));
    if (maybe()) h.set_timeout_ms(static_cast<std::uint32_t>(pick(kIds)));
    if (maybe()) h.set_idempotent(true);
    if (maybe()) h.set_wait_for_ready(true);
    if (maybe()) h.set_routing_key(pick(kStrings));
    if (maybe())
      for (auto n = random() % 6; n > 0; --n)
        (*h.mutable_headers())[pick(kStrings).substr(0, 200) + std::to_string(n)] = pick(kStrings);
    if (maybe()) h.set_traceparent(pick(kStrings));
    if (maybe()) h.set_topic(pick(kStrings));
    if (maybe()) h.set_subscription(pick(kIds));
    if (maybe()) h.set_dropped(pick(kIds));
    if (maybe()) h.set_credit(static_cast<std::uint32_t>(pick(kIds)));
    if (maybe()) h.set_confirm(true);
    if (maybe()) h.set_count(pick(kIds));
    if (maybe()) h.set_peer(pick(kStrings));
    if (maybe()) h.set_hold_ms(static_cast<std::uint32_t>(pick(kIds)));
    if (maybe()) h.set_queue(pick(kStrings));
    if (maybe()) h.set_tag(pick(kIds));

    using H = wire::Header;
    w.start(kind)
        .varint(H::kIdFieldNumber, h.id())
        .enumeration(H::kStatusFieldNumber, h.status())
        .string(H::kMessageFieldNumber, h.message())
        .string(H::kServiceFieldNumber, h.service())
        .string(H::kMethodFieldNumber, h.method())
        .varint(H::kTimeoutMsFieldNumber, h.timeout_ms())
        .varint(H::kIdempotentFieldNumber, h.idempotent())
        .varint(H::kWaitForReadyFieldNumber, h.wait_for_ready())
        .string(H::kRoutingKeyFieldNumber, h.routing_key());
    write_headers(w, h);
    w.string(H::kTraceparentFieldNumber, h.traceparent())
        .string(H::kTopicFieldNumber, h.topic())
        .varint(H::kSubscriptionFieldNumber, h.subscription())
        .varint(H::kDroppedFieldNumber, h.dropped())
        .varint(H::kCreditFieldNumber, h.credit())
        .varint(H::kConfirmFieldNumber, h.confirm())
        .varint(H::kCountFieldNumber, h.count())
        .string(H::kPeerFieldNumber, h.peer())
        .varint(H::kHoldMsFieldNumber, h.hold_ms())
        .string(H::kQueueFieldNumber, h.queue())
        .varint(H::kTagFieldNumber, h.tag());
    REQUIRE(std::string(w.bytes()) == by_protobuf(h));
  }
}

TEST_CASE("headers map entries in any order parse to the same map", "[header_writer]") {
  wire::HeaderWriter w;
  w.start(wire::REPLY)
      .map_entry(wire::Header::kHeadersFieldNumber, "b", "2")
      .map_entry(wire::Header::kHeadersFieldNumber, "a", "")
      .map_entry(wire::Header::kHeadersFieldNumber, "", std::string(200, 'x'));
  const wire::Header h = parsed(w);
  CHECK(h.kind() == wire::REPLY);
  CHECK(h.version() == wire::kProtocolVersion);
  REQUIRE(h.headers_size() == 3);
  CHECK(h.headers().at("b") == "2");
  CHECK(h.headers().at("a").empty());
  CHECK(h.headers().at("") == std::string(200, 'x'));
}

TEST_CASE("a writer reused for a shorter header keeps none of the longer one", "[header_writer]") {
  wire::HeaderWriter w;
  w.start(wire::REQUEST).string(wire::Header::kServiceFieldNumber, std::string(5000, 's'));
  w.start(wire::HEARTBEAT).varint(wire::Header::kIdFieldNumber, 7);
  wire::Header h;
  h.set_kind(wire::HEARTBEAT);
  h.set_id(7);
  CHECK(std::string(w.bytes()) == by_protobuf(h));
  CHECK(w.size() == w.frame().size());
}
