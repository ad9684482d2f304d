#include "sagebus/stream.hpp"

#include <algorithm>
#include <cstddef>
#include <limits>
#include <utility>

#include "sagebus/status.hpp"
#include "sagebus/wire/frame.hpp"
#include "stream_core.hpp"

namespace sagebus {
namespace detail {

StreamCore::StreamCore(Connection& connection, std::uint32_t window, OnChunk on_chunk,
                       OnDone on_done)
    : connection_(connection),
      window_(window),
      on_chunk_(std::move(on_chunk)),
      on_done_(std::move(on_done)) {}

void StreamCore::on_chunk(const wire::Header&, std::string_view chunk) {
  received_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(chunk.size(), std::memory_order_relaxed);
  if (on_chunk_) {
    auto self = shared_from_this();
    connection_.callback_thread().post(
        [self, chunk = std::string(chunk)](Reply) {
          self->on_chunk_(chunk);
          std::lock_guard lock(self->mutex_);
          ++self->read_;
          self->consumed_(chunk.size());
        },
        {});
    return;
  }
  incoming_.push(chunk);
}

void ChunkQueue::take(ChunkQueue& other) {
  if (other.empty()) return;
  if (empty()) {  // the usual case: the reader kept up
    std::swap(bytes_, other.bytes_);
    std::swap(ends_, other.ends_);
    std::swap(next_, other.next_);
    return;
  }
  if (next_ != 0) {  // drops what was popped, so that the bytes stay within a window
    const std::size_t popped = popped_bytes_();
    bytes_.erase(0, popped);
    ends_.erase(ends_.begin(), ends_.begin() + static_cast<std::ptrdiff_t>(next_));
    for (std::size_t& end : ends_)
      end -= popped;
    next_ = 0;
  }
  const std::size_t base = bytes_.size();
  const std::size_t begin = other.popped_bytes_();
  bytes_.append(other.bytes_, begin);
  for (std::size_t i = other.next_; i < other.ends_.size(); ++i)
    ends_.push_back(base + other.ends_[i] - begin);
  other.clear();
}

void StreamCore::flush() {
  if (incoming_.empty()) return;
  {
    std::lock_guard lock(mutex_);
    chunks_.take(incoming_);
  }
  cv_.notify_one();
}

void StreamCore::finish(Outcome outcome) {
  if (on_done_) {
    {
      std::lock_guard lock(mutex_);
      end_ = Outcome{outcome.status, outcome.message, {}, 0, 0};
    }
    connection_.callback_thread().post(on_done_,
                                       Reply{outcome.status, std::move(outcome.message), {}});
    return;
  }
  flush();  // the chunks that came with the outcome go before it
  {
    std::lock_guard lock(mutex_);
    end_ = std::move(outcome);
  }
  cv_.notify_all();
}

bool StreamCore::next(std::string& chunk) {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return cancelled_ || !chunks_.empty() || end_.has_value(); });
  if (cancelled_) throw Error(Status::cancelled, "the stream was cancelled by its reader");
  if (!chunks_.empty()) {
    chunk.assign(chunks_.front());
    chunks_.pop();
    ++read_;
    if (!end_) consumed_(chunk.size());
    return true;
  }
  if (end_->status != Status::ok) throw Error(end_->status, end_->message);
  return false;
}

void StreamCore::consumed_(std::size_t bytes) {
  ungranted_ += static_cast<std::uint64_t>(wire::chunk_cost(bytes));
  if (ungranted_ < std::max<std::uint32_t>(1, window_ / 2)) return;
  // Half a window and one chunk at most; a CREDIT carries up to 4 GiB.
  while (ungranted_ > 0) {
    const auto grant = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(ungranted_, std::numeric_limits<std::uint32_t>::max()));
    connection_.stream_credit(shared_from_this(), grant);
    ungranted_ -= grant;
  }
}

void StreamCore::cancel() {
  {
    std::lock_guard lock(mutex_);
    if (end_ || cancelled_) return;
    cancelled_ = true;
  }
  cv_.notify_all();
  connection_.cancel(shared_from_this(), "the stream was cancelled by its reader");
}

bool StreamCore::ended() const {
  std::lock_guard lock(mutex_);
  return end_.has_value() || cancelled_;
}

std::size_t StreamCore::chunks() const {
  std::lock_guard lock(mutex_);
  return read_;
}

}  // namespace detail

Stream::Stream(std::shared_ptr<detail::StreamCore> core) : core_(std::move(core)) {}
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (core_) core_->cancel();
    core_ = std::move(other.core_);
  }
  return *this;
}
Stream::~Stream() {
  if (core_) core_->cancel();
}

std::optional<std::string> Stream::next() {
  std::string chunk;
  if (!core_->next(chunk)) return std::nullopt;
  return chunk;
}

bool Stream::next(std::string& chunk) {
  return core_->next(chunk);
}

void Stream::cancel() {
  core_->cancel();
}

std::size_t Stream::chunks() const {
  return core_->chunks();
}

}  // namespace sagebus
