// Serving: registrations, calls dispatched to this client, their replies (gathered into
// BATCHes: Session::gather_), and point-to-point deliveries.
#include "session.hpp"

#include <algorithm>

#include "../service_core.hpp"
#include "protocol.hpp"
#include "sagebus/wire/host_clock.hpp"

namespace sagebus::detail {

using namespace protocol;
using std::chrono::duration_cast;

void Session::handle_(command::AddService& c) {
  const auto name = c.core->name();
  services_[name] = ServiceEntry{std::move(c.core), true};
  if (link_ == Link::ready) send_register_(*services_[name].core);
}

void Session::handle_(command::Unregister& c) {
  auto it = services_.find(c.name);
  if (it == services_.end()) return;
  it->second.registered = false;
  if (link_ != Link::ready) return it->second.core->on_unregistered();
  out_.Clear();
  out_.set_kind(wire::UNREGISTER);
  out_.set_id(++next_id_);
  out_.set_service(c.name);
  registrations_[out_.id()] = RegistrationAnswer{c.name, true};
  if (!send_()) it->second.core->on_unregistered();
}

void Session::handle_(command::RemoveService& c) {
  services_.erase(c.name);
}

// A reply to a dispatch of an earlier broker session is dropped: the broker it was for
// is gone, and the new one numbers its dispatches afresh, so the id may name a call it
// gave this instance since — the reply would answer that call's caller.
void Session::handle_(command::SendReply& c) {
  if (c.epoch != session_epoch_) return;
  reply_(c.id, c.status, std::move(c.message), std::move(c.payload));
}

// A small reply waits for the end of the turn, to go with others (gather_); one the
// queue refuses waits for room (send_or_hold_).
void Session::reply_(std::uint64_t id, Status status, std::string message, std::string payload) {
  if (payload.size() > max_payload_) {
    // The broker would refuse it; its caller hears why instead of a lost connection.
    status = Status::handler_error;
    message = "the handler's reply of " + std::to_string(payload.size()) +
              " bytes exceeds the broker's max-payload of " + std::to_string(max_payload_) +
              " bytes";
    payload.clear();
  }
  using H = wire::Header;
  head_.start(wire::REPLY)
      .varint(H::kIdFieldNumber, id)
      .enumeration(H::kStatusFieldNumber, static_cast<int>(status))
      .string(H::kMessageFieldNumber, message);
  zmq::message_t frame = adopt(std::move(payload));
  send_or_hold_(head_.bytes(), &frame, wire::kCallBatchLimits);
}

void Session::send_or_hold_(std::string_view header, zmq::message_t* frame,
                            const wire::BatchLimits& limits) {
  if (held_out_.empty() && try_send_(header, frame, limits)) return;
  HeldMessage held{std::string(header), {}, frame != nullptr, &limits};
  if (frame != nullptr) held.frame.move(*frame);
  held_out_.push_back(std::move(held));
}

// False, and `frame` kept, when the transport's queue refuses it.
bool Session::try_send_(std::string_view header, zmq::message_t* frame,
                        const wire::BatchLimits& limits) {
  if (gathers_(frame != nullptr ? frame->size() : 0, limits)) return gather_(header, frame, limits);
  zmq::message_t head(header.data(), header.size());
  if (!put_(head, frame)) return false;
  take_short_lease_();
  return true;
}

void Session::flush_held_out_() {
  while (!held_out_.empty() && link_ == Link::ready) {
    HeldMessage& held = held_out_.front();
    if (!try_send_(held.header, held.has_frame ? &held.frame : nullptr, *held.limits)) return;
    held_out_.pop_front();
  }
}

void Session::send_register_(const ServiceCore& core) {
  out_.Clear();
  out_.set_kind(wire::REGISTER);
  out_.set_id(++next_id_);
  out_.set_service(core.name());
  auto& r = *out_.mutable_registration();
  for (auto& m : core.methods())
    r.add_methods(m);
  r.set_version(core.options().version);
  r.set_max_inflight(static_cast<std::uint32_t>(core.options().max_inflight));
  r.set_strategy(static_cast<wire::Strategy>(core.options().strategy));
  registrations_[out_.id()] = RegistrationAnswer{core.name(), false};
  (void)send_();
}

void Session::on_request_() {
  if (discard_before_welcome_ != 0) return;  // its caller was answered for us: check_stall_
  auto it = services_.find(in_.service());
  if (it == services_.end())
    return reply_(in_.id(), Status::unavailable,
                  "service " + in_.service() + " is no longer served on this connection", {});
  const auto deadline =
      wire::deadline_of(now_, in_.timeout_ms(), same_host_ ? in_.deadline_us() : 0);
  Job job{.id = in_.id(),
          .epoch = session_epoch_,
          .method = in_.method(),
          .headers = {in_.headers().begin(), in_.headers().end()},
          .payload = {},
          .deadline = deadline,
          .stream = in_.stream(),
          .all = in_.all(),
          .credit = in_.credit(),
          .traceparent = in_.traceparent(),
          .control = {}};
  if (!frames_.empty()) job.payload = std::move(frames_.front());
  ServiceCore& core = *it->second.core;
  if (!core.options().on_io_thread) return core.submit(std::move(job));
  // Here and now: ServiceOptions::on_io_thread. After handlers that took longer than
  // kMaxGatherWait (the driver's time moved on that much while they ran), the replies
  // waiting go before the next one runs: it may be as slow.
  if (gathered_too_long_()) (void)flush_gathered_();
  Answer answer = core.run(job);
  if (answer.as_chunk) {
    command::SendChunk chunk{job.id, job.epoch, std::move(answer.payload)};
    handle_(chunk);
  }
  reply_(job.id, answer.status, std::move(answer.message), std::move(answer.payload));
}

// The broker's CANCEL of a call dispatched here: to the service that holds it, if any (it
// may have answered already).
void Session::on_cancel_() {
  const std::string why = in_.message().empty() ? "cancelled by its caller" : in_.message();
  for (auto& [name, entry] : services_)
    if (entry.core->cancel(session_epoch_, in_.id(), why)) return;
}

// CREDIT from the broker: more chunks for a stream this instance writes.
void Session::on_credit_() {
  if (in_.subscription() != 0 || in_.credit() == 0) return;
  for (auto& [name, entry] : services_)
    if (entry.core->add_credit(session_epoch_, in_.id(), in_.credit())) return;
}

// As handle_(SendReply): a chunk of a broker session that ended is dropped; one the queue
// refuses waits for room, in order (send_or_hold_). A small one is copied into the batch,
// and c.payload left whole, for the driver to reuse its buffer.
void Session::handle_(command::SendChunk& c) {
  if (c.epoch != session_epoch_) return;
  head_.start(wire::CHUNK).varint(wire::Header::kIdFieldNumber, c.id);
  if (held_out_.empty() && gathers_(c.payload.size(), wire::kChunkBatchLimits) &&
      gather_(head_.bytes(), std::string_view(c.payload), wire::kChunkBatchLimits))
    return;
  zmq::message_t frame = adopt(std::move(c.payload));
  send_or_hold_(head_.bytes(), &frame, wire::kChunkBatchLimits);
}

void Session::on_deliver_() {
  if (discard_before_welcome_ != 0) return;  // its sender was answered for us: check_stall_
  Message message{{}, in_.peer(), {}, 0};
  if (!frames_.empty()) message.payload = frames_.front().to_string();
  const bool taken = host_.offer_to_inbox(std::move(message));
  reply_(in_.id(), taken ? Status::ok : Status::overloaded,
         taken ? std::string()
               : "the inbox of " + options_.name + " is full (" +
                     std::to_string(options_.inbox_size) + " messages)",
         {});
}

// Nothing is sent for a receive(): a heartbeat now, which no longer says idle, takes the
// short lease.
void Session::handle_(command::ReadsInbox&) {
  if (idle_lease_) next_heartbeat_ = std::min(next_heartbeat_, now_);
}

}  // namespace sagebus::detail
