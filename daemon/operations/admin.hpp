// Admin: the broker's own service "$broker" (wire::kBrokerService), which busctl calls.
// Builds the reply payloads from the broker's tables; the broker answers synchronously
// in its loop. Reads only; used by the loop thread only; not thread safe.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "operations/config.hpp"
#include "operations/metrics.hpp"
#include "routing/pending.hpp"
#include "routing/queues.hpp"
#include "routing/registry.hpp"
#include "routing/topics.hpp"
#include "sagebus/admin.pb.h"
#include "sagebus/wire.pb.h"
#include "store/store.hpp"

namespace sagebus::broker {

// What the status reply says about the broker itself.
struct BrokerIdentity {
  std::string version;
  std::string session;
  TimePoint started{};
  std::vector<std::string> endpoints;
};

struct AdminAnswer {
  wire::Status status = wire::OK;
  std::string message;  // when status != OK
  std::string payload;  // the serialized admin message, when status == OK
};

// The broker's tables, as the admin replies read them.
struct AdminSources {
  const BrokerIdentity& identity;
  const BrokerConfig& config;  // the running configuration (the limits)
  const Registry& registry;
  const PendingCalls& calls;
  const Metrics& metrics;
  const SubscriptionTable& subscriptions;
  const RecentTopics& topics;
  const LegacyQueues& queues;
  // Point-to-point messages held per peer name.
  const std::unordered_map<std::string, std::deque<CallId>>& held;
  const Store* store;  // nullptr: none
  TimePoint now;
  bool draining = false;
};

// Answers `method` of "$broker", given the request's payload: "status" ->
// admin.BrokerStatus, "services" -> admin.ServiceList, "clients" -> admin.ClientList,
// "topics" -> admin.TopicList, "queues" -> admin.QueueList, "calls" -> admin.CallList (the
// calls in flight, the oldest 1000, and how many in all), "queue.stat" and "queue.peek"
// (an admin.QueueRequest) -> admin.QueueInfo and admin.QueueItems, "metrics" -> the
// Prometheus text of /metrics, anything else NOT_FOUND. (The broker answers queue.purge
// and store.compact itself: they change things.)
AdminAnswer answer_admin(std::string_view method, std::string_view request,
                         const AdminSources& sources);

// Reads the admin.QueueRequest that `method` (queue.stat, peek, purge) takes into `out`;
// the INVALID_ARGUMENT answer when `request` is none.
std::optional<AdminAnswer> read_queue_request(std::string_view method, std::string_view request,
                                              admin::QueueRequest& out);

// The store's figures, as admin.StoreStatus reports them.
void fill_store_status(const Store& store, admin::StoreStatus& out);

}  // namespace sagebus::broker
