#include "admin.hpp"

#include "sagebus/admin.pb.h"

namespace sagebus::broker {

namespace {

void fill_counters(const Metrics& m, admin::Counters& c) {
  c.set_calls(m.calls);
  c.set_replies(m.replies);
  c.set_late_replies(m.late_replies);
  c.set_rejected_replies(m.rejected_replies);
  c.set_dropped_replies(m.dropped_replies);
  c.set_malformed(m.malformed);
  c.set_hello_required(m.hello_required);
  c.set_no_responders(m.no_responders);
  c.set_deadline_exceeded(m.deadline_exceeded);
  c.set_overloaded(m.overloaded);
  c.set_unavailable(m.unavailable);
  c.set_retried(m.retried);
  c.set_leases_expired(m.leases_expired);
  c.set_disconnects(m.disconnects);
}

std::string status_payload(const BrokerIdentity& id, const Registry& registry,
                           const PendingCalls& calls, const Metrics& metrics, TimePoint now) {
  admin::BrokerStatus s;
  s.set_version(id.version);
  s.set_session(id.session);
  s.set_uptime_ms(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now - id.started).count()));
  for (const auto& e : id.endpoints)
    s.add_endpoints(e);
  s.set_clients(static_cast<std::uint32_t>(registry.clients().size()));
  s.set_services(static_cast<std::uint32_t>(registry.services().size()));
  s.set_instances(static_cast<std::uint32_t>(registry.instance_count()));
  std::uint32_t dispatched = 0;
  std::uint32_t waiting = 0;
  calls.for_each([&](const Call& c) {
    if (c.state == CallState::dispatched)
      ++dispatched;
    else
      ++waiting;
  });
  s.set_calls_in_flight(dispatched);
  s.set_calls_waiting(waiting);
  s.set_heartbeat_ms(id.heartbeat_ms);
  s.set_liveness(id.liveness);
  fill_counters(metrics, *s.mutable_counters());
  return s.SerializeAsString();
}

std::string services_payload(const Registry& registry) {
  admin::ServiceList list;
  for (const auto& [name, svc] : registry.services()) {
    admin::ServiceInfo* info = list.add_services();
    info->set_name(name);
    info->set_strategy(svc.strategy());
    info->set_waiting(static_cast<std::uint32_t>(svc.waiting.size()));
    for (const auto& i : svc.instances) {
      admin::InstanceInfo* ii = info->add_instances();
      ii->set_id(i.instance_id);
      ii->set_client(i.client_name);
      for (const auto& m : i.methods)
        ii->add_methods(m);
      ii->set_version(i.version);
      ii->set_max_inflight(i.max_inflight);
      ii->set_in_flight(i.in_flight);
      ii->set_served(i.served);
      ii->set_draining(i.draining);
    }
  }
  return list.SerializeAsString();
}

}  // namespace

AdminAnswer answer_admin(std::string_view method, const BrokerIdentity& identity,
                         const Registry& registry, const PendingCalls& calls,
                         const Metrics& metrics, TimePoint now) {
  if (method == "status")
    return {wire::OK, {}, status_payload(identity, registry, calls, metrics, now)};
  if (method == "services") return {wire::OK, {}, services_payload(registry)};
  return {wire::NOT_FOUND,
          "service '$broker' has no method '" + std::string(method) +
              "'; it has 'status' and 'services'",
          {}};
}

}  // namespace sagebus::broker
