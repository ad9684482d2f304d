// DeadlineQueue: (deadline, id) entries, taken smallest first, in the order of the pairs
// (so two equal entries come out one after the other), like a min-heap of them.
//
// Made for the broker's call timers, which are mostly pushed in order: calls with one
// timeout, accepted one after another, get rising deadlines and rising ids. An entry goes
// to the first of a few sorted runs (FIFOs) whose last entry is not greater than it, where
// push and pop cost O(1) instead of a heap's O(log n) moves; only an entry that fits no
// run, once all runs are in use, goes to a heap. top() is the smallest of the runs' fronts
// and the heap's top.
//
// Nothing is removed from the middle: the owner skips entries that went stale when they
// reach the top (lazy deletion), and may rebuild the queue from its live timers with
// assign(). Header only; not thread safe.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <queue>
#include <utility>
#include <vector>

namespace sagebus::broker {

template <class Time, class Id>
class DeadlineQueue {
 public:
  using Entry = std::pair<Time, Id>;
  // Sorted runs kept; with one timeout in use, one is enough.
  static constexpr std::size_t kRuns = 4;

  void push(Time deadline, Id id) {
    const Entry entry{deadline, id};
    ++size_;
    for (auto& run : runs_) {
      if (run.empty() || run.back() <= entry) {
        run.push_back(entry);
        return;
      }
    }
    heap_.push(entry);
  }

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  // The smallest entry. Not empty() first.
  const Entry& top() const {
    const std::size_t from = smallest_();
    return from == kRuns ? heap_.top() : runs_[from].front();
  }
  // Removes top(). Not empty() first.
  void pop() {
    if (const std::size_t from = smallest_(); from == kRuns)
      heap_.pop();
    else
      runs_[from].pop_front();
    --size_;
  }

  // Replaces every entry by `entries`, in any order.
  void assign(std::vector<Entry> entries) {
    std::sort(entries.begin(), entries.end());
    for (auto& run : runs_)
      run.clear();
    heap_ = {};
    size_ = entries.size();
    runs_[0].assign(entries.begin(), entries.end());
  }

 private:
  using Run = std::deque<Entry>;

  // The run whose front is the smallest entry, or kRuns for the heap's top.
  std::size_t smallest_() const {
    const Entry* best = heap_.empty() ? nullptr : &heap_.top();
    std::size_t from = kRuns;
    for (std::size_t i = 0; i < kRuns; ++i) {
      if (!runs_[i].empty() && (best == nullptr || runs_[i].front() < *best)) {
        best = &runs_[i].front();
        from = i;
      }
    }
    return from;
  }

  std::array<Run, kRuns> runs_;  // each sorted
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  std::size_t size_ = 0;
};

}  // namespace sagebus::broker
