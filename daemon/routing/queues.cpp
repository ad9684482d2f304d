#include "routing/queues.hpp"

#include <algorithm>
#include <chrono>

#include "sagebus/wire/topic.hpp"

namespace sagebus::broker {

namespace {

// Shares each frame's buffer (refcounted); copies no bytes.
Frames share(Frames& frames) {
  Frames out(frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i)
    out[i].copy(frames[i]);
  return out;
}

}  // namespace

LegacyQueues::LegacyQueues(QueueLimits limits,
                           std::map<std::string, std::string, std::less<>> topics)
    : limits_(limits), topics_(std::move(topics)) {
  limits_.max_depth = std::max<std::size_t>(limits_.max_depth, 1);
}

void LegacyQueues::set_limits(const QueueLimits& limits) {
  limits_ = limits;
  limits_.max_depth = std::max<std::size_t>(limits_.max_depth, 1);
}

void LegacyQueues::set_topics(std::map<std::string, std::string, std::less<>> topics) {
  topics_ = std::move(topics);
  for (auto& [name, q] : queues_)
    q.topic = topic_for(name);
}

std::string LegacyQueues::topic_for(std::string_view name) const {
  if (auto it = topics_.find(name); it != topics_.end()) return it->second;
  return "legacy." + std::string(name);
}

std::optional<std::string> LegacyQueues::check_name(std::string_view name) const {
  if (auto error = wire::check_topic(name, "queue name")) return error;
  if (auto error = wire::check_topic(topic_for(name), "the queue's topic"))
    return *error + " (queue '" + std::string(name) + "' publishes its items there)";
  return std::nullopt;
}

std::size_t LegacyQueues::size(std::string_view name) const {
  auto it = queues_.find(name);
  return it == queues_.end() ? 0 : it->second.items.size();
}

std::size_t LegacyQueues::unacked(const RoutingId& client) const {
  auto it = taken_by_.find(client);
  return it == taken_by_.end() ? 0 : it->second.size();
}

LegacyQueues::Queue* LegacyQueues::open_(std::string_view name, TimePoint now) {
  auto it = queues_.find(name);
  if (it == queues_.end()) {
    if (queues_.size() >= limits_.max_queues) {
      // Make room by forgetting the idle queue used least recently (a scan, but only
      // when the table is full).
      auto idle = queues_.end();
      for (auto q = queues_.begin(); q != queues_.end(); ++q) {
        const Queue& c = q->second;
        if (!c.items.empty() || !c.readers.empty() || !c.writers.empty() || c.unacked != 0)
          continue;
        if (idle == queues_.end() || c.last_used < idle->second.last_used) idle = q;
      }
      if (idle == queues_.end()) return nullptr;
      queues_.erase(idle);
    }
    it = queues_.try_emplace(std::string(name)).first;
    it->second.name = std::string(name);
    it->second.topic = topic_for(name);
  }
  it->second.last_used = now;
  return &it->second;
}

LegacyQueues::Waiter& LegacyQueues::park_(std::deque<Waiter>& line, const RoutingId& from,
                                          std::uint64_t id, TimePoint now, TimePoint deadline) {
  Waiter& w = line.emplace_back();
  w.seq = next_seq_++;
  w.client = from;
  w.id = id;
  w.since = now;
  w.deadline = deadline;
  return w;
}

void LegacyQueues::append_(Queue& q, Frames item, QueueEffects& fx) {
  fx.publishes.push_back({q.topic, share(item)});
  q.items.push_back(std::move(item));
  ++q.puts;
  ++fx.puts;
  serve_(q, fx);
}

// Hands items to waiting readers, longest waiting first.
void LegacyQueues::serve_(Queue& q, QueueEffects& fx) {
  while (!q.items.empty() && !q.readers.empty()) {
    Waiter reader = std::move(q.readers.front());
    q.readers.pop_front();
    deadlines_.erase({reader.deadline, reader.seq});
    waiting_in_.erase(reader.seq);

    const std::uint64_t tag = next_tag_++;
    Taken& taken = taken_[tag];
    taken.queue = q.name;
    taken.reader = reader.client;
    taken.item = std::move(q.items.front());
    q.items.pop_front();
    taken_by_[reader.client].insert(tag);
    ++q.unacked;
    ++q.gets;
    ++fx.gets;
    fx.answers.push_back({reader.client, reader.id, wire::OK, {}, tag, share(taken.item)});
  }
  admit_(q, fx);
}

// Lets waiting puts in while there is room, oldest first.
void LegacyQueues::admit_(Queue& q, QueueEffects& fx) {
  while (!q.writers.empty() && q.items.size() < limits_.max_depth) {
    Waiter writer = std::move(q.writers.front());
    q.writers.pop_front();
    deadlines_.erase({writer.deadline, writer.seq});
    waiting_in_.erase(writer.seq);
    fx.answers.push_back({writer.client, writer.id, wire::OK, {}, 0, {}});
    append_(q, std::move(writer.payload), fx);  // no reader waits while puts do
  }
}

void LegacyQueues::refuse_new_queue_(const RoutingId& from, std::uint64_t id, std::string_view name,
                                     QueueEffects& fx) const {
  fx.refuse(Limit::max_queues);
  fx.answers.push_back({from,
                        id,
                        wire::OVERLOADED,
                        "the broker holds " + std::to_string(queues_.size()) +
                            " queues, none of them idle; no room for queue '" + std::string(name) +
                            "'",
                        0,
                        {}});
}

void LegacyQueues::put(const RoutingId& from, std::uint64_t id, std::string_view name,
                       Frames payload, TimePoint now, TimePoint deadline, QueueEffects& fx) {
  Queue* q = open_(name, now);
  if (q == nullptr) return refuse_new_queue_(from, id, name, fx);
  // Behind any put already waiting, so that puts stay in order.
  if (q->writers.empty() && q->items.size() < limits_.max_depth) {
    fx.answers.push_back({from, id, wire::OK, {}, 0, {}});
    append_(*q, std::move(payload), fx);
    return;
  }
  if (deadline <= now || q->writers.size() >= limits_.max_waiting) {
    fx.refuse(q->writers.size() >= limits_.max_waiting ? Limit::max_queue_waiters
                                                       : Limit::max_queue_depth);
    fx.answers.push_back({from,
                          id,
                          wire::OVERLOADED,
                          "queue '" + q->name + "' is full (" + std::to_string(q->items.size()) +
                              " items, " + std::to_string(q->writers.size()) + " puts waiting)",
                          0,
                          {}});
    return;
  }
  Waiter& w = park_(q->writers, from, id, now, deadline);
  w.payload = std::move(payload);
  deadlines_.emplace(deadline, w.seq);
  waiting_in_.emplace(w.seq, q->name);
}

void LegacyQueues::get(const RoutingId& from, std::uint64_t id, std::string_view name,
                       std::uint64_t ack_tag, TimePoint now, TimePoint deadline, QueueEffects& fx) {
  if (ack_tag != 0) ack(from, ack_tag);
  Queue* q = open_(name, now);
  if (q == nullptr) return refuse_new_queue_(from, id, name, fx);
  if (unacked(from) >= limits_.max_unacked) {
    fx.refuse(Limit::max_unacked);
    fx.answers.push_back({from,
                          id,
                          wire::OVERLOADED,
                          "this connection holds " + std::to_string(unacked(from)) +
                              " unacknowledged items; acknowledge some first",
                          0,
                          {}});
    return;
  }
  if (q->items.empty() && (deadline <= now || q->readers.size() >= limits_.max_waiting)) {
    if (deadline <= now) {
      fx.answers.push_back(
          {from, id, wire::DEADLINE_EXCEEDED, "queue '" + q->name + "' is empty", 0, {}});
    } else {
      fx.refuse(Limit::max_queue_waiters);
      fx.answers.push_back({from,
                            id,
                            wire::OVERLOADED,
                            "queue '" + q->name + "' has " + std::to_string(q->readers.size()) +
                                " gets waiting already",
                            0,
                            {}});
    }
    return;
  }
  Waiter& w = park_(q->readers, from, id, now, deadline);
  deadlines_.emplace(deadline, w.seq);
  waiting_in_.emplace(w.seq, q->name);
  serve_(*q, fx);  // at once, when the queue has an item
}

void LegacyQueues::erase_taken_(std::uint64_t tag) {
  auto it = taken_.find(tag);
  if (it == taken_.end()) return;
  if (auto q = queues_.find(it->second.queue); q != queues_.end() && q->second.unacked > 0)
    --q->second.unacked;
  if (auto by = taken_by_.find(it->second.reader); by != taken_by_.end()) {
    by->second.erase(tag);
    if (by->second.empty()) taken_by_.erase(by);
  }
  taken_.erase(it);
}

bool LegacyQueues::ack(const RoutingId& from, std::uint64_t tag) {
  auto it = taken_.find(tag);
  if (it == taken_.end() || it->second.reader != from) return false;
  erase_taken_(tag);
  return true;
}

void LegacyQueues::give_back(std::uint64_t tag, QueueEffects& fx) {
  auto it = taken_.find(tag);
  if (it == taken_.end()) return;
  auto q = queues_.find(it->second.queue);
  Frames item = std::move(it->second.item);
  erase_taken_(tag);
  if (q == queues_.end()) return;  // cannot happen: a queue with taken items is kept
  q->second.items.push_front(std::move(item));
  if (q->second.gets > 0) --q->second.gets;  // it was never got after all
  serve_(q->second, fx);
}

void LegacyQueues::remove_client(const RoutingId& client, QueueEffects& fx) {
  for (auto& [name, q] : queues_) {
    for (auto* line : {&q.readers, &q.writers})
      std::erase_if(*line, [&](const Waiter& w) {
        if (w.client != client) return false;
        deadlines_.erase({w.deadline, w.seq});
        waiting_in_.erase(w.seq);
        return true;
      });
  }
  auto by = taken_by_.find(client);
  if (by == taken_by_.end()) return;
  const std::set<std::uint64_t> tags = std::move(by->second);
  taken_by_.erase(by);
  std::vector<std::string> touched;
  // Latest taken first, each to the front: the earliest ends up at the head.
  for (auto tag = tags.rbegin(); tag != tags.rend(); ++tag) {
    auto it = taken_.find(*tag);
    if (it == taken_.end()) continue;
    auto q = queues_.find(it->second.queue);
    if (q != queues_.end()) {
      q->second.items.push_front(std::move(it->second.item));
      if (q->second.unacked > 0) --q->second.unacked;
      ++q->second.redeliveries;
      ++fx.redeliveries;
      touched.push_back(q->first);
    }
    taken_.erase(it);
  }
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (const auto& name : touched)
    serve_(queues_.find(name)->second, fx);
}

std::optional<TimePoint> LegacyQueues::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

void LegacyQueues::expire(TimePoint now, QueueEffects& fx) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const std::uint64_t seq = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto where = waiting_in_.find(seq);
    if (where == waiting_in_.end()) continue;
    auto q = queues_.find(where->second);
    waiting_in_.erase(where);
    if (q == queues_.end()) continue;
    Queue& queue = q->second;
    auto is_it = [&](const Waiter& w) { return w.seq == seq; };
    if (auto r = std::find_if(queue.readers.begin(), queue.readers.end(), is_it);
        r != queue.readers.end()) {
      fx.answers.push_back({r->client,
                            r->id,
                            wire::DEADLINE_EXCEEDED,
                            "queue '" + queue.name + "' stayed empty for " +
                                std::to_string(millis_between(r->since, now)) + " ms",
                            0,
                            {}});
      queue.readers.erase(r);
    } else if (auto w = std::find_if(queue.writers.begin(), queue.writers.end(), is_it);
               w != queue.writers.end()) {
      fx.refuse(Limit::max_queue_depth);
      fx.answers.push_back({w->client,
                            w->id,
                            wire::OVERLOADED,
                            "queue '" + queue.name + "' stayed full (" +
                                std::to_string(queue.items.size()) + " items) for " +
                                std::to_string(millis_between(w->since, now)) + " ms",
                            0,
                            {}});
      queue.writers.erase(w);
    }
  }
}

}  // namespace sagebus::broker
