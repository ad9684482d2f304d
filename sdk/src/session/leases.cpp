// Leases: what is at stake on this connection, and the lease each side keeps on the
// other (docs/protocol.md, "Handshake and leases").
#include "session.hpp"

#include "../service_core.hpp"
#include "protocol.hpp"
#include "sagebus/wire/frame.hpp"

namespace sagebus::detail {

using namespace protocol;
using std::chrono::duration_cast;

// Something whose loss must be noticed within the short lease: a service, a
// subscription, a request in flight (a call, a send, a queue get, a confirmed publish),
// publishes to send, or items taken that others wait on (point-to-point messages,
// legacy-queue items, which the broker hands on only when this connection is gone).
bool Session::at_stake_() const {
  return !services_.empty() || !subscription_cores_.empty() || !requests_.empty() ||
         !outbox_.empty() || reads_queues_ || host_.reads_inbox();
}

milliseconds Session::lease_() const {
  return (idle_lease_ ? idle_heartbeat_ : heartbeat_) * liveness_;
}

// Any message but an idle HEARTBEAT gives this connection the short lease again, at the
// broker and here: heartbeats go at the short interval, and the broker's silence counts
// from now (an idle broker owed no word) against the short lease.
void Session::take_short_lease_() {
  if (!idle_lease_) return;
  idle_lease_ = false;
  watch_from_ = now_;
  next_heartbeat_ = std::min(next_heartbeat_, now_ + heartbeat_);
}

// A HEARTBEAT when one is due (or one the full transport refused is still due).
void Session::heartbeat_if_due_() {
  if (!heartbeat_due_ && now_ < next_heartbeat_) return;
  const bool idle = idle_heartbeat_ > heartbeat_ && !at_stake_();
  out_.Clear();
  out_.set_kind(wire::HEARTBEAT);
  out_.set_id(++next_id_);
  // No answer wanted when the broker was heard since the previous heartbeat went: if it
  // then falls silent, the next heartbeat asks, less than two heartbeats after it was
  // last heard, and the broker has the rest of the lease (at least a heartbeat, at
  // liveness 3 or more) to answer. A quiet client asks every other time, a busy one
  // never; at liveness 2 or 1 every heartbeat asks.
  out_.set_no_answer(liveness_ >= 3 && last_heard_ > last_heartbeat_);
  out_.set_idle(idle);
  // A full transport refuses it: it stays due and goes as soon as there is room.
  zmq::message_t header = wire::encode(out_);
  heartbeat_due_ = !put_(header, nullptr);
  if (heartbeat_due_) return;
  if (idle)
    idle_lease_ = true;
  else
    take_short_lease_();
  next_heartbeat_ = now_ + (idle ? idle_heartbeat_ : heartbeat_);
  last_heartbeat_ = now_;
}

}  // namespace sagebus::detail
