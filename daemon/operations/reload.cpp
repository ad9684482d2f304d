// The reload half of the Broker: on SIGHUP the loop re-reads the configuration (the
// --config file, with the command line's options still overriding it) and applies what
// can change while clients are connected: the log level, the limits, the drain timeout
// and the queue-topic mapping. What cannot (the endpoints, the HTTP endpoint, what
// clients were told at HELLO, what is set on the socket) is kept, and the log says so.
// One log line per key that differs. With auth, the rules file is read again too, and what
// its new rules forbid is taken away (security/permissions.cpp, revoke_); the broker's
// keys, set on each endpoint when it was bound, stay until a restart, and a change to
// them is logged as a warning. A configuration or a rules file that does not read changes
// nothing.
#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "operations/notify.hpp"

namespace sagebus::broker {

namespace {

template <class T>
std::string show(const T& value) {
  if constexpr (std::is_same_v<T, std::string>) {
    return value;
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    std::string out;
    for (const auto& v : value)
      out += (out.empty() ? "" : ",") + v;
    return "[" + out + "]";
  } else if constexpr (std::is_same_v<T, std::map<std::string, std::string, std::less<>>>) {
    std::string out;
    for (const auto& [k, v] : value)
      out += (out.empty() ? "" : ",") + k + "=" + v;
    return "[" + out + "]";
  } else {
    return std::to_string(value);
  }
}

std::string first_line(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  return line.rfind("sage-busd: ", 0) == 0 ? line.substr(11) : line;
}

}  // namespace

void Broker::reload_(const Reloader& reloader) {
  notify_reloading();
  const ConfigRead read = reloader();
  if (read.action != ConfigRead::Action::run) {
    spdlog::error("reload failed, the running configuration is unchanged: {}",
                  first_line(read.err));
  } else if (auth_ && !reload_auth_()) {
    // Logged by reload_auth_: nothing changed.
  } else {
    const auto [changed, kept] = apply_config_(read.config);
    const std::string from = read.config_path.empty() ? "the command line" : read.config_path;
    if (changed == 0 && kept == 0)
      spdlog::info("reloaded {}: nothing changed", from);
    else
      spdlog::info("reloaded {}: {} keys applied, {} kept until a restart", from, changed, kept);
  }
  notify_ready("running");
}

bool Broker::reload_auth_() {
  std::optional<AuthConfig> fresh;
  try {
    fresh.emplace(read_auth_config(config_.auth));
  } catch (const std::exception& e) {
    spdlog::error("reload failed, the running configuration and auth rules are unchanged: {}",
                  e.what());
    return false;
  }
  // Each endpoint serves the key it was bound with, read from the rules at start (the
  // broker's key pair, or its endpoint-keys entry): a change to either waits for a restart.
  for (const auto& [endpoint, serving] : served_keys_) {
    if (fresh->broker_keys_for(endpoint).public_key != serving)
      spdlog::warn(
          "reload: the broker key of endpoint {} in {} changed; it keeps serving the one it "
          "started with ({}) until sage-busd restarts",
          endpoint, config_.auth, serving);
  }
  if (const auto unknown = fresh->unknown_endpoint(config_.endpoints))
    spdlog::warn(
        "reload: [broker.endpoint-keys] in {} gives a key to {}, which is not an endpoint of "
        "this broker; sage-busd will not start with it",
        config_.auth, *unknown);
  auth_ = std::move(fresh);
  spdlog::info("reload: auth rules re-read from {}: {} principals", config_.auth,
               auth_->principals().size());
  revoke_();
  return true;
}

std::pair<int, int> Broker::apply_config_(const BrokerConfig& next) {
  BrokerConfig& cur = config_;
  // The change lines are logged at the lower of the old and new levels, so that a reload
  // to a quieter level still says so, and one to a louder level shows every line.
  const auto old_level = spdlog::get_level();
  const auto new_level = spdlog::level::from_str(next.log_level);
  spdlog::set_level(std::min(old_level, new_level));

  int changed = 0;
  int kept = 0;
  auto live = [&](const char* key, auto& field, const auto& value) {
    if (field == value) return;
    spdlog::info("reload: {}: {} -> {}", key, show(field), show(value));
    field = value;
    ++changed;
  };
  auto fixed = [&](const char* key, const auto& field, const auto& value) {
    if (field == value) return;
    spdlog::warn(
        "reload: {}: cannot change while running; kept {} (the file says {}): restart "
        "sage-busd to apply it",
        key, show(field), show(value));
    ++kept;
  };
  live("log-level", cur.log_level, next.log_level);
  live("spin-us", cur.spin_us, next.spin_us);
  live("max-clients", cur.max_clients, next.max_clients);
  live("max-waiting", cur.max_waiting_per_service, next.max_waiting_per_service);
  live("max-calls", cur.max_calls, next.max_calls);
  live("max-calls-per-client", cur.max_calls_per_client, next.max_calls_per_client);
  live("max-header", cur.max_header, next.max_header);
  live("max-subscriptions", cur.max_subscriptions_per_client, next.max_subscriptions_per_client);
  live("max-held", cur.max_held_per_peer, next.max_held_per_peer);
  live("max-queue-depth", cur.max_queue_depth, next.max_queue_depth);
  live("max-queues", cur.max_queues, next.max_queues);
  live("max-queue-waiters", cur.max_queue_waiters, next.max_queue_waiters);
  live("max-unacked", cur.max_unacked, next.max_unacked);
  live("queue-topic", cur.queue_topics, next.queue_topics);
  live("drain-timeout-ms", cur.drain_timeout_ms, next.drain_timeout_ms);
  fixed("endpoint", cur.endpoints, next.endpoints);
  fixed("http", cur.http, next.http);
  fixed("heartbeat-ms", cur.heartbeat_ms, next.heartbeat_ms);
  fixed("idle-heartbeat-ms", cur.idle_heartbeat_ms, next.idle_heartbeat_ms);
  fixed("liveness", cur.liveness, next.liveness);
  fixed("max-payload", cur.max_payload, next.max_payload);
  fixed("peer-queue", cur.peer_queue, next.peer_queue);
  fixed("auth", cur.auth, next.auth);
  fixed("allow-anonymous", cur.allow_anonymous, next.allow_anonymous);
  fixed("store", cur.store, next.store);

  spdlog::set_level(new_level);
  calls_.set_capacity(cur.max_calls);
  QueueLimits limits = queues_.limits();
  limits.max_depth = cur.max_queue_depth;
  limits.max_queues = cur.max_queues;
  limits.max_waiting = cur.max_queue_waiters;
  limits.max_unacked = cur.max_unacked;
  queues_.set_limits(limits);
  queues_.set_topics(cur.queue_topics);
  return {changed, kept};
}

}  // namespace sagebus::broker
