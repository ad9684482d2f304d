#include "sagebus/legacy_queue.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "client_request.hpp"
#include "sagebus/wire/topic.hpp"

namespace sagebus {

namespace {
detail::RequestSpec queue_request(wire::Kind kind, const std::string& name, std::uint64_t tag,
                                  std::chrono::milliseconds timeout,
                                  std::string_view payload = {}) {
  detail::RequestSpec spec;
  spec.kind = kind;
  spec.target = name;
  spec.tag = tag;
  spec.payload = zmq::message_t(payload.data(), payload.size());
  spec.options.timeout = timeout;
  return spec;
}

// Acknowledgements and size queries are quick questions for the broker.
constexpr std::chrono::milliseconds kQuickTimeout{5000};
}  // namespace

LegacyQueue::LegacyQueue(Client& client, std::string name)
    : client_(client), name_(std::move(name)) {
  if (auto error = wire::check_topic(name_, "queue name"))
    throw Error(Status::invalid_argument, *error);
}

LegacyQueue::LegacyQueue(Client& client, std::string name, QueueOptions options)
    : LegacyQueue(client, std::move(name)) {
  if (!options.transient) return;
  auto spec = queue_request(wire::QUEUE_DECLARE, name_, 0, kQuickTimeout);
  spec.transient = true;
  spec.options.wait_for_ready = true;
  detail::wait(client_, std::move(spec));
}

LegacyQueue::~LegacyQueue() {
  try {
    ack();
  } catch (const Error&) {
    // Best effort: if the broker cannot hear it, the item comes back to the queue when
    // this connection goes, which is what at-least-once promises.
  }
}

void LegacyQueue::put(std::string_view item, std::chrono::milliseconds timeout,
                      std::chrono::milliseconds ttl) {
  if (ttl.count() < 0 || ttl.count() > std::numeric_limits<std::int32_t>::max())
    throw Error(Status::invalid_argument, "ttl must be between 0 (none) and 2^31 ms, not " +
                                              std::to_string(ttl.count()) + " ms");
  auto spec = queue_request(wire::QUEUE_PUT, name_, 0, timeout, item);
  spec.ttl = ttl;
  // A put waits out a broker restart within its timeout, as a get does. One the broker
  // may have taken before it went is not sent again: it ends UNAVAILABLE.
  spec.options.wait_for_ready = true;
  detail::wait(client_, std::move(spec));
}

std::optional<std::string> LegacyQueue::get(std::chrono::milliseconds timeout) {
  auto item = get_item(timeout);
  if (!item) return std::nullopt;
  return std::move(item->data);
}

std::optional<QueueItem> LegacyQueue::get_item(std::chrono::milliseconds timeout) {
  std::lock_guard lock(mutex_);
  auto spec = queue_request(wire::QUEUE_GET, name_, unacked_, timeout);
  // A reader waits out a broker restart: the engine asks the new broker again, within
  // the timeout, once it is connected (an item the old broker handed out went with it).
  spec.options.wait_for_ready = true;
  auto outcome = detail::ask(client_, std::move(spec));
  // The broker acknowledged the previous item before it answered, whatever the answer.
  if (outcome.status != Status::unavailable && outcome.status != Status::cancelled) unacked_ = 0;
  if (outcome.status == Status::deadline_exceeded) return std::nullopt;
  if (outcome.status != Status::ok) throw Error(outcome.status, outcome.message);
  unacked_ = outcome.tag;
  return QueueItem{std::move(outcome.payload), outcome.redelivered,
                   std::max<std::uint32_t>(outcome.deliveries, 1)};
}

void LegacyQueue::nack() {
  settle_(false);
}

void LegacyQueue::ack() {
  settle_(true);
}

void LegacyQueue::settle_(bool acknowledge) {
  std::lock_guard lock(mutex_);
  if (unacked_ == 0) return;
  const std::uint64_t tag = std::exchange(unacked_, 0);
  // Once asked, never asked again: whatever the answer, the tag names nothing after it
  // (settled, or the item went back to the queue with the connection that held it).
  detail::wait(client_, queue_request(acknowledge ? wire::QUEUE_ACK : wire::QUEUE_NACK, name_, tag,
                                      kQuickTimeout));
}

std::size_t LegacyQueue::size() {
  return detail::wait(client_, queue_request(wire::QUEUE_SIZE, name_, 0, kQuickTimeout)).count;
}

}  // namespace sagebus
