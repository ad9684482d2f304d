// EventHeader (daemon/loop/event_header.hpp): the hand-written EVENT header decodes to the
// Header protobuf's own code would have written, byte for byte.
#include <cstdint>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

#include "loop/event_header.hpp"
#include "sagebus/wire/frame.hpp"

using namespace sagebus;

namespace {

// What the generated code writes for the same EVENT.
std::string by_protobuf(const std::string& topic, std::uint64_t subscription,
                        std::uint64_t dropped) {
  wire::Header h;
  h.set_kind(wire::EVENT);
  h.set_topic(topic);
  h.set_subscription(subscription);
  h.set_dropped(dropped);
  return wire::encode(h).to_string();
}

}  // namespace

TEST_CASE("an EVENT header written by hand is the one protobuf writes", "[event_header]") {
  const std::string long_topic(300, 'x');  // a length that takes a 2-byte varint
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  broker::EventHeader header;
  for (const std::string& topic : {std::string("jobs.created"), long_topic}) {
    header.reset(topic);
    for (const auto& [subscription, dropped] :
         {std::pair<std::uint64_t, std::uint64_t>{1, 0}, {127, 0}, {128, 1}, {300, 18976},
          {kMax, kMax}, {0, 5}}) {
      const zmq::message_t frame = header.frame(subscription, dropped);
      // Field order is the same as the generated code's, so the bytes match too.
      CHECK(frame.to_string() == by_protobuf(topic, subscription, dropped));
      wire::Header decoded;
      REQUIRE(wire::decode(frame, decoded) == wire::DecodeResult::ok);
      CHECK(decoded.kind() == wire::EVENT);
      CHECK(decoded.topic() == topic);
      CHECK(decoded.subscription() == subscription);
      CHECK(decoded.dropped() == dropped);
    }
  }
}
