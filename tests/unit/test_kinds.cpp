// The table of message kinds (sagebus/wire/kinds.hpp): each kind's sender, answer, payload
// and batching as docs/protocol.md's table of kinds states them.
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/wire/kinds.hpp"

namespace wire = sagebus::wire;

namespace {

// The kinds of this protocol version for which `property` holds, in number order.
template <class Property>
std::vector<wire::Kind> kinds_where(Property property) {
  std::vector<wire::Kind> out;
  for (const wire::KindInfo& info : wire::kKinds)
    if (info.kind != wire::KIND_UNSPECIFIED && property(info)) out.push_back(info.kind);
  return out;
}

}  // namespace

TEST_CASE("every kind has its own row, found by kind_info", "[kinds]") {
  for (int n = wire::Kind_MIN; n <= wire::Kind_MAX; ++n) {
    if (!wire::Kind_IsValid(n)) continue;
    CHECK(wire::kind_info(static_cast<wire::Kind>(n)).kind == n);
  }
  STATIC_REQUIRE(wire::kind_info(wire::PUBLISH).answer == wire::Answer::reply_if_confirmed);
}

TEST_CASE("a number that is no kind is a kind nobody sends", "[kinds]") {
  for (const int n : {-1, wire::Kind_MAX + 1, 1000}) {
    const wire::KindInfo& info = wire::kind_info(static_cast<wire::Kind>(n));
    CHECK(info.sender == wire::Sender::nobody);
    CHECK(info.answer == wire::Answer::none);
    CHECK_FALSE(info.payload);
  }
  CHECK(wire::kind_info(wire::KIND_UNSPECIFIED).sender == wire::Sender::nobody);
}

TEST_CASE("who sends each kind", "[kinds]") {
  using K = std::vector<wire::Kind>;
  CHECK(kinds_where([](const auto& i) { return i.sender == wire::Sender::broker; }) ==
        K{wire::WELCOME, wire::HELLO_REQUIRED, wire::EVENT, wire::DELIVER, wire::EVENT_BATCH});
  CHECK(kinds_where([](const auto& i) { return i.sender == wire::Sender::both; }) ==
        K{wire::HEARTBEAT, wire::GOODBYE, wire::REQUEST, wire::REPLY, wire::CREDIT, wire::BATCH,
          wire::CANCEL, wire::CHUNK});
  CHECK(kinds_where([](const auto& i) { return !wire::sent_by_client(i); }) ==
        K{wire::WELCOME, wire::HELLO_REQUIRED, wire::EVENT, wire::DELIVER, wire::EVENT_BATCH});
  CHECK(kinds_where([](const auto& i) { return !wire::sent_by_broker(i); }) ==
        K{wire::HELLO, wire::REGISTER, wire::UNREGISTER, wire::SUBSCRIBE, wire::UNSUBSCRIBE,
          wire::PUBLISH, wire::SEND, wire::QUEUE_PUT, wire::QUEUE_GET, wire::QUEUE_ACK,
          wire::QUEUE_SIZE, wire::PUBLISH_BATCH, wire::QUEUE_DECLARE, wire::QUEUE_NACK});
}

TEST_CASE("the kinds a client sends that the broker may answer with a REPLY", "[kinds]") {
  CHECK(kinds_where([](const auto& i) {
          return wire::sent_by_client(i) && wire::may_be_answered_by_reply(i);
        }) == std::vector<wire::Kind>{wire::REGISTER, wire::UNREGISTER, wire::REQUEST,
                                      wire::SUBSCRIBE, wire::UNSUBSCRIBE, wire::PUBLISH, wire::SEND,
                                      wire::QUEUE_PUT, wire::QUEUE_GET, wire::QUEUE_ACK,
                                      wire::QUEUE_SIZE, wire::PUBLISH_BATCH, wire::QUEUE_DECLARE,
                                      wire::QUEUE_NACK});
  CHECK(wire::kind_info(wire::DELIVER).answer == wire::Answer::reply);
  CHECK(wire::kind_info(wire::HELLO).answer == wire::Answer::welcome);
  CHECK(wire::kind_info(wire::HEARTBEAT).answer == wire::Answer::heartbeat);
  CHECK(wire::kind_info(wire::REPLY).answer == wire::Answer::none);
  CHECK(wire::kind_info(wire::BATCH).answer == wire::Answer::none);
  CHECK(wire::kind_info(wire::CANCEL).answer == wire::Answer::none);
  CHECK(wire::kind_info(wire::CHUNK).answer == wire::Answer::none);
  CHECK(wire::kind_info(wire::CREDIT).answer == wire::Answer::none);
}

TEST_CASE("the kinds that carry payload frames", "[kinds]") {
  CHECK(kinds_where([](const auto& i) { return i.payload; }) ==
        std::vector<wire::Kind>{wire::REQUEST, wire::REPLY, wire::PUBLISH, wire::EVENT, wire::SEND,
                                wire::DELIVER, wire::QUEUE_PUT, wire::EVENT_BATCH,
                                wire::PUBLISH_BATCH, wire::BATCH, wire::CHUNK});
}

TEST_CASE("every kind but HELLO and BATCH may travel in a BATCH", "[kinds]") {
  CHECK(kinds_where([](const auto& i) { return !i.batchable; }) ==
        std::vector<wire::Kind>{wire::HELLO, wire::BATCH});
  CHECK(wire::kind_info(static_cast<wire::Kind>(1000)).batchable);
}
