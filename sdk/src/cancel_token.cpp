#include <mutex>
#include <utility>
#include <vector>

#include "sagebus/call_context.hpp"

namespace sagebus {
namespace detail {

class CancelState {
 public:
  void cancel(std::string why) {
    std::vector<std::pair<std::uint64_t, std::function<void()>>> run;
    {
      std::lock_guard lock(mutex_);
      if (cancelled_) return;
      cancelled_ = true;
      why_ = std::move(why);
      run.swap(callbacks_);
    }
    for (auto& [id, fn] : run)
      fn();
  }
  bool cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }
  std::string why() const {
    std::lock_guard lock(mutex_);
    return why_;
  }
  std::uint64_t add(std::function<void()> fn) {
    {
      std::lock_guard lock(mutex_);
      if (!cancelled_) {
        callbacks_.emplace_back(++next_, std::move(fn));
        return next_;
      }
    }
    fn();
    return 0;
  }
  void remove(std::uint64_t id) {
    if (id == 0) return;
    std::lock_guard lock(mutex_);
    std::erase_if(callbacks_, [&](const auto& entry) { return entry.first == id; });
  }

 private:
  mutable std::mutex mutex_;
  bool cancelled_ = false;
  std::string why_;
  std::uint64_t next_ = 0;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> callbacks_;
};

}  // namespace detail

CancelToken::CancelToken() : state_(std::make_shared<detail::CancelState>()) {}

void CancelToken::cancel(std::string why) {
  state_->cancel(std::move(why));
}

bool CancelToken::cancelled() const {
  return state_->cancelled();
}

std::string CancelToken::why() const {
  return state_->why();
}

std::uint64_t CancelToken::on_cancel(std::function<void()> fn) const {
  return state_->add(std::move(fn));
}

void CancelToken::forget(std::uint64_t registration) const {
  state_->remove(registration);
}

CancelToken CancelToken::child() const {
  CancelToken child;
  // The child holds its parent's registration alive no longer than the parent: a weak
  // reference, so that a long-lived parent does not keep its children's state.
  std::weak_ptr<detail::CancelState> weak = child.state_;
  std::weak_ptr<detail::CancelState> parent = state_;
  (void)state_->add([weak, parent] {
    if (auto state = weak.lock()) {
      const auto p = parent.lock();
      state->cancel(p ? p->why() : "cancelled by the caller");
    }
  });
  return child;
}

}  // namespace sagebus
