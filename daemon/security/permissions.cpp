// The authorisation half of the Broker (docs/security.md): which principal sent a message,
// whether its rules allow what the message asks, and what a reload takes away. The verb
// and subject a kind is checked against are its row's guard (loop/broker_kinds.cpp);
// handle_message_ asks before the kind's handler runs.
#include <spdlog/spdlog.h>

#include "loop/broker.hpp"

namespace sagebus::broker {

bool Broker::from_its_principal_(const ClientInfo& client, const zmq::message_t& header_frame) {
  const char* user = zmq_msg_gets(header_frame.handle(), "User-Id");
  if (user != nullptr && client.principal != nullptr && client.principal_name == user) return true;
  // Another connection using this one's routing id after it closed, before the broker
  // heard of the close: its messages are not this client's.
  ++metrics_.malformed;
  if (refusal_log_limiter_.take(now_))
    spdlog::warn(
        "dropped a {} on the connection of '{}': sent as principal '{}', the connection "
        "was accepted as '{}'",
        wire::kind_name(in_.kind()), client.name, user != nullptr ? user : "(none)",
        client.principal_name);
  return false;
}

bool Broker::allows_(const ClientInfo& client, Verb verb, std::string_view subject) const {
  if (client.principal == nullptr) return false;
  const Rules& rules = client.principal->rules;
  return verb == Verb::subscribe ? rules.allows_pattern(verb, subject)
                                 : rules.allows(verb, subject);
}

bool Broker::refuse_unpermitted_(const ClientInfo& client, const KindRow& row) {
  const Permission asked = row.guard(in_, subject_);
  if (allows_(client, asked.verb, asked.subject)) return false;
  if (client.principal != nullptr)
    deny_(client.rid, client.name, *client.principal, asked.verb, asked.subject);
  return true;
}

void Broker::deny_(const RoutingId& to, std::string_view who, const Principal& principal, Verb verb,
                   std::string_view subject) {
  metrics_.deny(principal.name, verb);
  const std::string why = "permission denied: principal '" + principal.name + "' may not " +
                          std::string(verb_name(verb)) + " '" + std::string(subject) +
                          "' under the rules of " + auth_->path;
  // Ten thousand refusals make a line a second at most, each saying how many it stands for.
  if (const auto unlogged = denial_log_throttle_.take(now_))
    spdlog::warn("refused a {} from '{}': {}{}", wire::kind_name(in_.kind()), who, why,
                 *unlogged > 0 ? " (and " + std::to_string(*unlogged) +
                                     " more refusals since the last such line)"
                               : std::string());
  refuse_(to, wire::PERMISSION_DENIED, why);
}

const Principal* Broker::principal_of_(const zmq::message_t& header_frame, std::string& key) const {
  const char* user = zmq_msg_gets(header_frame.handle(), "User-Id");
  const char* accepted = zmq_msg_gets(header_frame.handle(), ZapHandler::kKeyProperty);
  if (user == nullptr || accepted == nullptr) return nullptr;
  const Principal* principal = auth_->by_key(accepted);
  if (principal == nullptr || principal->name != user) return nullptr;
  key = accepted;
  return principal;
}

void Broker::revoke_() {
  std::vector<std::pair<RoutingId, std::string>> gone;
  outbox_.flush_events();  // batches point at subscriptions
  std::vector<RoutingId> rids;
  for (const auto& [rid, client] : registry_.clients())
    rids.push_back(rid);
  for (const RoutingId& rid : rids) {
    ClientInfo& c = *registry_.client(rid);
    const Principal* principal = auth_->by_key(c.key);
    // The old principal's name: the old rules are gone, and with them what c.principal points at.
    const std::string was = c.principal_name;
    if (principal == nullptr || principal->name != was) {
      c.principal = nullptr;
      gone.emplace_back(rid,
                        "its key is no longer a key of principal '" + was + "' in " + auth_->path);
      continue;
    }
    c.principal = principal;
    if (!principal->rules.allows(Verb::name, c.name)) {
      gone.emplace_back(rid, "principal '" + principal->name + "' may no longer name '" + c.name +
                                 "' in " + auth_->path);
      continue;
    }
    for (const std::string& service : std::vector<std::string>(c.services)) {
      if (principal->rules.allows(Verb::register_service, service)) continue;
      registry_.unregister_instance(rid, service);
      spdlog::warn(
          "reload: instance of '{}' by '{}' unregistered: principal '{}' may no longer "
          "register '{}'; its calls in flight finish",
          service, c.name, principal->name, service);
      pump_(service);
    }
  }
  std::vector<std::pair<RoutingId, std::uint64_t>> dropped;
  subscriptions_.for_each([&](const Subscription& sub) {
    const ClientInfo* c = registry_.client(sub.client);
    if (c == nullptr || c->principal == nullptr) return;
    if (!c->principal->rules.allows_pattern(Verb::subscribe, sub.pattern)) {
      dropped.emplace_back(sub.client, sub.id);
      spdlog::warn(
          "reload: subscription {} of '{}' on '{}' dropped: principal '{}' may no longer "
          "subscribe to it",
          sub.id, c->name, sub.pattern, c->principal->name);
    }
  });
  for (const auto& [rid, id] : dropped)
    subscriptions_.unsubscribe(rid, id);
  for (auto& [rid, why] : gone) {
    out_.Clear();
    out_.set_kind(wire::GOODBYE);
    out_.set_status(wire::UNAVAILABLE);
    out_.set_message("the broker's auth rules changed: " + why);
    outbox_.send(rid, wire::encode(out_));
    spdlog::warn("reload: connection '{}' closed: {}", registry_.client(rid)->name, why);
    schedule_removal_(rid, "auth rules changed: " + why);
  }
  apply_removals_();
}

}  // namespace sagebus::broker
