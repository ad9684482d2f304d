#include "sagebus/subscription.hpp"

#include "subscription_core.hpp"

namespace sagebus {
namespace detail {

SubscriptionCore::SubscriptionCore(Connection& connection, std::string pattern,
                                   MessageHandler handler, std::uint32_t window)
    : connection_(connection),
      pattern_(std::move(pattern)),
      handler_(std::move(handler)),
      window_(window) {}

void SubscriptionCore::deliver(Message message) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    missed_.fetch_add(message.missed_before, std::memory_order_relaxed);
    // The broker sends no more than the credit it was given; a credit returned just
    // before a re-subscribe can overshoot that by at most a window.
    if (queue_.size() >= 2 * std::size_t{window_}) {
      missed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(message));
  }
  cv_.notify_one();
}

void SubscriptionCore::on_subscribed(Status status, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    if (status == Status::ok) {
      subscribed_ = true;
      refusal_.reset();
    } else {
      refusal_.emplace(status,
                       "sage-busd refused the subscription to " + pattern_ + ": " + message);
    }
  }
  state_cv_.notify_all();
}

bool SubscriptionCore::wait_subscribed(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  state_cv_.wait_for(lock, timeout, [this] { return subscribed_ || refusal_.has_value(); });
  if (!subscribed_ && refusal_) throw *refusal_;
  return subscribed_;
}

std::uint32_t SubscriptionCore::room() {
  std::lock_guard lock(mutex_);
  return queue_.size() >= window_ ? 0 : window_ - static_cast<std::uint32_t>(queue_.size());
}

void SubscriptionCore::start() {
  thread_ = std::thread([this] { run_(); });
}

bool SubscriptionCore::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  return true;
}

void SubscriptionCore::run_() {
  // Credit goes back in batches, so the broker hears from us once per quarter window.
  const std::uint32_t batch = std::max<std::uint32_t>(1, window_ / 4);
  std::uint32_t consumed = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Message message = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    handler_(message);
    handled_.fetch_add(1, std::memory_order_relaxed);
    if (++consumed == batch) {
      connection_.return_credit(shared_from_this(), consumed);
      consumed = 0;
    }
    lock.lock();
  }
}

}  // namespace detail

Subscription::Subscription(std::shared_ptr<detail::SubscriptionCore> core)
    : core_(std::move(core)) {}

Subscription::~Subscription() {
  unsubscribe();
}

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    unsubscribe();
    core_ = std::move(other.core_);
  }
  return *this;
}

void Subscription::unsubscribe() {
  if (core_ && core_->stop()) core_->connection().remove_subscription(core_);
}

bool Subscription::wait_subscribed(std::chrono::milliseconds timeout) {
  if (!core_) throw Error(Status::invalid_argument, "this Subscription holds no subscription");
  return core_->wait_subscribed(timeout);
}

std::uint64_t Subscription::missed() const noexcept {
  return core_ ? core_->missed() : 0;
}

std::uint64_t Subscription::handled() const noexcept {
  return core_ ? core_->handled() : 0;
}

}  // namespace sagebus
