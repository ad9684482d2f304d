// Unconfirmed publishes: the outbox, and PUBLISH_BATCHes made from it.
#include "session.hpp"

#include <algorithm>

#include "protocol.hpp"
#include "sagebus/wire/frame.hpp"

namespace sagebus::detail {

using namespace protocol;
using std::chrono::duration_cast;

// Unconfirmed publishes wait in the outbox while the socket is full or the link down,
// in order; each frees a publish slot once it is handed to the socket. Several small
// ones waiting together go as one PUBLISH_BATCH, when the broker reads them.
void Session::handle_(command::Publish& c) {
  outbox_.push_back(QueuedPublish{std::move(c.topic), std::move(c.payload)});
}

void Session::flush_outbox_() {
  if (link_ != Link::ready) return;
  while (!outbox_.empty()) {
    // A batch made before a reconnect, for a broker that read batches, is made again.
    if (outgoing_.publishes > 1 && !publish_batches_) outgoing_.publishes = 0;
    if (outgoing_.publishes == 0) make_outgoing_();
    if (!put_(outgoing_.header, &outgoing_.body))
      return;  // kept, to be sent as it is when the socket has room
    take_short_lease_();
    const auto sent = static_cast<std::ptrdiff_t>(std::exchange(outgoing_.publishes, 0));
    outbox_.erase(outbox_.begin(), outbox_.begin() + sent);
    host_.publishes_sent(sent);
  }
}

// The next message of the outbox: the publishes at its front that fit in one
// PUBLISH_BATCH, when there are several, or else the first one alone.
void Session::make_outgoing_() {
  std::size_t batched = 0;
  if (publish_batches_) {
    const auto limit =
        static_cast<std::size_t>(std::min<std::uint64_t>(wire::kMaxBatchBytes, max_payload_));
    batch_.clear();
    for (const QueuedPublish& p : outbox_) {
      const std::string_view payload = p.payload.to_string_view();
      if (payload.size() > wire::kMaxBatchedPayload || !batch_.fits(p.topic, payload.size(), limit))
        break;
      batch_.add_publish(p.topic, payload);
      ++batched;
    }
  }
  out_.Clear();
  if (batched > 1) {
    out_.set_kind(wire::PUBLISH_BATCH);
    outgoing_ = Outgoing{wire::encode(out_), batch_.frame(), batched};
    return;
  }
  QueuedPublish& first = outbox_.front();
  out_.set_kind(wire::PUBLISH);
  out_.set_topic(first.topic);
  outgoing_ = Outgoing{wire::encode(out_), std::move(first.payload), 1};
}

}  // namespace sagebus::detail
