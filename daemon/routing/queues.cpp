#include "routing/queues.hpp"

#include <algorithm>
#include <chrono>
#include <random>

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

std::uint64_t payload_bytes(const Frames& frames) {
  std::uint64_t n = 0;
  for (const auto& f : frames)
    n += f.size();
  return n;
}

// Takes an item that is gone for good off its queue's byte count.
void drop_bytes(LegacyQueues::Queue& q, const Frames& payload) {
  q.bytes -= std::min(q.bytes, payload_bytes(payload));
}

StoreWrite write_of(StoreWrite::Op op, std::uint64_t seq, std::uint32_t deliveries = 0) {
  StoreWrite w;
  w.op = op;
  w.seq = seq;
  w.deliveries = deliveries;
  return w;
}

// A queue's definition (define, undefine) for the store.
StoreWrite definition_of(StoreWrite::Op op, std::string_view queue, bool transient = false) {
  StoreWrite w = write_of(op, 0);
  w.queue = std::string(queue);
  w.transient = transient;
  return w;
}

}  // namespace

LegacyQueues::LegacyQueues(QueueLimits limits,
                           std::map<std::string, std::string, std::less<>> topics)
    : limits_(limits), topics_(std::move(topics)) {
  limits_.max_depth = std::max<std::size_t>(limits_.max_depth, 1);
  std::random_device random;
  next_tag_ = ((static_cast<std::uint64_t>(random()) << 20) | 1) & ((1ull << 52) - 1);
}

LegacyQueues::Queue& LegacyQueues::add_queue_(std::string_view name, bool durable, TimePoint now) {
  Queue& q = queues_.try_emplace(std::string(name)).first->second;
  q.name = std::string(name);
  q.topic = topic_for(name);
  q.durable = durable;
  q.last_used = now;
  return q;
}

void LegacyQueues::restore(Recovery& recovery, TimePoint now) {
  for (const auto& sq : recovery.queues)
    add_queue_(sq.name, !sq.transient, now).declared = sq.transient;
  for (auto& item : recovery.items) {
    auto it = queues_.find(item.queue);
    Queue& q = it != queues_.end() ? it->second : add_queue_(item.queue, true, now);
    q.bytes += payload_bytes(item.payload);
    // A TTL holds until the item is first taken.
    expire_at_(q,
               q.items.emplace_back(Item{item.seq, item.deliveries, std::move(item.payload),
                                         item.deliveries == 0 ? item.expires : TimePoint::max()}));
  }
  next_item_seq_ = std::max(next_item_seq_, recovery.max_seq + 1);
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

LegacyQueues::Queue* LegacyQueues::open_(std::string_view name, TimePoint now, QueueEffects& fx) {
  auto it = queues_.find(name);
  if (it == queues_.end()) {
    if (queues_.size() >= limits_.max_queues) {
      // Make room by forgetting the idle queue used least recently (a scan, but only
      // when the table is full). A declared queue stays: its declaration is kept.
      auto idle = queues_.end();
      for (auto q = queues_.begin(); q != queues_.end(); ++q) {
        const Queue& c = q->second;
        if (c.declared || !c.items.empty() || c.staged != 0 || !c.readers.empty() ||
            !c.writers.empty() || c.unacked != 0)
          continue;
        if (idle == queues_.end() || c.last_used < idle->second.last_used) idle = q;
      }
      if (idle == queues_.end()) return nullptr;
      if (idle->second.durable)
        fx.writes.push_back(definition_of(StoreWrite::Op::undefine, idle->first));
      queues_.erase(idle);
    }
    Queue& q = add_queue_(name, durable_default_, now);
    if (q.durable) fx.writes.push_back(definition_of(StoreWrite::Op::define, name));
    return &q;
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

void LegacyQueues::accept_(Queue& q, const RoutingId& from, std::uint64_t id, Frames payload,
                           TimePoint expires, QueueEffects& fx) {
  const std::uint64_t seq = next_item_seq_++;
  if (!q.durable) {
    fx.answers.push_back({from, id, wire::OK, {}, 0, 0, {}});
    append_(q, {seq, 0, std::move(payload), expires}, fx);
    return;
  }
  StoreWrite w = write_of(StoreWrite::Op::put, seq);
  w.queue = q.name;
  w.expires = expires;
  w.payload = share(payload);
  fx.writes.push_back(std::move(w));
  fx.staged.push_back(seq);
  staged_.emplace(seq, Staged{q.name, from, id, std::move(payload), expires});
  ++q.staged;
}

void LegacyQueues::append_(Queue& q, Item item, QueueEffects& fx) {
  fx.publishes.push_back({q.topic, share(item.payload)});
  q.bytes += payload_bytes(item.payload);
  expire_at_(q, item);
  q.items.push_back(std::move(item));
  ++q.puts;
  ++fx.puts;
  serve_(q, fx);
}

void LegacyQueues::expire_at_(const Queue& q, const Item& item) {
  if (item.expires == TimePoint::max()) return;
  expiries_.emplace(item.expires, item.seq);
  expiring_in_.emplace(item.seq, q.name);
}

void LegacyQueues::unexpire_(const Item& item) {
  if (item.expires == TimePoint::max()) return;
  expiries_.erase({item.expires, item.seq});
  expiring_in_.erase(item.seq);
}

void LegacyQueues::put_back_(Queue& q, Item item) {
  auto at = std::upper_bound(q.items.begin(), q.items.end(), item.seq,
                             [](std::uint64_t seq, const Item& i) { return seq < i.seq; });
  q.items.insert(at, std::move(item));
}

void LegacyQueues::redeliver_(Queue& q, Item item, QueueEffects& fx) {
  // Its handing-out is stored already: the next reader is told it is redelivered.
  put_back_(q, std::move(item));
  ++q.redeliveries;
  ++fx.redeliveries;
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
    Item& item = taken.item;
    unexpire_(item);
    item.expires = TimePoint::max();  // taken: kept until acknowledged
    ++item.deliveries;
    if (q.durable) fx.writes.push_back(write_of(StoreWrite::Op::lease, item.seq, item.deliveries));
    taken_by_[reader.client].insert(tag);
    ++q.unacked;
    ++q.gets;
    ++fx.gets;
    fx.answers.push_back(
        {reader.client, reader.id, wire::OK, {}, tag, item.deliveries, share(item.payload)});
  }
  admit_(q, fx);
}

// Lets waiting puts in while there is room, oldest first.
void LegacyQueues::admit_(Queue& q, QueueEffects& fx) {
  while (!q.writers.empty() && depth_(q) < limits_.max_depth) {
    Waiter writer = std::move(q.writers.front());
    q.writers.pop_front();
    deadlines_.erase({writer.deadline, writer.seq});
    waiting_in_.erase(writer.seq);
    accept_(q, writer.client, writer.id, std::move(writer.payload), writer.expires, fx);
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
                        0,
                        {}});
}

void LegacyQueues::put(const RoutingId& from, std::uint64_t id, std::string_view name,
                       Frames payload, TimePoint now, TimePoint deadline, QueueEffects& fx,
                       std::chrono::milliseconds ttl) {
  Queue* q = open_(name, now, fx);
  if (q == nullptr) return refuse_new_queue_(from, id, name, fx);
  const TimePoint expires = ttl.count() > 0 ? now + ttl : TimePoint::max();
  // Behind any put already waiting, so that puts stay in order.
  if (q->writers.empty() && depth_(*q) < limits_.max_depth) {
    accept_(*q, from, id, std::move(payload), expires, fx);
    return;
  }
  if (deadline <= now || q->writers.size() >= limits_.max_waiting) {
    fx.refuse(q->writers.size() >= limits_.max_waiting ? Limit::max_queue_waiters
                                                       : Limit::max_queue_depth);
    fx.answers.push_back({from,
                          id,
                          wire::OVERLOADED,
                          "queue '" + q->name + "' is full (" + std::to_string(depth_(*q)) +
                              " items, " + std::to_string(q->writers.size()) + " puts waiting)",
                          0,
                          0,
                          {}});
    return;
  }
  Waiter& w = park_(q->writers, from, id, now, deadline);
  w.payload = std::move(payload);
  w.expires = expires;
  deadlines_.emplace(deadline, w.seq);
  waiting_in_.emplace(w.seq, q->name);
}

void LegacyQueues::get(const RoutingId& from, std::uint64_t id, std::string_view name,
                       std::uint64_t ack_tag, TimePoint now, TimePoint deadline, QueueEffects& fx) {
  if (ack_tag != 0) ack(from, ack_tag, fx);
  Queue* q = open_(name, now, fx);
  if (q == nullptr) return refuse_new_queue_(from, id, name, fx);
  if (unacked(from) >= limits_.max_unacked) {
    fx.refuse(Limit::max_unacked);
    fx.answers.push_back({from,
                          id,
                          wire::OVERLOADED,
                          "this connection holds " + std::to_string(unacked(from)) +
                              " unacknowledged items; acknowledge some first",
                          0,
                          0,
                          {}});
    return;
  }
  if (q->items.empty() && (deadline <= now || q->readers.size() >= limits_.max_waiting)) {
    if (deadline <= now) {
      fx.answers.push_back(
          {from, id, wire::DEADLINE_EXCEEDED, "queue '" + q->name + "' is empty", 0, 0, {}});
    } else {
      fx.refuse(Limit::max_queue_waiters);
      fx.answers.push_back({from,
                            id,
                            wire::OVERLOADED,
                            "queue '" + q->name + "' has " + std::to_string(q->readers.size()) +
                                " gets waiting already",
                            0,
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

void LegacyQueues::declare(const RoutingId& from, std::uint64_t id, std::string_view name,
                           bool transient, TimePoint now, QueueEffects& fx) {
  if (!transient && !durable_default_) {
    fx.answers.push_back({from,
                          id,
                          wire::UNAVAILABLE,
                          "queue '" + std::string(name) +
                              "' cannot be durable: the broker runs without a store (sage-busd "
                              "--store PATH)",
                          0,
                          0,
                          {}});
    return;
  }
  Queue* q = open_(name, now, fx);
  if (q == nullptr) return refuse_new_queue_(from, id, name, fx);
  if (q->durable == !transient) {
    q->declared = true;
    fx.answers.push_back({from, id, wire::OK, {}, 0, 0, {}});
    return;
  }
  if (q->durable && (!q->items.empty() || q->staged != 0 || q->unacked != 0)) {
    fx.answers.push_back(
        {from,
         id,
         wire::INVALID_ARGUMENT,
         "queue '" + q->name + "' is durable and holds " +
             std::to_string(q->items.size() + q->staged + q->unacked) +
             " items; it can be declared transient only when empty (busctl queue purge " + q->name +
             ")",
         0,
         0,
         {}});
    return;
  }
  // A transient queue's items, in memory, may stay in memory: only new ones are stored.
  q->durable = !transient;
  q->declared = true;
  fx.writes.push_back(definition_of(StoreWrite::Op::define, q->name, transient));
  fx.answers.push_back({from, id, wire::OK, {}, 0, 0, {}});
}

void LegacyQueues::committed(const std::vector<std::uint64_t>& seqs, QueueEffects& fx) {
  for (const std::uint64_t seq : seqs) {
    auto it = staged_.find(seq);
    if (it == staged_.end()) continue;
    Staged staged = std::move(it->second);
    staged_.erase(it);
    auto q = queues_.find(staged.queue);
    if (q == queues_.end()) continue;  // cannot happen: a queue with staged puts is kept
    --q->second.staged;
    if (!staged.putter.empty())
      fx.answers.push_back({staged.putter, staged.id, wire::OK, {}, 0, 0, {}, 0, true});
    append_(q->second, {seq, 0, std::move(staged.payload), staged.expires}, fx);
  }
}

void LegacyQueues::abandoned(const std::vector<std::uint64_t>& seqs, const std::string& error,
                             QueueEffects& fx) {
  std::vector<std::string> freed;
  for (const std::uint64_t seq : seqs) {
    auto it = staged_.find(seq);
    if (it == staged_.end()) continue;
    auto q = queues_.find(it->second.queue);
    if (q != queues_.end()) {
      --q->second.staged;
      freed.push_back(q->first);
    }
    if (!it->second.putter.empty())
      fx.answers.push_back({it->second.putter,
                            it->second.id,
                            wire::UNAVAILABLE,
                            "not stored: " + error,
                            0,
                            0,
                            {},
                            0,
                            true});
    staged_.erase(it);
  }
  serve_each_(freed, fx);  // their room goes to waiting puts
}

std::size_t LegacyQueues::purge(std::string_view name, QueueEffects& fx) {
  auto it = queues_.find(name);
  if (it == queues_.end()) return 0;
  Queue& q = it->second;
  const std::size_t n = q.items.size();
  for (auto& item : q.items) {
    unexpire_(item);
    drop_bytes(q, item.payload);
    if (q.durable) fx.writes.push_back(write_of(StoreWrite::Op::remove, item.seq));
  }
  q.items.clear();
  admit_(q, fx);
  return n;
}

std::vector<LegacyQueues::Item> LegacyQueues::peek(std::string_view name, std::size_t count) const {
  std::vector<Item> out;
  auto it = queues_.find(name);
  if (it == queues_.end()) return out;
  for (const auto& item : it->second.items) {
    if (out.size() >= count) break;
    // Shared copies: zmq::message_t::copy takes its source by non-const reference, but
    // only adds a reference to its buffer.
    out.push_back({item.seq, item.deliveries, share(const_cast<Frames&>(item.payload))});
  }
  return out;
}

void LegacyQueues::erase_taken_(std::uint64_t tag, QueueEffects* fx) {
  auto it = taken_.find(tag);
  if (it == taken_.end()) return;
  if (auto q = queues_.find(it->second.queue); q != queues_.end()) {
    Queue& queue = q->second;
    if (queue.unacked > 0) --queue.unacked;
    if (fx != nullptr) {  // gone for good: acknowledged
      drop_bytes(queue, it->second.item.payload);
      if (queue.durable)
        fx->writes.push_back(write_of(StoreWrite::Op::remove, it->second.item.seq));
    }
  }
  if (auto by = taken_by_.find(it->second.reader); by != taken_by_.end()) {
    by->second.erase(tag);
    if (by->second.empty()) taken_by_.erase(by);
  }
  taken_.erase(it);
}

bool LegacyQueues::ack(const RoutingId& from, std::uint64_t tag, QueueEffects& fx) {
  auto it = taken_.find(tag);
  if (it == taken_.end() || it->second.reader != from) return false;
  erase_taken_(tag, &fx);
  return true;
}

bool LegacyQueues::nack(const RoutingId& from, std::uint64_t tag, QueueEffects& fx) {
  auto it = taken_.find(tag);
  if (it == taken_.end() || it->second.reader != from) return false;
  auto q = queues_.find(it->second.queue);
  Item item = std::move(it->second.item);
  erase_taken_(tag, nullptr);
  if (q == queues_.end()) return true;  // cannot happen: a queue with taken items is kept
  redeliver_(q->second, std::move(item), fx);
  serve_(q->second, fx);
  return true;
}

void LegacyQueues::give_back(std::uint64_t tag, QueueEffects& fx) {
  auto it = taken_.find(tag);
  if (it == taken_.end()) return;
  auto q = queues_.find(it->second.queue);
  Item item = std::move(it->second.item);
  erase_taken_(tag, nullptr);
  if (q == queues_.end()) return;  // cannot happen: a queue with taken items is kept
  // Nobody saw it: its handing-out is undone, in the store too.
  if (item.deliveries > 0) --item.deliveries;
  if (q->second.durable)
    fx.writes.push_back(write_of(StoreWrite::Op::lease, item.seq, item.deliveries));
  put_back_(q->second, std::move(item));
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
  // Its staged puts are still stored; nobody is told.
  for (auto& [seq, staged] : staged_)
    if (staged.putter == client) staged.putter.clear();
  auto by = taken_by_.find(client);
  if (by == taken_by_.end()) return;
  const std::set<std::uint64_t> tags = std::move(by->second);
  taken_by_.erase(by);
  std::vector<std::string> touched;
  for (const std::uint64_t tag : tags) {
    auto it = taken_.find(tag);
    if (it == taken_.end()) continue;
    auto q = queues_.find(it->second.queue);
    if (q != queues_.end()) {
      redeliver_(q->second, std::move(it->second.item), fx);
      if (q->second.unacked > 0) --q->second.unacked;
      touched.push_back(q->first);
    }
    taken_.erase(it);
  }
  serve_each_(touched, fx);
}

void LegacyQueues::serve_each_(std::vector<std::string>& names, QueueEffects& fx) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (const auto& name : names)
    serve_(queues_.find(name)->second, fx);
}

std::optional<TimePoint> LegacyQueues::next_deadline() const {
  std::optional<TimePoint> next;
  if (!deadlines_.empty()) next = deadlines_.begin()->first;
  if (!expiries_.empty() && (!next || expiries_.begin()->first < *next))
    next = expiries_.begin()->first;
  return next;
}

void LegacyQueues::expire(TimePoint now, QueueEffects& fx) {
  std::vector<std::string> freed;
  while (!expiries_.empty() && expiries_.begin()->first <= now) {
    const std::uint64_t seq = expiries_.begin()->second;
    expiries_.erase(expiries_.begin());
    auto where = expiring_in_.find(seq);
    if (where == expiring_in_.end()) continue;
    auto q = queues_.find(where->second);
    expiring_in_.erase(where);
    if (q == queues_.end()) continue;
    Queue& queue = q->second;
    auto item = std::lower_bound(queue.items.begin(), queue.items.end(), seq,
                                 [](const Item& i, std::uint64_t s) { return i.seq < s; });
    if (item == queue.items.end() || item->seq != seq) continue;
    drop_bytes(queue, item->payload);
    if (queue.durable) fx.writes.push_back(write_of(StoreWrite::Op::remove, seq));
    queue.items.erase(item);
    ++queue.expired;
    freed.push_back(queue.name);
  }
  serve_each_(freed, fx);  // their room goes to waiting puts

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
                            0,
                            {}});
      queue.writers.erase(w);
    }
  }
}

}  // namespace sagebus::broker
