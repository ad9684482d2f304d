// Messages as subscribers and receivers see them, and the handle of a subscription.
//
// A Subscription is move-only; destroying it (or unsubscribe()) ends the subscription
// and waits for a handler call in progress to return. Thread safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace sagebus {

namespace detail {
class SubscriptionCore;
}

struct Message {
  std::string topic{};  // publish-subscribe: the topic it was published on
  std::string from{};   // point-to-point: the sender's connection name
  std::string payload{};
  // Publish-subscribe: messages this subscription missed just before this one (it was
  // too slow and the broker dropped them for it alone). 0 when none.
  std::uint64_t missed_before = 0;
};

using MessageHandler = std::function<void(const Message&)>;

struct SubscribeOptions {
  // Messages the broker may send ahead of the handler. Beyond it, messages for this
  // subscription are dropped (and counted in missed_before) rather than queued.
  std::uint32_t window = 1024;
};

class Subscription {
 public:
  Subscription() = default;
  explicit Subscription(std::shared_ptr<detail::SubscriptionCore> core);
  ~Subscription();
  Subscription(Subscription&&) noexcept = default;
  Subscription& operator=(Subscription&&) noexcept;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Waits up to `timeout` for the broker to confirm the subscription (so that what is
  // published from now on reaches it). True once it has; false on timeout; throws Error
  // with the broker's status if it refused.
  bool wait_subscribed(std::chrono::milliseconds timeout);

  // Ends the subscription; waits for a handler call in progress. Idempotent.
  void unsubscribe();
  // Messages this subscription missed in total.
  std::uint64_t missed() const noexcept;
  // Messages its handler has run for.
  std::uint64_t handled() const noexcept;

 private:
  std::shared_ptr<detail::SubscriptionCore> core_;
};

}  // namespace sagebus
