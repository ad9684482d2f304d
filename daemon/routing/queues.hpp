// LegacyQueues: the named FIFOs of the legacy-queue adapter (docs/protocol.md, "Legacy
// queues"). Pure bookkeeping: no sockets, no disk, and the clock is passed in, so every
// rule is unit-testable.
//
// A queue is created by its first put, get or declaration. Items hold their payload
// frames (moved in, never copied) and a sequence number of the broker's: a queue is
// always in sequence order. A get takes the head and the item moves to the reader's
// connection's unacknowledged set under a fresh delivery tag until acknowledged; if that
// connection is removed first, its items go back to their places in their queues and
// are redelivered, marked so. An empty queue parks gets (FIFO) until an item comes or
// their deadline; a full one parks puts (FIFO, with their payload) until there is room or
// their deadline. Every item appended is also to be published on the queue's topic.
//
// Durable queues (set_durable_default(true): the broker has a store; a queue declared
// transient is not) record every change as a StoreWrite in the QueueEffects: a put, a
// handing-out (lease, with the delivery count), a removal (ack, purge), a definition.
// A put to a durable queue is staged, not appended: it counts towards the depth, and only
// committed() appends it and answers its putter OK (abandoned() answers UNAVAILABLE and
// drops it), so an item is handed out only once it is stored. The broker sends the
// answers of an effects list that has writes only once those writes are committed.
//
// Nothing is sent from here: each operation appends to a QueueEffects what the broker
// must do — answers (REPLYs) owed to clients, publishes, writes — and counts what
// happened. Answers, publishes and writes carry shared copies of the item's frames
// (refcounted; no bytes copied), so they stay valid whatever the table does next.
//
// Everything is bounded: queues (an idle one that was not declared is evicted for a new
// one when the table is full), depth (puts wait beyond it), waiting gets and puts per
// queue, and unacknowledged items per connection. Items put back after their reader left
// may briefly take a queue past its depth; puts wait until it is below again.
//
// Used by the broker's loop thread only; not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "operations/limits.hpp"
#include "routing/pending.hpp"
#include "sagebus/wire.pb.h"
#include "store/store.hpp"

namespace sagebus::broker {

struct QueueLimits {
  std::size_t max_depth = 10000;    // items per queue before puts wait
  std::size_t max_queues = 10000;   // queues in the table
  std::size_t max_waiting = 10000;  // waiting gets, and waiting puts, per queue
  std::size_t max_unacked = 10000;  // unacknowledged items per connection
};

// A REPLY the broker owes: to the request that just came, or to one that waited.
struct QueueAnswer {
  RoutingId to;
  std::uint64_t id = 0;  // the request's own id
  wire::Status status = wire::OK;
  std::string message;
  std::uint64_t tag = 0;         // OK to a get: the item's delivery tag
  std::uint32_t deliveries = 0;  // OK to a get: times handed out, this one included
  Frames payload;                // OK to a get: the item (shared copies)
  std::uint64_t count = 0;       // OK to a purge: items removed
  // True when nothing this answer says waits for a store write (a put's OK sent once it
  // is committed): it goes at once, whatever the writes of its effects list.
  bool now = false;
};

struct QueuePublish {
  std::string topic;
  Frames payload;  // shared copies
};

struct QueueEffects {
  std::vector<QueueAnswer> answers;
  std::vector<QueuePublish> publishes;
  std::vector<StoreWrite> writes;     // for the store, in order
  std::vector<std::uint64_t> staged;  // puts staged: committed() or abandoned() settles them
  std::uint64_t puts = 0;             // items appended
  std::uint64_t gets = 0;             // items handed to readers
  std::uint64_t redeliveries = 0;     // items put back: their reader left, or gave them back
  std::uint64_t expired = 0;          // items removed because their TTL passed
  // Answers OVERLOADED, by the limit that refused them.
  std::array<std::uint64_t, kLimitCount> refused{};

  void refuse(Limit limit) noexcept { ++refused[static_cast<std::size_t>(limit)]; }
  bool empty() const noexcept {
    return answers.empty() && publishes.empty() && writes.empty() && staged.empty();
  }
};

class LegacyQueues {
 public:
  struct Item {
    std::uint64_t seq = 0;
    std::uint32_t deliveries = 0;  // times handed out so far
    Frames payload;
    // Removed if not taken by then (a put's ttl_ms); once taken, it is kept until acknowledged.
    TimePoint expires = TimePoint::max();
  };
  struct Waiter {
    std::uint64_t seq = 0;  // identifies it in the deadline index
    RoutingId client;
    std::uint64_t id = 0;  // the request's id
    TimePoint since{};
    TimePoint deadline{};
    Frames payload;                        // a waiting put's item
    TimePoint expires = TimePoint::max();  // a waiting put's item's
  };
  struct Queue {
    std::string name;
    std::string topic;
    bool durable = false;        // its items are stored
    bool declared = false;       // by QUEUE_DECLARE: kept when idle
    std::deque<Item> items;      // ascending seq
    std::size_t staged = 0;      // puts being stored
    std::uint64_t bytes = 0;     // payload bytes of its items, taken ones included
    std::deque<Waiter> readers;  // gets waiting for an item, oldest first
    std::deque<Waiter> writers;  // puts waiting for room, oldest first
    std::size_t unacked = 0;
    std::uint64_t puts = 0;
    std::uint64_t gets = 0;
    std::uint64_t redeliveries = 0;
    std::uint64_t expired = 0;
    TimePoint last_used{};
  };

  // `topics` maps queue names to topics; other queues publish on "legacy.<name>".
  LegacyQueues(QueueLimits limits, std::map<std::string, std::string, std::less<>> topics);

  // Queues not declared otherwise are durable (the broker has a store).
  void set_durable_default(bool durable) noexcept { durable_default_ = durable; }
  bool durable_default() const noexcept { return durable_default_; }
  // Loads what the store read back (before any other use), taking its payloads.
  void restore(Recovery& recovery, TimePoint now);

  // The error text for a queue name the broker refuses, or nothing. A name must be a
  // valid topic, and so must the topic it maps to.
  std::optional<std::string> check_name(std::string_view name) const;
  std::string topic_for(std::string_view name) const;

  // QUEUE_PUT: appends `payload`, or parks the put until `deadline` when the queue is
  // full (answered at once when `deadline` <= `now`). `name` must pass check_name. With
  // `ttl` > 0 the item is removed if nobody takes it within `ttl` of `now`.
  void put(const RoutingId& from, std::uint64_t id, std::string_view name, Frames payload,
           TimePoint now, TimePoint deadline, QueueEffects& fx,
           std::chrono::milliseconds ttl = std::chrono::milliseconds(0));
  // QUEUE_GET: acknowledges `ack_tag` (if it is `from`'s), then takes the head, or parks
  // the get until `deadline` when the queue is empty.
  void get(const RoutingId& from, std::uint64_t id, std::string_view name, std::uint64_t ack_tag,
           TimePoint now, TimePoint deadline, QueueEffects& fx);
  // QUEUE_ACK: returns whether `tag` was an item `from` held (and is now gone).
  bool ack(const RoutingId& from, std::uint64_t tag, QueueEffects& fx);
  // QUEUE_NACK: item `tag`, if `from` holds it, goes back to its place in its queue now,
  // to be redelivered; returns whether it did.
  bool nack(const RoutingId& from, std::uint64_t tag, QueueEffects& fx);
  // QUEUE_DECLARE: the queue is transient (memory only) or durable. Answers OK, or
  // UNAVAILABLE (durable without a store), or INVALID_ARGUMENT (a durable queue that holds
  // items cannot become transient).
  void declare(const RoutingId& from, std::uint64_t id, std::string_view name, bool transient,
               TimePoint now, QueueEffects& fx);
  // The store committed, or failed to store, staged puts `seqs`: appends them and answers
  // OK, or drops them and answers UNAVAILABLE with `error`.
  void committed(const std::vector<std::uint64_t>& seqs, QueueEffects& fx);
  void abandoned(const std::vector<std::uint64_t>& seqs, const std::string& error,
                 QueueEffects& fx);
  // Removes the items of queue `name` that are not taken; returns how many.
  std::size_t purge(std::string_view name, QueueEffects& fx);
  // Shared copies of the first `count` items of queue `name` (not taken ones).
  std::vector<Item> peek(std::string_view name, std::size_t count) const;
  // QUEUE_SIZE: items in the queue, not counting taken ones (0 for an unknown queue).
  std::size_t size(std::string_view name) const;

  // The answer handing item `tag` over could not be sent: the item goes back to the
  // front of its queue, uncounted as a get of the queue (the caller uncounts its own
  // total) and not counted as a redelivery: nobody saw it.
  void give_back(std::uint64_t tag, QueueEffects& fx);
  // A connection is gone: forgets its waiting gets and puts, and puts the items it held
  // back at the front of their queues, in the order it took them.
  void remove_client(const RoutingId& client, QueueEffects& fx);

  std::optional<TimePoint> next_deadline() const;
  // Answers the waiters whose deadline is at or before `now` (gets DEADLINE_EXCEEDED, puts
  // OVERLOADED), and removes the items whose TTL passed.
  void expire(TimePoint now, QueueEffects& fx);

  const std::map<std::string, Queue, std::less<>>& queues() const noexcept { return queues_; }
  const QueueLimits& limits() const noexcept { return limits_; }
  // New limits apply to what comes next: items already queued beyond a lower depth stay
  // (puts wait until it is below), and no queue is forgotten for a lower max_queues.
  void set_limits(const QueueLimits& limits);
  // New mapping; existing queues publish their next items on their new topic.
  void set_topics(std::map<std::string, std::string, std::less<>> topics);
  std::size_t unacked(const RoutingId& client) const;

 private:
  struct Taken {
    std::string queue;
    RoutingId reader;
    Item item;
  };
  struct Staged {
    std::string queue;
    RoutingId putter;  // empty: nobody to answer
    std::uint64_t id = 0;
    Frames payload;
    TimePoint expires = TimePoint::max();
  };

  Queue* open_(std::string_view name, TimePoint now, QueueEffects& fx);
  // A new queue in the table (open_'s and restore's).
  Queue& add_queue_(std::string_view name, bool durable, TimePoint now);
  // Answers OVERLOADED: open_ found no room for another queue.
  void refuse_new_queue_(const RoutingId& from, std::uint64_t id, std::string_view name,
                         QueueEffects& fx) const;
  // An accepted put: appended (transient) or staged (durable), answered OK now or then.
  void accept_(Queue& q, const RoutingId& from, std::uint64_t id, Frames payload, TimePoint expires,
               QueueEffects& fx);
  void append_(Queue& q, Item item, QueueEffects& fx);
  // An item back at its place (by seq) in its queue.
  static void put_back_(Queue& q, Item item);
  // An item its reader gave back or left with, back in its place, counted as redelivered.
  static void redeliver_(Queue& q, Item item, QueueEffects& fx);
  // Serves each queue named once (and so lets waiting puts into the room there is).
  void serve_each_(std::vector<std::string>& names, QueueEffects& fx);
  // Indexes an item in its queue by its TTL; forgets it (taken, purged, expired).
  void expire_at_(const Queue& q, const Item& item);
  void unexpire_(const Item& item);
  std::size_t depth_(const Queue& q) const noexcept { return q.items.size() + q.staged; }
  void serve_(Queue& q, QueueEffects& fx);
  void admit_(Queue& q, QueueEffects& fx);
  // Forgets taken item `tag`; with `fx`, it is gone for good (acknowledged): removed from
  // the store too.
  void erase_taken_(std::uint64_t tag, QueueEffects* fx);
  Waiter& park_(std::deque<Waiter>& line, const RoutingId& from, std::uint64_t id, TimePoint now,
                TimePoint deadline);

  QueueLimits limits_;
  bool durable_default_ = false;
  std::map<std::string, std::string, std::less<>> topics_;
  std::map<std::string, Queue, std::less<>> queues_;
  // Tags start at a random number, so that a tag from before a restart names nothing.
  std::uint64_t next_tag_;
  std::uint64_t next_seq_ = 1;       // waiters
  std::uint64_t next_item_seq_ = 1;  // items, above every stored one
  std::unordered_map<std::uint64_t, Staged> staged_;
  // Items in their queues with a TTL, by expiry, and the queue each is in.
  std::set<std::pair<TimePoint, std::uint64_t>> expiries_;
  std::unordered_map<std::uint64_t, std::string> expiring_in_;
  std::unordered_map<std::uint64_t, Taken> taken_;
  // Tags held per connection; ascending tags are the order the items were taken in.
  std::unordered_map<RoutingId, std::set<std::uint64_t>> taken_by_;
  // Waiters by deadline, and the queue each waits in.
  std::set<std::pair<TimePoint, std::uint64_t>> deadlines_;
  std::unordered_map<std::uint64_t, std::string> waiting_in_;
};

}  // namespace sagebus::broker
