// The broker's table of message kinds: for each wire::Kind, whom the broker takes it from
// and which handler, whether it is taken while the broker drains, when its payload is
// held to max-payload, and what a sender is told when the message is refused. The facts
// both sides share (who sends it, its answer, payload, batching) are wire::kind_info's
// (sagebus/wire/kinds.hpp); handle_message_ dispatches from the two rows.
#include <array>

#include "loop/broker.hpp"
#include "sagebus/wire/kinds.hpp"

namespace sagebus::broker {

namespace {

constexpr std::string_view kDraining = "draining: sage-busd is shutting down";
constexpr std::string_view kHello = "say HELLO first: this broker does not know the connection";

// The guards: what a kind asks of its sender's rules, and about what (security/auth.hpp,
// "Subjects"). The broker's own service is asked of with inspect or admin by method.
namespace guard {
// Those that change something, or show what queues hold.
bool is_admin_method(std::string_view method) {
  return method == "drain" || method == "reload" || method == "queue.peek" ||
         method == "queue.purge" || method == "store.compact";
}
Permission register_(const wire::Header& h, std::string&) {
  return {Verb::register_service, h.service()};
}
Permission call(const wire::Header& h, std::string& scratch) {
  if (h.service() == wire::kBrokerService)
    return {is_admin_method(h.method()) ? Verb::admin : Verb::inspect, h.method()};
  scratch.assign(h.service()).append(1, '.').append(h.method());
  return {Verb::call, scratch};
}
Permission subscribe(const wire::Header& h, std::string&) {
  return {Verb::subscribe, h.topic()};
}
Permission publish(const wire::Header& h, std::string&) {
  return {Verb::publish, h.topic()};
}
Permission send(const wire::Header& h, std::string&) {
  return {Verb::send, h.peer()};
}
Permission queue_put(const wire::Header& h, std::string&) {
  return {Verb::queue_put, h.queue()};
}
Permission queue_get(const wire::Header& h, std::string&) {
  return {Verb::queue_get, h.queue()};
}
}  // namespace guard

}  // namespace

const Broker::KindRow& Broker::kind_row_(wire::Kind kind) noexcept {
  namespace w = wire;
  using B = Broker;
  using A = Admit;
  using D = Draining;
  using P = PayloadLimit;
  // A kind clients may not send, and every number that is no kind.
  static constexpr KindRow kNever{
      wire::KIND_UNSPECIFIED, A::never, nullptr, D::taken, {}, P::none, kHello, nullptr};
  // Columns: whom the kind is taken from and by what; whether it is taken while draining
  // and, if not, what its sender is told (when its kind answers a refusal: see refuse_);
  // when its payload is held to max-payload; what a peer that has not said HELLO is told
  // in a HELLO_REQUIRED ({}: nothing); with auth, what the sender's rules must allow.
  // clang-format off
  static constexpr std::array<KindRow, wire::Kind_ARRAYSIZE> kRows{{
    // kind             admit        handler                draining       refusal    payload        stranger  guard
    kNever,
    {w::HELLO,          A::stranger, nullptr,               D::taken,      {},        P::none,       {},      nullptr},
    {w::WELCOME,        A::never,    nullptr,               D::taken,      {},        P::none,       kHello,  nullptr},
    {w::HELLO_REQUIRED, A::never,    nullptr,               D::taken,      {},        P::none,       kHello,  nullptr},
    {w::HEARTBEAT,      A::client,   &B::on_heartbeat_,     D::taken,      {},        P::none,       kHello,  nullptr},
    // A stranger's GOODBYE is not answered: it is leaving, there is nothing to ask of it.
    {w::GOODBYE,        A::client,   &B::on_goodbye_,       D::taken,      {},        P::none,       {},      nullptr},
    {w::REGISTER,       A::client,   &B::on_register_,      D::taken,      {},        P::none,       kHello,  &guard::register_},
    {w::UNREGISTER,     A::client,   &B::on_unregister_,    D::taken,      {},        P::none,       kHello,  nullptr},
    // Calls already accepted may finish while the broker drains; new ones may not, but
    // for admin calls, so that busctl sees the drain.
    {w::REQUEST,        A::client,   &B::on_request_,       D::admin_only, kDraining, P::on_arrival, kHello,  &guard::call},
    {w::REPLY,          A::client,   &B::on_reply_,         D::taken,      {},        P::in_handler, kHello,  nullptr},
    {w::SUBSCRIBE,      A::client,   &B::on_subscribe_,     D::taken,      {},        P::none,       kHello,  &guard::subscribe},
    {w::UNSUBSCRIBE,    A::client,   &B::on_unsubscribe_,   D::taken,      {},        P::none,       kHello,  nullptr},
    {w::PUBLISH,        A::client,   &B::on_publish_,       D::taken,      {},        P::on_arrival, kHello,  &guard::publish},
    {w::EVENT,          A::never,    nullptr,               D::taken,      {},        P::none,       kHello,  nullptr},
    {w::CREDIT,         A::client,   &B::on_credit_,        D::taken,      {},        P::none,       kHello,  nullptr},
    {w::SEND,           A::client,   &B::on_send_,          D::refused,    kDraining, P::on_arrival, kHello,  &guard::send},
    {w::DELIVER,        A::never,    nullptr,               D::taken,      {},        P::none,       kHello,  nullptr},
    {w::QUEUE_PUT,      A::client,   &B::on_queue_put_,     D::refused,    kDraining, P::on_arrival, kHello,  &guard::queue_put},
    {w::QUEUE_GET,      A::client,   &B::on_queue_get_,     D::refused,    kDraining, P::none,       kHello,  &guard::queue_get},
    {w::QUEUE_ACK,      A::client,   &B::on_queue_ack_,     D::taken,      {},        P::none,       kHello,  nullptr},
    {w::QUEUE_SIZE,     A::client,   &B::on_queue_size_,    D::taken,      {},        P::none,       kHello,  &guard::queue_get},
    {w::EVENT_BATCH,    A::never,    nullptr,               D::taken,      {},        P::none,       kHello,  nullptr},
    {w::PUBLISH_BATCH,  A::client,   &B::on_publish_batch_, D::taken,      {},        P::on_arrival, kHello,  nullptr},
    {w::BATCH,          A::client,   &B::on_batch_,         D::taken,      {},        P::in_handler, kHello,  nullptr},
    {w::QUEUE_DECLARE,  A::client,   &B::on_queue_declare_, D::refused,    kDraining, P::none,       kHello,  &guard::queue_put},
    {w::QUEUE_NACK,     A::client,   &B::on_queue_nack_,    D::taken,      {},        P::none,       kHello,  nullptr},
    // Each acts only on a call its sender is party to (the caller's own id, the instance's
    // dispatch), so neither needs a guard; calls in flight may finish while draining.
    {w::CANCEL,         A::client,   &B::on_cancel_,        D::taken,      {},        P::none,       kHello,  nullptr},
    {w::CHUNK,          A::client,   &B::on_chunk_,         D::taken,      {},        P::in_handler, kHello,  nullptr},
  }};
  // clang-format on

  // The rows agree with each other and with the wire's. (Whether a row's handler is null
  // is left out: GCC cannot compare member pointers at compile time under -fsanitize.)
  static_assert([] {
    for (std::size_t n = 0; n < kRows.size(); ++n) {
      const KindRow& row = kRows[n];
      const wire::KindInfo& info = wire::kKinds[n];
      if (row.kind != info.kind) return false;
      if ((row.draining == D::taken) != row.draining_refusal.empty()) return false;
      if (row.admit != A::never &&
          (!wire::sent_by_client(info) || (row.payload != P::none) != info.payload))
        return false;
    }
    return true;
  }());

  const int n = static_cast<int>(kind);
  return n >= 0 && n < wire::Kind_ARRAYSIZE ? kRows[static_cast<std::size_t>(n)] : kNever;
}

}  // namespace sagebus::broker
