// The link: handshake (HELLO, WELCOME), what the broker forgot (HELLO_REQUIRED, a
// stall), a link lost, and the replay of registrations, subscriptions and requests.
#include "session.hpp"

#include <algorithm>

#include "../service_core.hpp"
#include "../subscription_core.hpp"
#include "protocol.hpp"
#include "sagebus/wire/host_clock.hpp"

namespace sagebus::detail {

using namespace protocol;
using std::chrono::duration_cast;

void Session::on_link_event(LinkEvent event) {
  switch (event) {
    case LinkEvent::connected:
      tcp_up_ = true;
      if (link_ != Link::ready && !replaced_) {
        set_link_(Link::connecting);
        send_hello_();
      }
      break;
    case LinkEvent::connect_failed:
      if (link_ == Link::connecting) {
        last_failure_ = "cannot connect to sage-busd at " + endpoint_;
        failure_status_ = Status::unavailable;
        set_link_(Link::failing);
        fail_unsent_impatient_();
      }
      break;
    case LinkEvent::disconnected:
      tcp_up_ = false;
      // The broker drops a connection's state when it closes (or it is gone itself).
      lose_link_("connection to sage-busd at " + endpoint_ + " closed", true);
      break;
    case LinkEvent::key_refused:
      refuse_link_("sage-busd at " + endpoint_ +
                       " refused this client's key: it is not the key of a principal in the "
                       "broker's auth rules; check ClientOptions::client_key (busctl: --key)",
                   true);
      break;
    case LinkEvent::handshake_failed:
      // No detail: the broker closed the connection during the handshake. Its keys or
      // mechanism differ from ours, most likely; but a broker stopping at that moment does
      // the same (a broker restarting, or crashing, several times over), so a request that
      // waits for ready ends only when the failures go on: kCertainHandshakeFailures in a
      // row, over kCertainHandshakeFailureSpan at least.
      if (handshake_failures_++ == 0) first_handshake_failure_ = now_;
      refuse_link_(curve_ ? "the CURVE handshake with sage-busd at " + endpoint_ +
                                " failed: is ClientOptions::server_key (busctl: --server-key) "
                                "the broker's public key?"
                          : "the handshake with sage-busd at " + endpoint_ +
                                " failed: it most likely requires CURVE authentication; set "
                                "ClientOptions::server_key and client_key (busctl: --server-key "
                                "and --key)",
                   handshake_failures_ >= kCertainHandshakeFailures &&
                       now_ - first_handshake_failure_ >= kCertainHandshakeFailureSpan);
      break;
    case LinkEvent::mechanism_mismatch:
      refuse_link_(curve_ ? "sage-busd at " + endpoint_ +
                                " does not use CURVE (it runs without auth); leave "
                                "ClientOptions::server_key and client_key empty for it"
                          : "sage-busd at " + endpoint_ +
                                " requires CURVE authentication: set ClientOptions::server_key "
                                "and client_key (busctl: --server-key and --key)",
                   true);
      break;
  }
}

// The handshake failed on credentials: requests not yet sent end UNAUTHENTICATED, and new
// ones fail at once, until a WELCOME comes (the broker may be given new rules, or be
// replaced by one with the expected key). Those that wait for ready end too when the
// refusal is `certain`: waiting will not help.
void Session::refuse_link_(std::string why, bool certain) {
  refused_ = true;
  hopeless_ = hopeless_ || certain;
  last_failure_ = std::move(why);
  failure_status_ = Status::unauthenticated;
  set_link_(Link::failing);
  fail_unsent_impatient_();
}

// The broker closes this connection: it is shutting down (we will connect again), or a
// new connection took our name (PERMISSION_DENIED: the name is no longer ours, so we
// never say HELLO again). A broker that shuts down answers every request it read before
// its GOODBYE: those still open were never read, and are sent again after the next
// WELCOME if they wait for ready (lose_link_).
void Session::on_goodbye_() {
  if (in_.status() == wire::PERMISSION_DENIED) replaced_ = true;
  lose_link_("sage-busd at " + endpoint_ + " closed this connection: " + in_.message(), !replaced_,
             !replaced_);
}

void Session::on_welcome_() {
  if (discard_before_welcome_ != 0) {
    // Only the answer to a HELLO sent after the stall ends it (see check_stall_).
    if (in_.id() < discard_before_welcome_) return;
    discard_before_welcome_ = 0;
  }
  const auto& w = in_.welcome();
  if (w.broker_session() != session_) {
    if (!session_.empty()) {
      fail_sent_("sage-busd at " + endpoint_ + " restarted while the request was in flight");
      fresh_session_ = true;
    }
    ++session_epoch_;
  }
  session_ = w.broker_session();
  heartbeat_ = milliseconds(w.heartbeat_ms() ? w.heartbeat_ms() : kDefaultHeartbeatMs);
  liveness_ = w.liveness() ? w.liveness() : kDefaultLiveness;
  idle_heartbeat_ = milliseconds(w.idle_heartbeat_ms());  // 0 from a broker without it
  max_payload_ = w.max_payload() ? w.max_payload() : kDefaultMaxPayload;
  publish_batches_ = w.publish_batches();
  batches_ = w.batches();
  same_host_ = wire::same_host(w.host());
  host_.max_payload_changed(max_payload_);
  hello_.set_takeover(false);  // a takeover is for the first HELLO only: never fight back
  refused_ = false;
  hopeless_ = false;
  handshake_failures_ = 0;
  set_link_(Link::ready);
  next_heartbeat_ = now_ + heartbeat_;
  if (fresh_session_) {
    // The broker knows nothing of this connection yet: tell it what we serve and hear.
    fresh_session_ = false;
    for (auto& [name, entry] : services_)
      if (entry.registered) send_register_(*entry.core);
    subscriptions_.clear();
    for (auto& core : subscription_cores_)
      send_subscribe_(core);
  }
  end_in_doubt_();
  // In the order they were made (ids rise so), not the table's.
  waiting_for_room_.clear();
  std::vector<std::uint64_t> unsent;
  for (auto& [id, request] : requests_)
    if (!request.sent) unsent.push_back(id);
  std::sort(unsent.begin(), unsent.end());
  for (auto id : unsent)
    send_request_(id);
}

// The broker does not know this connection (it forgot it, or it is a new broker): it did
// not act on the message whose `id` it names, and has forgotten every request it was given before.
// Say HELLO again. The requests sent before `id` may have run and will never be answered: they end
// UNAVAILABLE (but a QUEUE_GET, which is asked again: see requeue_or_fail_). Those sent from `id`
// on were refused like `id` (the broker cannot know us again before our next HELLO), so they never
// ran: they are sent again after WELCOME — also those whose own HELLO_REQUIRED the broker's rate
// limit dropped. When `id` is not ours (it named a REPLY of ours) nothing says where the forgetting
// began, so every request sent ends UNAVAILABLE.
void Session::on_hello_required_() {
  std::uint64_t id = in_.id();
  // A SUBSCRIBE sent again keeps its first id (the broker's key for the subscription):
  // its place in the sending order is the fresh id it took when it was sent.
  if (auto it = subscriptions_.find(id); it != subscriptions_.end()) id = it->second->sent_as;
  restart_session_(id, true,
                   "sage-busd at " + endpoint_ +
                       " forgot this connection (its lease expired, or it restarted) "
                       "while the request was in flight; the request may or may not "
                       "have taken effect");
}

// This thread did not run for longer than heartbeat x liveness, and so the broker heard
// nothing from us for that long (SIGSTOP, a machine that stalled): it has (or may have)
// dropped this connection at its lease expiry, and answered on our behalf what it had
// sent us: a DELIVER's sender was told UNDELIVERABLE, a REQUEST's caller UNAVAILABLE.
// Those messages may still wait in the socket; they must not be acted on. Say HELLO
// again, as after HELLO_REQUIRED, and drop every DELIVER and REQUEST read before the
// WELCOME that answers it. (A broker that did not drop us ends those at their deadlines.)
void Session::check_stall_() {
  if (link_ != Link::ready) return;
  const auto lease = lease_();
  // Both: the loop itself stalled (not a socket full of publishes), for longer than the lease.
  if (now_ - last_ran_ <= heartbeat_ || now_ - last_sent_ <= lease) return;
  discard_before_welcome_ = next_id_ + 1;  // any HELLO sent from now on has an id >= this
  const auto silent = duration_cast<milliseconds>(now_ - last_sent_).count();
  restart_session_(0, false,
                   "this client did not run for " + std::to_string(silent) +
                       " ms, longer than its lease of " + std::to_string(lease.count()) +
                       " ms, so sage-busd at " + endpoint_ +
                       " may have dropped the connection while the request was in flight; "
                       "the request may or may not have taken effect");
}

// A new session is needed (see on_hello_required_ and check_stall_). `id` is the first
// message of ours the broker refused, or 0 if that is not known. `forgotten`: the broker
// certainly holds nothing of ours any more.
void Session::restart_session_(std::uint64_t id, bool forgotten, const std::string& why) {
  set_link_(Link::connecting);
  fresh_session_ = true;
  const bool ours = (id & kOwnIdBit) != 0;
  for_each_request_([&](Requests::iterator it) {
    if (!it->second.sent) return;
    if (ours && it->first >= id)
      it->second.sent = false;
    else
      requeue_or_fail_(it, forgotten, why);
  });
  forget_registration_answers_();
  if (now_ - hello_sent_at_ > milliseconds(100)) send_hello_();
}

// The broker is gone, refused us, or has forgotten this connection: requests it was
// given cannot be answered any more. New ones fail fast until a WELCOME comes.
// `forgotten`: the broker certainly holds nothing of ours any more (the connection closed).
// `unread`: nor did it read any request it has not answered (its GOODBYE).
void Session::lose_link_(const std::string& why, bool forgotten, bool unread) {
  // The close that follows a refused handshake says less than the refusal did.
  if (!refused_) {
    last_failure_ = why;
    failure_status_ = replaced_ ? Status::permission_denied : Status::unavailable;
  }
  set_link_(Link::failing);
  fresh_session_ = true;
  drop_gathered_();   // what waited for company never left
  held_out_.clear();  // for the broker session that ended: it forgot their calls
  const std::string text = why + "; the request may or may not have taken effect";
  for_each_request_([&](Requests::iterator it) {
    Request& request = it->second;
    if (!request.sent) return;
    // Never took effect: as if never sent (fail_unsent_impatient_). But for an ack, whose
    // tag a new broker may give another item; a get's ack goes with the connection.
    if (unread && request.spec.kind != wire::QUEUE_ACK) {
      request.sent = false;
      request.in_doubt = false;
      request.spec.tag = 0;
      return;
    }
    // A request that waits for ready may never have left this side: ZeroMQ keeps what
    // the old connection did not carry and hands it to the next, where the broker
    // refuses it with HELLO_REQUIRED (on_hello_required_ sends it again). What the old
    // connection did carry ends at the next WELCOME (end_in_doubt_).
    if (request.spec.options.wait_for_ready && request.spec.kind != wire::QUEUE_GET && !replaced_)
      request.in_doubt = true;
    else
      requeue_or_fail_(it, forgotten, text);
  });
  fail_unsent_impatient_();
  forget_registration_answers_();
  if (tcp_up_ && !replaced_) send_hello_();
}

// At a WELCOME: the requests sent on a connection that was lost, and not refused since
// by HELLO_REQUIRED, reached the broker before it lost that connection, and nobody will
// answer them.
void Session::end_in_doubt_() {
  const std::string why = "the connection to sage-busd at " + endpoint_ +
                          " was lost after the request was sent; the request may or may not "
                          "have taken effect";
  for_each_request_([&](Requests::iterator it) {
    if (it->second.sent && it->second.in_doubt) finish_(it, failure(lost_status_(it->second), why));
  });
}

// Registrations are replayed after the next WELCOME; an unregistering service need not
// wait for an answer from a broker that no longer routes to it.
void Session::forget_registration_answers_() {
  for (auto& [id, answer] : registrations_) {
    auto service = services_.find(answer.service);
    if (answer.unregister && service != services_.end()) service->second.core->on_unregistered();
  }
  registrations_.clear();
}

void Session::set_link_(Link link) {
  link_ = link;
  std::optional<Error> error;
  if (link == Link::failing) error.emplace(failure_status_, last_failure_);
  host_.link_changed(link == Link::ready, std::move(error));
}

void Session::send_hello_() {
  out_.Clear();
  out_.set_kind(wire::HELLO);
  out_.set_id(++next_id_);
  hello_id_ = out_.id();
  *out_.mutable_hello() = hello_;
  (void)send_();
  hello_sent_at_ = now_;
}

}  // namespace sagebus::detail
