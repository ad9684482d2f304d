// detail::SubscriptionCore: one subscription's queue and handler thread.
//
// The I/O thread calls deliver() for each event and flush() after each batch it read
// from the socket; the subscription's own thread takes everything flushed under one lock,
// runs the handler over it one message at a time, and returns credit to the broker as it
// goes, so the broker never sends more than `window` messages ahead of the handler.
// Messages are kept for reuse, strings and all, once the handler is done with them: a
// steady stream of events allocates nothing. `wire_id` is the id of its
// first SUBSCRIBE, which the broker keys it by and which every SUBSCRIBE sent again
// reuses; `sent_as`, the fresh id the latest one took in the sending order. Only the I/O
// thread touches them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "connection.hpp"
#include "sagebus/subscription.hpp"

namespace sagebus::detail {

// A subscription's messages in order. clear() keeps them, and the storage of their
// strings, for the next ones to be written over. (They have no `from`: it stays empty.)
class MessageBatch {
 public:
  // A kept message (stale topic, payload, missed_before: write them) or a new one.
  Message& append() {
    if (size_ == messages_.size()) messages_.emplace_back();
    return messages_[size_++];
  }
  // Moves the messages of `other` to the end of this one; `other` is left empty.
  void take(MessageBatch& other);
  void swap(MessageBatch& other) noexcept {
    messages_.swap(other.messages_);
    std::swap(size_, other.size_);
  }
  // Empties the batch, keeping up to a bounded number of messages and string bytes.
  void clear();
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  Message* begin() noexcept { return messages_.data(); }
  Message* end() noexcept { return messages_.data() + size_; }

 private:
  std::vector<Message> messages_;
  std::size_t size_ = 0;  // the first size_ of messages_ are in the batch
};

class SubscriptionCore : public std::enable_shared_from_this<SubscriptionCore> {
 public:
  SubscriptionCore(CoreLink& connection, std::string pattern, MessageHandler handler,
                   std::uint32_t window);

  const std::string& pattern() const noexcept { return pattern_; }
  std::uint32_t window() const noexcept { return window_; }

  // I/O thread: a message arrived (`missed` counted by the broker just before it). The
  // handler thread sees it after the next flush().
  void deliver(std::string_view topic, std::string_view payload, std::uint64_t missed);
  // I/O thread: hands what deliver() took since the last flush to the handler thread,
  // waking it if it waits.
  void flush() {
    if (!incoming_.empty()) hand_over_();
  }
  // I/O thread: whether deliver() took something since the last flush().
  bool holds_unflushed() const noexcept { return !incoming_.empty(); }
  // I/O thread: credit to grant on a fresh SUBSCRIBE (room left for messages not handled).
  std::uint32_t room();
  std::uint64_t wire_id = 0;
  std::uint64_t sent_as = 0;
  // I/O thread: the broker's answer to a SUBSCRIBE.
  void on_subscribed(Status status, const std::string& message);
  // Owner: see Subscription::wait_subscribed.
  bool wait_subscribed(std::chrono::milliseconds timeout);

  void start();  // starts the handler thread
  // Stops it, waiting for a handler call in progress (so never call it from the
  // handler). True the first time, false after.
  bool stop();
  CoreLink& connection() noexcept { return connection_; }

  std::uint64_t missed() const noexcept { return missed_.load(std::memory_order_relaxed); }
  std::uint64_t handled() const noexcept { return handled_.load(std::memory_order_relaxed); }

 private:
  void hand_over_();
  void run_();

  CoreLink& connection_;
  const std::string pattern_;
  const MessageHandler handler_;
  const std::uint32_t window_;

  std::mutex mutex_;
  std::condition_variable cv_;        // the handler thread waits for messages
  std::condition_variable state_cv_;  // wait_subscribed() waits for the broker's answer
  MessageBatch incoming_;             // delivered, not yet flushed; the I/O thread's own
  std::uint64_t accepted_ = 0;        // messages deliver() took; the I/O thread's own
  MessageBatch queue_;                // flushed, not yet taken by the handler thread
  bool waiting_ = false;              // the handler thread waits on cv_
  // Written under mutex_; read without it by the I/O thread and between handler calls.
  std::atomic<bool> stopping_{false};
  std::optional<Error> refusal_;  // the broker refused the last SUBSCRIBE
  bool subscribed_ = false;       // the broker confirmed a SUBSCRIBE
  std::atomic<std::uint64_t> missed_{0};
  std::atomic<std::uint64_t> handled_{0};
  std::thread thread_;
};

}  // namespace sagebus::detail
