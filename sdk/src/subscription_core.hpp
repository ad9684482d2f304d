// detail::SubscriptionCore: one subscription's queue and handler thread.
//
// The I/O thread calls deliver(); the subscription's own thread runs the handler, one
// message at a time, and returns credit to the broker as it goes, so the broker never
// sends more than `window` messages ahead of the handler. `wire_id` is the id of its
// first SUBSCRIBE, which the broker keys it by and which every SUBSCRIBE sent again
// reuses; `sent_as`, the fresh id the latest one took in the sending order. Only the I/O
// thread touches them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "connection.hpp"
#include "sagebus/subscription.hpp"

namespace sagebus::detail {

class SubscriptionCore : public std::enable_shared_from_this<SubscriptionCore> {
 public:
  SubscriptionCore(Connection& connection, std::string pattern, MessageHandler handler,
                   std::uint32_t window);

  const std::string& pattern() const noexcept { return pattern_; }
  std::uint32_t window() const noexcept { return window_; }

  // I/O thread: a message arrived (`missed` counted by the broker just before it).
  void deliver(Message message);
  // I/O thread: credit to grant on a fresh SUBSCRIBE (room left in the queue).
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
  Connection& connection() noexcept { return connection_; }

  std::uint64_t missed() const noexcept { return missed_.load(std::memory_order_relaxed); }
  std::uint64_t handled() const noexcept { return handled_.load(std::memory_order_relaxed); }

 private:
  void run_();

  Connection& connection_;
  const std::string pattern_;
  const MessageHandler handler_;
  const std::uint32_t window_;

  std::mutex mutex_;
  std::condition_variable cv_;        // the handler thread waits for messages
  std::condition_variable state_cv_;  // wait_subscribed() waits for the broker's answer
  std::deque<Message> queue_;
  bool stopping_ = false;
  std::optional<Error> refusal_;  // the broker refused the last SUBSCRIBE
  bool subscribed_ = false;       // the broker confirmed a SUBSCRIBE
  std::atomic<std::uint64_t> missed_{0};
  std::atomic<std::uint64_t> handled_{0};
  std::thread thread_;
};

}  // namespace sagebus::detail
