// sagebus::LegacyQueue: the named-queue API old pipeline code was written against, kept
// by the broker instead of in-process.
//
// Every LegacyQueue with the same name, in any process, is the same queue: FIFO, kept
// while nobody reads, each item handed to exactly one get(). Every put() is also
// published on the queue's bus topic (legacy.<name> unless the broker maps it), so new
// code can subscribe to old queues.
//
// At least once: an item taken by get() stays with this client's connection until it is
// acknowledged — by this object's next get(), by ack(), or by the destructor. If the
// process dies first, the broker puts the item back at the front of the queue, and the
// next reader is told it was redelivered (get_item()).
//
// Durable: when the broker runs with a store (sage-busd --store), a queue's items are on
// disk before put() returns, and survive the broker's crash or restart; an item taken and
// not acknowledged when the broker stopped is redelivered. A queue declared transient
// (QueueOptions) lives in the broker's memory only. A get() that the broker's restart
// interrupts acknowledges nothing: the item it would have acknowledged comes back.
//
// Thread safe; but a get() acknowledges whatever this object's previous get() returned,
// so give each reading thread its own LegacyQueue. The Client must outlive it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "sagebus/client.hpp"

namespace sagebus {

struct QueueOptions {
  // Declares the queue transient: its items live in the broker's memory only, are never
  // written to its store, and are lost when it stops. Without it a queue is durable when
  // the broker has a store.
  bool transient = false;
};

// An item as get_item() returns it.
struct QueueItem {
  std::string data;
  // It was handed out before and not acknowledged: its reader left, or the broker
  // stopped, first. It may have been worked on already.
  bool redelivered = false;
  std::uint32_t deliveries = 1;  // times it was handed out, this one included
};

class LegacyQueue {
 public:
  // Throws Error(INVALID_ARGUMENT) for a name that is not a valid topic (see docs).
  LegacyQueue(Client& client, std::string name);
  // With options.transient, first declares the queue transient (waits for the broker's
  // answer: throws Error(INVALID_ARGUMENT) if the queue is durable and holds items).
  LegacyQueue(Client& client, std::string name, QueueOptions options);
  // Acknowledges the item the last get() returned, if any (best effort).
  ~LegacyQueue();
  LegacyQueue(const LegacyQueue&) = delete;
  LegacyQueue& operator=(const LegacyQueue&) = delete;

  // Appends `item`. While the queue is full, waits up to `timeout` for room; then throws
  // Error(OVERLOADED). Throws Error(UNAVAILABLE) when the broker cannot be reached. With
  // `ttl` > 0 the broker removes the item if no get takes it within `ttl` (counted as
  // expired); once taken, it is kept until acknowledged. Throws Error(INVALID_ARGUMENT)
  // for a `ttl` below 0 or over 2^31 ms.
  void put(std::string_view item, std::chrono::milliseconds timeout = std::chrono::seconds(5),
           std::chrono::milliseconds ttl = std::chrono::milliseconds(0));

  // Acknowledges the previous item, then takes the head of the queue, waiting up to
  // `timeout` for one. Returns nothing when none came in time. Throws Error on failures
  // other than the timeout (UNAVAILABLE when the broker cannot be reached).
  std::optional<std::string> get(std::chrono::milliseconds timeout);
  // The same, with whether the item was redelivered.
  std::optional<QueueItem> get_item(std::chrono::milliseconds timeout);

  // Gives the item the last get() returned back to the queue now, unacknowledged: it
  // goes back to its place and the next reader gets it, marked redelivered. No-op if
  // there is none. Throws as ack() does.
  void nack();

  // Acknowledges the item the last get() returned. No-op if there is none. Once it
  // returns, the item is never delivered again (stored, on a durable queue). Throws
  // Error(UNAVAILABLE) when the broker cannot be reached: the item may come back.
  void ack();

  // Items in the queue now (not counting taken, unacknowledged ones).
  std::size_t size();

  const std::string& name() const noexcept { return name_; }

 private:
  // ack() (`acknowledge`) or nack() of the item the last get() returned.
  void settle_(bool acknowledge);

  Client& client_;
  std::string name_;
  std::mutex mutex_;
  std::uint64_t unacked_ = 0;  // delivery tag of the item the last get() returned
};

}  // namespace sagebus
