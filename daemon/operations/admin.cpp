#include "operations/admin.hpp"

#include <algorithm>

#include "sagebus/admin.pb.h"
#include "sagebus/wire/traceparent.hpp"

namespace sagebus::broker {

namespace {

constexpr std::size_t kMaxCallsListed = 1000;  // "calls": the oldest this many

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
  c.set_published(m.published);
  c.set_events_delivered(m.events_delivered);
  c.set_events_dropped(m.events_dropped);
  c.set_sends(m.sends);
  c.set_undeliverable(m.undeliverable);
  c.set_held(m.held);
  c.set_queue_puts(m.queue_puts);
  c.set_queue_gets(m.queue_gets);
  c.set_queue_redeliveries(m.queue_redeliveries);
  c.set_names_refused(m.names_refused);
  c.set_takeovers(m.takeovers);
  c.set_invalid_argument(m.invalid_argument);
  c.set_batches(m.batches);
  c.set_batches_sent(m.batches_sent);
  c.set_streams(m.streams);
  c.set_chunks(m.chunks);
  c.set_rejected_chunks(m.rejected_chunks);
  c.set_late_chunks(m.late_chunks);
  c.set_rejected_credits(m.rejected_credits);
  c.set_cancelled(m.cancelled);
  c.set_rejected_cancels(m.rejected_cancels);
  c.set_late_cancels(m.late_cancels);
  c.set_replies_after_cancel(m.replies_after_cancel);
  c.set_gathers(m.gathers);
}

// millis_between, never below 0: the admin fields are unsigned.
std::uint64_t millis(TimePoint from, TimePoint to) {
  return static_cast<std::uint64_t>(std::max<std::int64_t>(millis_between(from, to), 0));
}

std::uint32_t u32(std::size_t n) {
  return static_cast<std::uint32_t>(std::min<std::size_t>(n, UINT32_MAX));
}

std::string status_payload(const AdminSources& src) {
  const BrokerIdentity& id = src.identity;
  admin::BrokerStatus s;
  s.set_version(id.version);
  s.set_session(id.session);
  s.set_uptime_ms(millis(id.started, src.now));
  for (const auto& e : id.endpoints)
    s.add_endpoints(e);
  s.set_clients(u32(src.registry.clients().size()));
  s.set_services(u32(src.registry.services().size()));
  s.set_instances(u32(src.registry.instance_count()));
  std::uint32_t dispatched = 0;
  std::uint32_t waiting = 0;
  src.calls.for_each([&](const Call& c) {
    if (c.kind != CallKind::request) return;  // sends are not calls to a service
    if (c.state == CallState::dispatched)
      ++dispatched;
    else
      ++waiting;
  });
  s.set_calls_in_flight(dispatched);
  s.set_calls_waiting(waiting);
  std::size_t held = 0;
  for (const auto& [peer, ids] : src.held)
    held += ids.size();
  s.set_sends_held(u32(held));
  s.set_heartbeat_ms(src.config.heartbeat_ms);
  s.set_liveness(src.config.liveness);
  s.set_idle_heartbeat_ms(src.config.idle_heartbeat());
  fill_counters(src.metrics, *s.mutable_counters());
  if (src.store != nullptr) fill_store_status(*src.store, *s.mutable_store());
  for (const Limit l : kLimits) {
    admin::LimitStatus* limit = s.add_limits();
    limit->set_name(std::string(limit_key(l)));
    limit->set_value(limit_value(src.config, l));
    limit->set_refusals(src.metrics.refusals(l));
  }
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

std::string clients_payload(const AdminSources& src) {
  std::vector<const ClientInfo*> clients;
  for (const auto& [rid, c] : src.registry.clients())
    clients.push_back(&c);
  std::sort(clients.begin(), clients.end(),
            [](const ClientInfo* a, const ClientInfo* b) { return a->name < b->name; });
  admin::ClientList list;
  for (const ClientInfo* c : clients) {
    admin::ClientInfo* info = list.add_clients();
    info->set_name(c->name);
    info->set_instance_id(c->instance_id);
    info->set_sdk_version(c->sdk_version);
    info->set_connected_ms(millis(c->connected_at, src.now));
    info->set_last_heard_ms(millis(c->last_seen, src.now));
    info->set_lease_ms(static_cast<std::uint64_t>(src.config.lease(c->idle).count()));
    info->set_idle(c->idle);
    for (const auto& service : c->services)
      info->add_services(service);
    info->set_subscriptions(u32(src.subscriptions.count(c->rid)));
    info->set_calls_pending(u32(src.calls.pending_of(c->handle)));
    if (auto it = src.held.find(c->name); it != src.held.end())
      info->set_held(u32(it->second.size()));
  }
  return list.SerializeAsString();
}

std::string topics_payload(const AdminSources& src) {
  admin::TopicList list;
  src.subscriptions.for_each([&](const Subscription& sub) {
    admin::SubscriptionInfo* info = list.add_subscriptions();
    info->set_pattern(sub.pattern);
    auto it = src.registry.clients().find(sub.client);
    if (it != src.registry.clients().end()) info->set_client(it->second.name);
    info->set_id(sub.id);
    info->set_delivered(sub.delivered);
    info->set_dropped(sub.dropped);
    info->set_credit(sub.credit);
  });
  src.topics.for_each([&](const std::string& topic, std::uint64_t published) {
    admin::TopicStats* stats = list.add_topics();
    stats->set_topic(topic);
    stats->set_published(published);
  });
  return list.SerializeAsString();
}

void fill_queue(const AdminSources& src, const LegacyQueues::Queue& q, admin::QueueInfo& info) {
  info.set_name(q.name);
  info.set_topic(q.topic);
  info.set_depth(u32(q.items.size()));
  info.set_max_depth(u32(src.queues.limits().max_depth));
  info.set_readers(u32(q.readers.size()));
  info.set_writers(u32(q.writers.size()));
  info.set_unacked(u32(q.unacked));
  info.set_puts(q.puts);
  info.set_gets(q.gets);
  info.set_redeliveries(q.redeliveries);
  info.set_durable(q.durable);
  info.set_bytes(q.bytes);
  info.set_staged(u32(q.staged));
  info.set_expired(q.expired);
}

std::string queues_payload(const AdminSources& src) {
  admin::QueueList list;
  for (const auto& [name, q] : src.queues.queues())
    fill_queue(src, q, *list.add_queues());
  if (src.store != nullptr) fill_store_status(*src.store, *list.mutable_store());
  return list.SerializeAsString();
}

// queue.stat and queue.peek.
AdminAnswer queue_payload(std::string_view method, std::string_view request,
                          const AdminSources& src) {
  admin::QueueRequest r;
  if (auto refused = read_queue_request(method, request, r)) return *refused;
  const auto& queues = src.queues.queues();
  auto it = queues.find(r.name());
  if (it == queues.end())
    return {wire::NOT_FOUND, "the broker has no queue '" + r.name() + "'", {}};
  if (method == "queue.stat") {
    admin::QueueInfo info;
    fill_queue(src, it->second, info);
    return {wire::OK, {}, info.SerializeAsString()};
  }
  admin::QueueItems items;
  for (const auto& item : src.queues.peek(r.name(), r.count() == 0 ? 10 : r.count())) {
    admin::QueueItem* out = items.add_items();
    out->set_seq(item.seq);
    out->set_deliveries(item.deliveries);
    std::string& payload = *out->mutable_payload();
    for (const auto& f : item.payload)
      payload.append(static_cast<const char*>(f.data()), f.size());
  }
  return {wire::OK, {}, items.SerializeAsString()};
}

std::string calls_payload(const AdminSources& src) {
  // Oldest first: those are the ones to look at.
  std::vector<const Call*> calls;
  src.calls.for_each([&](const Call& c) {
    if (c.kind != CallKind::send) calls.push_back(&c);  // sends are not calls to a service
  });
  const std::size_t shown = std::min(calls.size(), kMaxCallsListed);
  const auto older = [](const Call* a, const Call* b) {
    return a->accepted != b->accepted ? a->accepted < b->accepted : a->id < b->id;
  };
  std::partial_sort(calls.begin(), calls.begin() + static_cast<std::ptrdiff_t>(shown), calls.end(),
                    older);
  admin::CallList list;
  list.set_total(u32(calls.size()));
  for (std::size_t i = 0; i < shown; ++i) {
    const Call& c = *calls[i];
    admin::CallInfo* info = list.add_calls();
    info->set_id(c.id);
    info->set_service(c.service);
    info->set_method(c.method);
    // A part of a gather has its gather's caller (admin.proto, CallInfo).
    const Call* gather = c.parent != 0 ? src.calls.find(c.parent) : nullptr;
    if (const ClientInfo* caller =
            src.registry.client(gather != nullptr ? gather->caller : c.caller))
      info->set_caller(caller->name);
    info->set_gather(c.parent);
    if (c.kind == CallKind::gather) {
      info->set_all(true);
      info->set_instance_client("all (" + std::to_string(c.asked) + ")");
      info->set_state(admin::CALL_DISPATCHED);
    } else if (c.state == CallState::dispatched) {
      if (const ClientInfo* instance = src.registry.client(c.instance)) {
        info->set_instance(instance->instance_id);
        info->set_instance_client(instance->name);
      }
      info->set_state(c.outcome_claimed() ? admin::CALL_OVERDUE : admin::CALL_DISPATCHED);
    } else {
      info->set_state(admin::CALL_WAITING);
    }
    info->set_age_ms(millis(c.accepted, src.now));
    info->set_left_ms(millis(src.now, c.deadline));
    info->set_trace_id(std::string(wire::trace_id_of(c.traceparent)));
    info->set_stream(c.stream);
    info->set_chunks(c.chunks);
    info->set_credit(c.credit);
    info->set_retried(c.retried);
  }
  return list.SerializeAsString();
}

}  // namespace

std::optional<AdminAnswer> read_queue_request(std::string_view method, std::string_view request,
                                              admin::QueueRequest& out) {
  if (out.ParseFromArray(request.data(), static_cast<int>(request.size())) && !out.name().empty())
    return std::nullopt;
  return AdminAnswer{wire::INVALID_ARGUMENT,
                     std::string(method) + " takes a sagebus.admin.QueueRequest naming the queue",
                     {}};
}

void fill_store_status(const Store& store, admin::StoreStatus& out) {
  const StoreStats stats = store.stats();
  out.set_path(store.path());
  out.set_bytes(stats.bytes);
  out.set_available(stats.available);
  out.set_error(stats.error);
  out.set_commits(stats.commits);
  out.set_items_written(stats.writes);
  out.set_last_commit_us(stats.last_commit_us);
}

AdminAnswer answer_admin(std::string_view method, std::string_view request,
                         const AdminSources& src) {
  if (method == "status") return {wire::OK, {}, status_payload(src)};
  if (method == "services") return {wire::OK, {}, services_payload(src.registry)};
  if (method == "clients") return {wire::OK, {}, clients_payload(src)};
  if (method == "topics") return {wire::OK, {}, topics_payload(src)};
  if (method == "queues") return {wire::OK, {}, queues_payload(src)};
  if (method == "queue.stat" || method == "queue.peek") return queue_payload(method, request, src);
  if (method == "calls") return {wire::OK, {}, calls_payload(src)};
  if (method == "metrics") return {wire::OK, {}, prometheus_text(src, src.draining)};
  return {wire::NOT_FOUND,
          "service '$broker' has no method '" + std::string(method) +
              "'; it has 'status', 'services', 'clients', 'topics', 'queues', 'calls', "
              "'queue.stat', 'queue.peek', 'queue.purge', 'store.compact', 'metrics', 'reload' "
              "and 'drain'",
          {}};
}

}  // namespace sagebus::broker
