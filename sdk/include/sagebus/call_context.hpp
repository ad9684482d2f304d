// sagebus::CancelToken and sagebus::CallContext: what a chain of calls shares.
//
// A CancelToken gives up calls and streams: a call made with one (CallOptions::cancel)
// ends CANCELLED at once when the token is cancelled, and the broker tells the instance
// running it, whose handler sees Request::cancelled() (and a streaming handler's next
// write throws Error(CANCELLED)). A token is a shared handle: copies name the same
// token. A child token is cancelled with its parent, or on its own.
//
// A CallContext is what a handler's request passes on to the calls it makes
// (Request::context(), CallOptions::context): the one deadline of the whole chain, the
// W3C trace context (its trace id names the chain), and the request's cancellation, so
// that cancelling the outer call cancels the inner ones.
//
// Thread safety: every member function may be called from any thread at the same time.
// Functions given to on_cancel() run on the thread that cancels, once, outside the
// token's lock; they must be quick and must not throw.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace sagebus {

namespace detail {
class CancelState;
}

class CancelToken {
 public:
  // A fresh token, not cancelled.
  CancelToken();

  // Cancels the token and its children; the first call's `why` is what the calls made
  // with it end with. Later calls do nothing.
  void cancel(std::string why = "cancelled by the caller");
  bool cancelled() const;
  // Why it was cancelled; empty while it is not.
  std::string why() const;

  // Runs `fn` when the token is cancelled (at once, on this thread, if it already is).
  // Returns a registration to pass to forget(), or 0 when `fn` ran already.
  std::uint64_t on_cancel(std::function<void()> fn) const;
  // Forgets a registration of on_cancel(); `fn` does not run after forget() returns
  // (unless it is running on another thread right now).
  void forget(std::uint64_t registration) const;

  // A token cancelled when this one is, and which may also be cancelled on its own.
  CancelToken child() const;

 private:
  std::shared_ptr<detail::CancelState> state_;
};

struct CallContext {
  // The chain's deadline: calls made within it end no later. max(): none.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // The W3C traceparent of the call this context belongs to ("00-<trace id>-<parent
  // id>-<flags>"); calls made within it carry its trace id. Empty: none.
  std::string traceparent{};
  // Cancelled when the call this context belongs to is.
  CancelToken cancel{};
};

}  // namespace sagebus
