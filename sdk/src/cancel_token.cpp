#include <mutex>
#include <utility>
#include <vector>

#include "sagebus/call_context.hpp"

namespace sagebus {
namespace detail {

class CancelState {
 public:
  CancelState() = default;
  // A child's: it leaves its parent's registrations with its last handle.
  explicit CancelState(std::weak_ptr<CancelState> parent) : parent_(std::move(parent)) {}
  ~CancelState() {
    if (auto parent = parent_.lock()) parent->remove(parent_registration_);
  }
  void set_parent_registration(std::uint64_t id) { parent_registration_ = id; }

  // The functions run one at a time, each taken from the list under the lock just before
  // it runs: one forgotten meanwhile never runs.
  void cancel(std::string why) {
    std::unique_lock lock(mutex_);
    if (cancelled_) return;
    cancelled_ = true;
    why_ = std::move(why);
    while (!callbacks_.empty()) {
      std::function<void()> fn = std::move(callbacks_.front().second);
      callbacks_.erase(callbacks_.begin());
      lock.unlock();
      fn();
      lock.lock();
    }
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
  const std::weak_ptr<CancelState> parent_;
  std::uint64_t parent_registration_ = 0;
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
  child.state_ = std::make_shared<detail::CancelState>(state_);
  // Weak both ways: the parent does not keep its children alive, and a child's
  // registration leaves the parent with the child's last handle (~CancelState).
  std::weak_ptr<detail::CancelState> weak = child.state_;
  std::weak_ptr<detail::CancelState> parent = state_;
  child.state_->set_parent_registration(state_->add([weak, parent] {
    if (auto state = weak.lock()) {
      const auto p = parent.lock();
      state->cancel(p ? p->why() : "cancelled by the caller");
    }
  }));
  return child;
}

}  // namespace sagebus
