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
// process dies first, the broker puts the item back at the front of the queue.
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

class LegacyQueue {
 public:
  // Throws Error(INVALID_ARGUMENT) for a name that is not a valid topic (see docs).
  LegacyQueue(Client& client, std::string name);
  // Acknowledges the item the last get() returned, if any (best effort).
  ~LegacyQueue();
  LegacyQueue(const LegacyQueue&) = delete;
  LegacyQueue& operator=(const LegacyQueue&) = delete;

  // Appends `item`. While the queue is full, waits up to `timeout` for room; then throws
  // Error(OVERLOADED). Throws Error(UNAVAILABLE) when the broker cannot be reached.
  void put(std::string_view item, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Acknowledges the previous item, then takes the head of the queue, waiting up to
  // `timeout` for one. Returns nothing when none came in time. Throws Error on failures
  // other than the timeout (UNAVAILABLE when the broker cannot be reached).
  std::optional<std::string> get(std::chrono::milliseconds timeout);

  // Acknowledges the item the last get() returned. No-op if there is none.
  void ack();

  // Items in the queue now (not counting taken, unacknowledged ones).
  std::size_t size();

  const std::string& name() const noexcept { return name_; }

 private:
  Client& client_;
  std::string name_;
  std::mutex mutex_;
  std::uint64_t unacked_ = 0;  // delivery tag of the item the last get() returned
};

}  // namespace sagebus
