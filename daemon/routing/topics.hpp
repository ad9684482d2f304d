// Topics: the broker's subscription table and its per-topic publish counts. Pure
// bookkeeping: no sockets, no clock, so matching and flow-control accounting are
// unit-testable.
//
// SubscriptionTable holds every subscription, known by (connection, subscription id),
// where the id is the SUBSCRIBE's id. Matching a publish topic walks a token trie built
// from the patterns: one node per pattern prefix, with a separate child for '*' and, at
// each node, the subscriptions whose pattern ends there or continues with '>'. A publish
// of n tokens visits only the nodes its tokens can reach (at most two children per level,
// exact and '*'), so its cost depends on the topic and on how many subscriptions match,
// not on how many subscriptions exist: a linear scan would test every pattern on every
// publish, and publishes vastly outnumber subscribes. Each subscription sits in exactly
// one trie node, and the walk visits a node at most once, so it is matched at most once.
//
// Flow control (docs/protocol.md, "Publish-subscribe") is accounted per Subscription:
// credit is spent by each EVENT sent; an event it misses (no credit, its connection's
// queue full) counts as dropped and into the gap that the next EVENT reports. An event
// put in an EVENT_BATCH (loop/event_batches.hpp) spends its credit and takes the gap at once,
// and counts as delivered or dropped when its batch is sent or refused.
//
// Pointers to Subscriptions are valid until that subscription is removed (replacing it
// keeps it). Used by the broker's loop thread only; not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "routing/pending.hpp"

namespace sagebus::broker {

class EventBatch;

struct Subscription {
  // SUBSCRIBE.credit 0 means this many.
  static constexpr std::uint32_t kDefaultCredit = 1024;
  // CREDIT adds up to this; a subscriber that returns more gains nothing.
  static constexpr std::uint32_t kMaxCredit = 1'000'000;

  RoutingId client;
  std::uint64_t id = 0;
  std::string pattern;
  std::uint32_t credit = 0;  // events it may still be sent
  std::uint64_t delivered = 0;
  std::uint64_t dropped = 0;  // events it missed, in all
  std::uint64_t gap = 0;      // events it missed since the last EVENT it was sent
  // Its connection's HELLO set event_batches.
  bool reads_batches = false;
  // The EVENT_BATCH of its connection in the current round of EventBatches, when
  // batch_round is that round (loop/event_batches.hpp).
  EventBatch* batch = nullptr;
  std::uint64_t batch_round = 0;

  // An EVENT carrying `gap` was sent: spends one credit and clears the gap.
  void sent() noexcept {
    if (credit > 0) --credit;
    ++delivered;
    gap = 0;
  }
  // An event it matched was not sent to it.
  void missed() noexcept {
    ++dropped;
    ++gap;
  }
  // Its event went into a batch: spends one credit; returns the gap the event carries,
  // which is cleared.
  std::uint64_t add_to_batch() noexcept {
    if (credit > 0) --credit;
    return std::exchange(gap, 0);
  }
  // The batch holding its event was sent.
  void batch_sent() noexcept { ++delivered; }
  // It was refused (the connection's queue is full, or the connection gone): the event
  // is dropped, it and the gap it carried go back into the gap, and so does its credit.
  void batch_refused(std::uint64_t carried) noexcept {
    ++dropped;
    gap += carried + 1;
    add_credit(1);
  }
  void add_credit(std::uint32_t more) noexcept;
};

class SubscriptionTable {
 public:
  SubscriptionTable();
  ~SubscriptionTable();
  SubscriptionTable(const SubscriptionTable&) = delete;
  SubscriptionTable& operator=(const SubscriptionTable&) = delete;

  enum class Added { added, replaced, too_many };
  // Adds subscription `id` of `client` on `pattern` (which must be valid) with `credit`
  // (0: the default), or replaces that subscription's pattern and resets its credit.
  // A new one beyond `max_per_client` of the client's is refused: too_many.
  Added subscribe(const RoutingId& client, std::uint64_t id, std::string_view pattern,
                  std::uint32_t credit, std::size_t max_per_client);
  // Returns whether it existed.
  bool unsubscribe(const RoutingId& client, std::uint64_t id);
  Subscription* find(const RoutingId& client, std::uint64_t id);
  // Removes every subscription of `client`; returns how many it had.
  std::size_t remove_client(const RoutingId& client);

  std::size_t count(const RoutingId& client) const;
  std::size_t size() const noexcept { return size_; }

  // Appends to `out` every subscription whose pattern matches `topic` (a valid publish
  // topic), each once, in no particular order.
  void match(std::string_view topic, std::vector<Subscription*>& out);

  // match()'s answer for `topic` (a valid publish topic), remembered per topic until the
  // table next changes (a subscribe, an unsubscribe, a client removed), so that while the
  // subscriptions stay put a publish costs one hash lookup instead of a trie walk. At most
  // kMaxRememberedTopics topics are remembered; a new one beyond that starts afresh. The
  // reference is valid until the table changes or matching() is called again.
  const std::vector<Subscription*>& matching(std::string_view topic);
  // Whether matching() remembers `topic`; a remembered topic was valid when first matched.
  bool remembers(std::string_view topic) const { return remembered_.contains(topic); }
  static constexpr std::size_t kMaxRememberedTopics = 4096;

  // Every subscription, by client then id (for admin listings).
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [client, subs] : by_client_)
      for (const auto& [id, sub] : subs)
        f(sub);
  }

  struct Node;  // a trie node; defined in topics.cpp

 private:
  void insert_(Subscription& sub);
  void erase_(const Subscription& sub);
  void tokenize_(std::string_view text);

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  std::unique_ptr<Node> root_;
  // topic -> matching subscriptions; cleared whenever the table changes.
  std::unordered_map<std::string, std::vector<Subscription*>, StringHash, std::equal_to<>>
      remembered_;
  // std::map nodes never move: the trie keeps pointers to these Subscriptions.
  std::map<RoutingId, std::map<std::uint64_t, Subscription>, std::less<>> by_client_;
  std::size_t size_ = 0;
  std::vector<std::string_view> tokens_;  // scratch
};

// Publish counts of the most recently published topics, at most `capacity` of them: a
// topic published for the first time when the table is full evicts the one published
// least recently.
class RecentTopics {
 public:
  explicit RecentTopics(std::size_t capacity = 1000) : capacity_(capacity) {}

  void count(std::string_view topic);
  std::size_t size() const noexcept { return order_.size(); }
  // Calls f(topic, published) for each topic, most recently published first.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [topic, published] : order_)
      f(topic, published);
  }

 private:
  std::size_t capacity_;
  std::list<std::pair<std::string, std::uint64_t>> order_;  // most recent first
  // Keys view the strings in order_'s nodes, which never move.
  std::unordered_map<std::string_view, std::list<std::pair<std::string, std::uint64_t>>::iterator>
      index_;
};

}  // namespace sagebus::broker
