// The message kinds' facts that hold on both sides of a connection, one row per
// wire::Kind (docs/protocol.md, "Kinds"): who sends it, how it is answered, whether it
// carries payload frames, and whether it may travel as a record of a BATCH. The broker
// and the SDK dispatch from these rows and add their own (the broker's handler, drain
// rule and refusals: daemon/loop/broker_kinds.cpp), so that a property of a kind is
// written once.
//
// kind_info() is constexpr and total: a number that is no Kind of this protocol version
// gets kUnknownKind, a kind nobody sends. Plain constants; thread safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "sagebus/wire.pb.h"

namespace sagebus::wire {

// Who may send a kind.
enum class Sender : std::uint8_t {
  nobody,  // KIND_UNSPECIFIED, and numbers that are no kind
  client,  // client -> broker
  broker,  // broker -> client
  both,    // either way
};

// How the receiver answers a kind.
enum class Answer : std::uint8_t {
  none,                // never
  reply,               // with a REPLY of the message's id
  reply_if_confirmed,  // with a REPLY when the message sets confirm (PUBLISH)
  reply_if_refused,    // with a REPLY only when it refuses the message (PUBLISH_BATCH)
  welcome,             // with a WELCOME (HELLO)
  heartbeat,           // a client's, with a HEARTBEAT unless it sets no_answer
};

struct KindInfo {
  Kind kind;
  Sender sender;
  Answer answer;
  bool payload;    // carries payload frames after the header
  bool batchable;  // may travel as a record of a BATCH
};

// A kind nobody sends. Left batchable: whoever receives one refuses it for what it is,
// whether it came alone or in a batch.
inline constexpr KindInfo kUnknownKind{KIND_UNSPECIFIED, Sender::nobody, Answer::none, false,
                                       true};

// Indexed by kind. Every kind but HELLO and BATCH may travel in a BATCH: a connection
// starts with a HELLO alone, and a batch does not nest.
inline constexpr std::array<KindInfo, Kind_ARRAYSIZE> kKinds{{
    kUnknownKind,
    {HELLO, Sender::client, Answer::welcome, false, false},
    {WELCOME, Sender::broker, Answer::none, false, true},
    {HELLO_REQUIRED, Sender::broker, Answer::none, false, true},
    {HEARTBEAT, Sender::both, Answer::heartbeat, false, true},
    {GOODBYE, Sender::both, Answer::none, false, true},
    {REGISTER, Sender::client, Answer::reply, false, true},
    {UNREGISTER, Sender::client, Answer::reply, false, true},
    {REQUEST, Sender::both, Answer::reply, true, true},
    {REPLY, Sender::both, Answer::none, true, true},
    {SUBSCRIBE, Sender::client, Answer::reply, false, true},
    {UNSUBSCRIBE, Sender::client, Answer::reply, false, true},
    {PUBLISH, Sender::client, Answer::reply_if_confirmed, true, true},
    {EVENT, Sender::broker, Answer::none, true, true},
    {CREDIT, Sender::both, Answer::none, false, true},
    {SEND, Sender::client, Answer::reply, true, true},
    {DELIVER, Sender::broker, Answer::reply, true, true},
    {QUEUE_PUT, Sender::client, Answer::reply, true, true},
    {QUEUE_GET, Sender::client, Answer::reply, false, true},
    {QUEUE_ACK, Sender::client, Answer::reply, false, true},
    {QUEUE_SIZE, Sender::client, Answer::reply, false, true},
    {EVENT_BATCH, Sender::broker, Answer::none, true, true},
    {PUBLISH_BATCH, Sender::client, Answer::reply_if_refused, true, true},
    {BATCH, Sender::both, Answer::none, true, false},
    {QUEUE_DECLARE, Sender::client, Answer::reply, false, true},
    {QUEUE_NACK, Sender::client, Answer::reply, false, true},
    {CANCEL, Sender::both, Answer::none, false, true},
    {CHUNK, Sender::both, Answer::none, true, true},
}};

// The row of `kind`; kUnknownKind for a number that is no kind.
constexpr const KindInfo& kind_info(Kind kind) noexcept {
  const int n = static_cast<int>(kind);
  return n >= 0 && n < Kind_ARRAYSIZE ? kKinds[static_cast<std::size_t>(n)] : kUnknownKind;
}

constexpr bool sent_by_client(const KindInfo& info) noexcept {
  return info.sender == Sender::client || info.sender == Sender::both;
}
constexpr bool sent_by_broker(const KindInfo& info) noexcept {
  return info.sender == Sender::broker || info.sender == Sender::both;
}
// Whether a message of this kind may be answered with a REPLY of its id: always, or
// depending on the message (its confirm flag, or whether it is refused).
constexpr bool may_be_answered_by_reply(const KindInfo& info) noexcept {
  return info.answer == Answer::reply || info.answer == Answer::reply_if_confirmed ||
         info.answer == Answer::reply_if_refused;
}

namespace detail {
constexpr bool rows_in_kind_order() noexcept {
  for (std::size_t n = 0; n < kKinds.size(); ++n)
    if (static_cast<std::size_t>(kKinds[n].kind) != n) return false;
  return true;
}
}  // namespace detail
static_assert(detail::rows_in_kind_order(), "kKinds has one row per Kind, in number order");

}  // namespace sagebus::wire
