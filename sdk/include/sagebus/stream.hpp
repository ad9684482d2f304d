// sagebus::Stream and sagebus::StreamWriter: a reply that arrives as chunks.
//
// The caller's side, Stream (Client::stream): the chunks in order as they come, then one
// final outcome. next() (or a range-for) waits for each chunk; the stream ends with OK
// (next() returns nothing, the loop ends) or with an Error thrown: the handler's status,
// DEADLINE_EXCEEDED when the deadline (or CallOptions::idle_timeout between chunks)
// passes first, UNAVAILABLE when the instance is lost, after the chunks it sent. Flow
// control is end to end, in bytes: the caller holds at most CallOptions::window_bytes of
// chunks not yet read (and one chunk more), and the service's writer waits while the
// caller's window is full. Destroying a
// Stream that has not ended cancels it.
//
// The service's side, StreamWriter (Service::handle_stream): write() sends one chunk,
// waiting while the caller's window is full; it throws Error(CANCELLED) once the caller
// cancelled (or left), Error(DEADLINE_EXCEEDED) once the deadline passed. The handler's
// return ends the stream OK; an Error it throws ends it with that status.
//
// Thread safety: a Stream is read by one thread at a time; cancel() may be called from
// any thread. A StreamWriter is used by its handler's thread.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sagebus {

namespace detail {
class StreamCore;
class JobControl;
}  // namespace detail

class Stream {
 public:
  explicit Stream(std::shared_ptr<detail::StreamCore> core);
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;
  // Cancels the stream unless it has ended.
  ~Stream();

  // The next chunk, waiting for it; nothing once the stream ended OK. Throws
  // sagebus::Error with the status of any other end (after the chunks before it).
  std::optional<std::string> next();
  // As next(), into `chunk`, whose storage is reused: false once the stream ended OK. A
  // reader that keeps one string allocates nothing per chunk.
  bool next(std::string& chunk);
  // Gives the stream up: it ends CANCELLED at once (next() throws), the broker frees the
  // instance and its handler sees the cancellation. Nothing once it has ended.
  void cancel();
  // Chunks read so far.
  std::size_t chunks() const;

  // Input iteration over the chunks: for (const std::string& chunk : stream).
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::string*;
    using reference = const std::string&;
    iterator() = default;
    reference operator*() const { return chunk_; }
    pointer operator->() const { return &chunk_; }
    iterator& operator++() {
      more_ = stream_->next(chunk_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.more_; }

   private:
    friend class Stream;
    explicit iterator(Stream* stream) : stream_(stream), more_(stream->next(chunk_)) {}
    Stream* stream_ = nullptr;
    std::string chunk_;  // the current one, its storage reused for the next
    bool more_ = false;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::shared_ptr<detail::StreamCore> core_;
};

class StreamWriter {
 public:
  explicit StreamWriter(detail::JobControl& job) : job_(job) {}
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Sends `chunk`, waiting while the caller's window is full. Throws Error(CANCELLED)
  // when the caller cancelled or left, Error(DEADLINE_EXCEEDED) when the deadline passed,
  // Error(INVALID_ARGUMENT) for a chunk over the broker's max-payload.
  void write(std::string_view chunk);
  // Chunks written so far.
  std::size_t written() const noexcept { return written_; }

 private:
  detail::JobControl& job_;
  std::size_t written_ = 0;
};

}  // namespace sagebus
