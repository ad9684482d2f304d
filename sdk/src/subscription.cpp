#include "sagebus/subscription.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "subscription_core.hpp"

namespace sagebus {
namespace detail {

namespace {

// What a batch keeps for reuse: a window's worth of small events, not the memory of a
// rare large burst or of large payloads.
constexpr std::size_t kKeptMessages = 2048;
constexpr std::size_t kKeptStringBytes = 256;

// Writes over a kept string: no allocation while its storage is large enough, and none of
// the general path of assign() (replace()) in the common case of an unchanged size.
void copy_into(std::string& to, std::string_view from) {
  to.resize(from.size());
  if (!from.empty()) std::memcpy(to.data(), from.data(), from.size());
}

}  // namespace

void MessageBatch::take(MessageBatch& other) {
  for (Message& message : other) {
    Message& into = append();
    into.topic.swap(message.topic);
    into.payload.swap(message.payload);
    into.missed_before = message.missed_before;
  }
  other.size_ = 0;
}

void MessageBatch::clear() {
  for (Message& message : *this)
    if (message.payload.capacity() > kKeptStringBytes) std::string().swap(message.payload);
  size_ = 0;
  if (messages_.size() > kKeptMessages) {
    messages_.resize(kKeptMessages);
    messages_.shrink_to_fit();
  }
}

SubscriptionCore::SubscriptionCore(CoreLink& connection, std::string pattern,
                                   MessageHandler handler, std::uint32_t window)
    : connection_(connection),
      pattern_(std::move(pattern)),
      handler_(std::move(handler)),
      window_(window) {}

void SubscriptionCore::deliver(std::string_view topic, std::string_view payload,
                               std::uint64_t missed) {
  if (stopping_.load(std::memory_order_relaxed)) return;
  if (missed != 0) missed_.fetch_add(missed, std::memory_order_relaxed);
  // The broker sends no more than the credit it was given; a credit returned just
  // before a re-subscribe can overshoot that by at most a window.
  if (accepted_ - handled_.load(std::memory_order_relaxed) >= 2 * std::uint64_t{window_}) {
    missed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  ++accepted_;
  Message& message = incoming_.append();
  copy_into(message.topic, topic);
  copy_into(message.payload, payload);
  message.missed_before = missed;
}

void SubscriptionCore::hand_over_() {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return incoming_.clear();
    if (queue_.empty())
      queue_.swap(incoming_);
    else
      queue_.take(incoming_);
    wake = waiting_;
  }
  // A handler thread that is busy takes the batch when it is done, without being told.
  if (wake) cv_.notify_one();
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
  const std::uint64_t unhandled = accepted_ - handled_.load(std::memory_order_relaxed);
  return unhandled >= window_ ? 0 : window_ - static_cast<std::uint32_t>(unhandled);
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
  MessageBatch taken;
  std::unique_lock lock(mutex_);
  for (;;) {
    waiting_ = true;
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    waiting_ = false;
    if (stopping_) return;
    taken.swap(queue_);
    lock.unlock();
    for (const Message& message : taken) {
      // stop() waits for the handler call in progress, not for the rest of the batch.
      if (stopping_.load(std::memory_order_relaxed)) return;
      handler_(message);
      // This thread alone writes it.
      handled_.store(handled_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      if (++consumed == batch) {
        connection_.return_credit(shared_from_this(), consumed);
        consumed = 0;
      }
    }
    taken.clear();
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
