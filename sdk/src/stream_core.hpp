// detail::StreamCore: the caller's side of one streamed call (sagebus::Stream), shared by
// the Stream, the session (through CallControl, on the thread running the driver) and,
// for Client::stream_async, the callback thread.
//
// The session hands it each chunk (on_chunk: kept on the driver's side until flush(), at
// the end of the messages read together) and the final outcome (finish); the reader
// takes them in order (next) and grants the service the bytes it read (wire::chunk_cost
// of each chunk), half a window at a time, so that it never holds more than a window of
// chunks unread, and one chunk more (the last may overrun the window). With callbacks
// instead of a reader, each chunk and the final outcome are posted to the callback thread,
// and a chunk is granted again when its callback returns.
//
// Chunks wait in ChunkQueues, whose storage the stream keeps: once it has grown to the
// window, a chunk costs the session and the reader a copy each and no allocation.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "connection.hpp"

namespace sagebus::detail {

// Chunks in order, kept as one run of bytes and where each ends. Not thread safe.
class ChunkQueue {
 public:
  bool empty() const noexcept { return next_ == ends_.size(); }
  // The bytes it holds, of chunks popped since the last take() too.
  std::size_t bytes() const noexcept { return bytes_.size(); }
  void push(std::string_view chunk) {
    bytes_.append(chunk);
    ends_.push_back(bytes_.size());
  }
  // The first chunk; the queue must not be empty.
  std::string_view front() const noexcept {
    const std::size_t begin = popped_bytes_();
    return std::string_view(bytes_).substr(begin, ends_[next_] - begin);
  }
  void pop() noexcept {
    if (++next_ == ends_.size()) clear();
  }
  // Moves `other`'s chunks to the end of this queue, emptying it.
  void take(ChunkQueue& other);
  void clear() noexcept {  // keeps the storage
    bytes_.clear();
    ends_.clear();
    next_ = 0;
  }

 private:
  // Where the first chunk begins: the bytes of those popped before it.
  std::size_t popped_bytes_() const noexcept { return next_ == 0 ? 0 : ends_[next_ - 1]; }

  std::string bytes_;
  std::vector<std::size_t> ends_;
  std::size_t next_ = 0;  // the first chunk's index: those before it were popped
};

class StreamCore final : public CallControl, public std::enable_shared_from_this<StreamCore> {
 public:
  using OnChunk = std::function<void(std::string_view)>;
  using OnDone = std::function<void(Reply)>;

  // Read through next(); or, with on_chunk and on_done, through callbacks. `window`: in
  // bytes (CallOptions::window_bytes).
  StreamCore(Connection& connection, std::uint32_t window, OnChunk on_chunk = {},
             OnDone on_done = {});

  // The session's (the thread running the driver).
  void on_chunk(const wire::Header& header, std::string_view chunk) override;
  void flush() override;
  void finish(Outcome outcome);

  // The reader's.
  bool next(std::string& chunk);
  void cancel();
  bool ended() const;
  std::size_t chunks() const;
  // The chunks the session handed over, and their bytes (for interceptors).
  std::size_t received() const { return received_.load(std::memory_order_relaxed); }
  std::size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  // A chunk of `bytes` was read: grant more when half a window was. Under mutex_ (the
  // callback thread takes it too).
  void consumed_(std::size_t bytes);

  Connection& connection_;
  const std::uint32_t window_;
  const OnChunk on_chunk_;
  const OnDone on_done_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  ChunkQueue incoming_;  // on_chunk()'s since flush(): the driver's side
  ChunkQueue chunks_;    // flushed, for the reader
  std::optional<Outcome> end_;
  bool cancelled_ = false;  // by the reader: next() throws at once
  std::size_t read_ = 0;
  std::uint64_t ungranted_ = 0;  // bytes read (chunk_cost), not yet granted again
  std::atomic<std::size_t> received_{0};
  std::atomic<std::size_t> bytes_{0};
};

}  // namespace sagebus::detail
