#include "operations/metrics.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "operations/admin.hpp"
#include "sagebus/wire/frame.hpp"

namespace sagebus::broker {

void Histogram::observe(std::chrono::microseconds latency) noexcept {
  const auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(latency.count(), 0));
  const auto it = std::lower_bound(kLatencyBoundsUs.begin(), kLatencyBoundsUs.end(), us);
  ++buckets[static_cast<std::size_t>(it - kLatencyBoundsUs.begin())];
  ++count;
  sum_us += us;
}

void MethodStats::finish(int status, std::chrono::microseconds took) noexcept {
  forget();
  ++outcomes[std::min<std::size_t>(static_cast<std::size_t>(std::max(status, 0)),
                                   kStatusCount - 1)];
  latency.observe(took);
}

namespace {

std::uint64_t mix(std::uint64_t h, std::uint64_t word) noexcept {
  h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
  return h ^ (h >> 29);
}

// Eight bytes at a time, and the last up to eight as one word (two overlapping loads of
// four, or three single bytes), then the length: names are short, and a loop over bytes
// cost more than the lookup it serves. The length keeps service "a" + method "bc" apart
// from "ab" + "c".
std::uint64_t add_bytes(std::uint64_t h, std::string_view s) noexcept {
  const char* p = s.data();
  std::size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, p, 8);
    h = mix(h, word);
  }
  if (n >= 4) {
    std::uint32_t first = 0;
    std::uint32_t last = 0;
    std::memcpy(&first, p, 4);
    std::memcpy(&last, p + n - 4, 4);
    h = mix(h, (std::uint64_t{last} << 32) | first);
  } else if (n > 0) {
    const auto byte = [p](std::size_t i) {
      return std::uint64_t{static_cast<unsigned char>(p[i])};
    };
    h = mix(h, (byte(0) << 16) | (byte(n / 2) << 8) | byte(n - 1));
  }
  return mix(h, s.size());
}

}  // namespace

std::size_t MethodTable::KeyHash::operator()(KeyView key) const noexcept {
  return static_cast<std::size_t>(
      add_bytes(add_bytes(0xcbf29ce484222325ULL, key.service), key.method));
}

MethodStats* MethodTable::find(std::string_view service, std::string_view method) {
  auto it = by_key_.find(KeyView{service, method});
  return it == by_key_.end() ? nullptr : &it->second;
}

MethodStats* MethodTable::find_or_add(std::string_view service, std::string_view method) {
  if (MethodStats* stats = find(service, method)) return stats;
  if (by_key_.size() >= kMaxMethodSeries) return &other_;
  return &by_key_[Key{std::string(service), std::string(method)}];
}

std::map<std::pair<std::string, std::string>, const MethodStats*> MethodTable::sorted() const {
  std::map<std::pair<std::string, std::string>, const MethodStats*> out;
  for (const auto& [key, stats] : by_key_)
    out.emplace(std::pair{key.service, key.method}, &stats);
  if (other_.calls > 0) out.emplace(std::pair{"_other", "_other"}, &other_);
  return out;
}

std::uint64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

namespace {

constexpr std::size_t kMaxSeries = 1000;  // per topic, pattern and queue family

std::string escape(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

class Text {
 public:
  void family(const char* name, const char* type, const char* help) {
    o_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  void value(std::string_view name, std::string_view labels, std::uint64_t v) {
    o_ << name;
    if (!labels.empty()) o_ << '{' << labels << '}';
    o_ << ' ' << v << '\n';
  }
  void value(std::string_view name, std::string_view labels, double v) {
    o_ << name;
    if (!labels.empty()) o_ << '{' << labels << '}';
    o_ << ' ' << v << '\n';
  }
  std::string str() const { return o_.str(); }

 private:
  std::ostringstream o_;
};

std::string label(const char* name, std::string_view v) {
  return std::string(name) + "=\"" + escape(v) + '"';
}

void counters(Text& t, const Metrics& m) {
  struct Counter {
    const char* name;
    const char* help;
    std::uint64_t value;
  };
  const Counter list[] = {
      {"sagebus_requests_total", "REQUESTs accepted for routing, admin calls included", m.calls},
      {"sagebus_replies_total", "Outcomes delivered to callers, any status", m.replies},
      {"sagebus_late_replies_total", "Replies after the caller's outcome was sent", m.late_replies},
      {"sagebus_rejected_replies_total", "Replies from a connection not given the call",
       m.rejected_replies},
      {"sagebus_dropped_replies_total", "Outcomes for a caller that is gone or not reading",
       m.dropped_replies},
      {"sagebus_batches_total", "BATCH messages received, several messages each", m.batches},
      {"sagebus_batches_sent_total", "BATCH messages sent, several replies each", m.batches_sent},
      {"sagebus_malformed_total", "Messages that could not be decoded", m.malformed},
      {"sagebus_invalid_argument_total",
       "Messages answered INVALID_ARGUMENT: invalid names, kinds, versions or sizes",
       m.invalid_argument},
      {"sagebus_hello_required_total", "Messages from peers that had not said HELLO",
       m.hello_required},
      {"sagebus_retried_total", "Idempotent calls re-dispatched after losing an instance",
       m.retried},
      {"sagebus_leases_expired_total", "Clients removed for silence", m.leases_expired},
      {"sagebus_disconnects_total", "Connections seen to close", m.disconnects},
      {"sagebus_published_total", "Publishes accepted", m.published},
      {"sagebus_events_delivered_total", "Events handed to subscribers", m.events_delivered},
      {"sagebus_events_dropped_total", "Events subscribers missed", m.events_dropped},
      {"sagebus_sends_total", "Point-to-point SENDs accepted", m.sends},
      {"sagebus_undeliverable_total", "SENDs answered UNDELIVERABLE", m.undeliverable},
      {"sagebus_held_total", "SENDs held for a peer that was not connected", m.held},
      {"sagebus_names_refused_total", "HELLOs refused because the name was taken", m.names_refused},
      {"sagebus_takeovers_total", "Connections replaced by a HELLO with takeover", m.takeovers},
      {"sagebus_refused_draining_total", "Requests answered UNAVAILABLE while draining",
       m.refused_draining},
      {"sagebus_keys_refused_total", "Connections whose CURVE key no principal holds",
       m.keys_refused},
      {"sagebus_streams_total", "REQUESTs with stream accepted for routing", m.streams},
      {"sagebus_chunks_total", "CHUNKs of streams forwarded to callers", m.chunks},
      {"sagebus_rejected_chunks_total",
       "CHUNKs refused: no stream of the sender's, not a stream, or no credit left",
       m.rejected_chunks},
      {"sagebus_late_chunks_total", "CHUNKs after the stream's outcome was sent", m.late_chunks},
      {"sagebus_rejected_credits_total", "CREDITs for no stream of the sender's still open",
       m.rejected_credits},
      {"sagebus_cancelled_total", "Calls and streams their caller cancelled or left", m.cancelled},
      {"sagebus_rejected_cancels_total", "CANCELs for no call of the sender's still open",
       m.rejected_cancels},
      {"sagebus_late_cancels_total", "CANCELs for a call whose deadline had passed",
       m.late_cancels},
      {"sagebus_replies_after_cancel_total",
       "REPLYs and CHUNKs from an instance for a call cancelled shortly before",
       m.replies_after_cancel},
      {"sagebus_gathers_total", "REQUESTs with all (scatter-gather) accepted for routing",
       m.gathers},
  };
  for (const auto& c : list) {
    t.family(c.name, "counter", c.help);
    t.value(c.name, "", c.value);
  }
}

void denied(Text& t, const Metrics& m) {
  t.family("sagebus_permission_denied_total", "counter",
           "Messages refused by the auth rules, by principal and verb");
  for (const auto& [principal, verbs] : m.denied)
    for (std::size_t v = 0; v < kVerbCount; ++v)
      if (verbs[v] > 0)
        t.value(
            "sagebus_permission_denied_total",
            label("principal", principal) + ',' + label("verb", verb_name(static_cast<Verb>(v))),
            verbs[v]);
}

void limits(Text& t, const BrokerConfig& config, const Metrics& m) {
  t.family("sagebus_limit", "gauge", "The configured value of each limit, by its config key");
  for (const Limit l : kLimits)
    t.value("sagebus_limit", label("limit", limit_key(l)), limit_value(config, l));
  t.family("sagebus_limit_refusals_total", "counter",
           "Messages a limit refused: answered OVERLOADED or INVALID_ARGUMENT, or dropped");
  for (const Limit l : kLimits)
    t.value("sagebus_limit_refusals_total", label("limit", limit_key(l)), m.refusals(l));
}

void methods(Text& t, const MethodTable& table) {
  const auto sorted = table.sorted();
  auto each = [&](auto&& f) {
    for (const auto& [key, stats] : sorted)
      f(label("service", key.first) + ',' + label("method", key.second), *stats);
  };
  t.family("sagebus_calls_total", "counter", "Calls accepted per service and method");
  each([&](const std::string& l, const MethodStats& s) {
    t.value("sagebus_calls_total", l, s.calls);
  });
  t.family("sagebus_calls_in_flight", "gauge", "Calls accepted whose outcome is not yet sent");
  each([&](const std::string& l, const MethodStats& s) {
    t.value("sagebus_calls_in_flight", l, s.in_flight);
  });
  t.family("sagebus_call_outcomes_total", "counter",
           "Call outcomes per service, method and status");
  each([&](const std::string& l, const MethodStats& s) {
    for (std::size_t i = 0; i < kStatusCount; ++i)
      if (s.outcomes[i] > 0)
        t.value("sagebus_call_outcomes_total",
                l + ',' + label("status", wire::status_name(static_cast<wire::Status>(i))),
                s.outcomes[i]);
  });
  t.family("sagebus_call_duration_seconds", "histogram",
           "Time from a call's acceptance to its outcome");
  each([&](const std::string& l, const MethodStats& s) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kLatencyBoundsUs.size(); ++i) {
      cumulative += s.latency.buckets[i];
      t.value("sagebus_call_duration_seconds_bucket",
              l + ",le=\"" + std::to_string(static_cast<double>(kLatencyBoundsUs[i]) / 1e6) + '"',
              cumulative);
    }
    t.value("sagebus_call_duration_seconds_bucket", l + ",le=\"+Inf\"", s.latency.count);
    t.value("sagebus_call_duration_seconds_sum", l, static_cast<double>(s.latency.sum_us) / 1e6);
    t.value("sagebus_call_duration_seconds_count", l, s.latency.count);
  });
}

void pubsub(Text& t, const AdminSources& src) {
  t.family("sagebus_topic_published_total", "counter",
           "Messages published per topic (the 1000 most recently published topics)");
  src.topics.for_each([&](const std::string& topic, std::uint64_t published) {
    t.value("sagebus_topic_published_total", label("topic", topic), published);
  });
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>, std::less<>> by_pattern;
  src.subscriptions.for_each([&](const Subscription& sub) {
    auto it = by_pattern.find(sub.pattern);
    if (it == by_pattern.end()) {
      if (by_pattern.size() >= kMaxSeries)
        it = by_pattern.try_emplace("_other").first;
      else
        it = by_pattern.try_emplace(sub.pattern).first;
    }
    it->second.first += sub.delivered;
    it->second.second += sub.dropped;
  });
  t.family("sagebus_subscription_delivered_total", "counter",
           "Events delivered per subscription pattern (current subscriptions)");
  for (const auto& [pattern, n] : by_pattern)
    t.value("sagebus_subscription_delivered_total", label("pattern", pattern), n.first);
  t.family("sagebus_subscription_dropped_total", "counter",
           "Events dropped per subscription pattern (current subscriptions)");
  for (const auto& [pattern, n] : by_pattern)
    t.value("sagebus_subscription_dropped_total", label("pattern", pattern), n.second);
}

void queues(Text& t, const LegacyQueues& queues) {
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    std::uint64_t (*get)(const LegacyQueues::Queue&);
  };
  const Family families[] = {
      {"sagebus_queue_depth", "gauge", "Items waiting in a legacy queue",
       [](const LegacyQueues::Queue& q) { return std::uint64_t{q.items.size()}; }},
      {"sagebus_queue_puts_total", "counter", "Items put on a legacy queue",
       [](const LegacyQueues::Queue& q) { return q.puts; }},
      {"sagebus_queue_gets_total", "counter", "Items handed to readers of a legacy queue",
       [](const LegacyQueues::Queue& q) { return q.gets; }},
      {"sagebus_queue_redeliveries_total", "counter",
       "Items put back on a legacy queue: their reader left, or gave them back, unacknowledged",
       [](const LegacyQueues::Queue& q) { return q.redeliveries; }},
      {"sagebus_queue_expired_total", "counter",
       "Items removed from a legacy queue because their TTL passed before a get",
       [](const LegacyQueues::Queue& q) { return q.expired; }},
  };
  for (const auto& f : families) {
    t.family(f.name, f.type, f.help);
    std::size_t n = 0;
    for (const auto& [name, q] : queues.queues()) {
      if (++n > kMaxSeries) break;
      t.value(f.name, label("queue", name), f.get(q));
    }
  }
}

void store(Text& t, const StoreStats& s) {
  t.family("sagebus_store_bytes", "gauge", "The durable store's database and WAL on disk");
  t.value("sagebus_store_bytes", "", s.bytes);
  t.family("sagebus_store_available", "gauge", "1 while the store's last write succeeded");
  t.value("sagebus_store_available", "", std::uint64_t{s.available ? 1u : 0u});
  t.family("sagebus_store_commits_total", "counter",
           "Transactions committed and synced (each an fsync of the WAL)");
  t.value("sagebus_store_commits_total", "", s.commits);
  t.family("sagebus_store_failed_commits_total", "counter",
           "Transactions that failed (disk full, I/O error) and were rolled back");
  t.value("sagebus_store_failed_commits_total", "", s.failed_commits);
  t.family("sagebus_store_writes_total", "counter",
           "Writes committed: one per put, handing-out, acknowledgement, removal or definition");
  t.value("sagebus_store_writes_total", "", s.writes);
  t.family("sagebus_store_commit_seconds", "histogram",
           "Time from a transaction's start to its synced commit");
  for (std::size_t i = 0; i < std::size(StoreStats::kCommitBucketsUs); ++i)
    t.value("sagebus_store_commit_seconds_bucket",
            label("le", std::to_string(static_cast<double>(StoreStats::kCommitBucketsUs[i]) / 1e6)),
            s.commit_buckets[i]);
  t.value("sagebus_store_commit_seconds_bucket", label("le", "+Inf"), s.commits);
  t.value("sagebus_store_commit_seconds_sum", "", static_cast<double>(s.commit_us_sum) / 1e6);
  t.value("sagebus_store_commit_seconds_count", "", s.commits);
}

}  // namespace

std::string prometheus_text(const AdminSources& src, bool draining) {
  Text t;
  t.family("sagebus_draining", "gauge", "1 while sage-busd drains before stopping");
  t.value("sagebus_draining", "", std::uint64_t{draining ? 1u : 0u});
  t.family("sagebus_clients_connected", "gauge", "Connections that have said HELLO");
  t.value("sagebus_clients_connected", "", std::uint64_t{src.registry.clients().size()});
  t.family("sagebus_resident_memory_bytes", "gauge", "sage-busd's resident memory");
  t.value("sagebus_resident_memory_bytes", "", resident_bytes());
  counters(t, src.metrics);
  limits(t, src.config, src.metrics);
  denied(t, src.metrics);
  methods(t, src.metrics.methods);
  pubsub(t, src);
  queues(t, src.queues);
  if (src.store != nullptr) store(t, src.store->stats());
  return t.str();
}

}  // namespace sagebus::broker
