// The deadline queue gives its entries back smallest first, whatever order they came in,
// like the min-heap it replaces.
#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "routing/deadline_queue.hpp"

using namespace sagebus::broker;

namespace {

using Queue = DeadlineQueue<int, std::uint64_t>;

std::vector<Queue::Entry> drain(Queue& q) {
  std::vector<Queue::Entry> out;
  while (!q.empty()) {
    out.push_back(q.top());
    q.pop();
  }
  return out;
}

}  // namespace

TEST_CASE("entries pushed in order come out in order", "[deadlines]") {
  Queue q;
  for (std::uint64_t id = 1; id <= 100; ++id)
    q.push(static_cast<int>(id / 3), id);
  CHECK(q.size() == 100);
  const auto out = drain(q);
  CHECK(std::is_sorted(out.begin(), out.end()));
  CHECK(out.size() == 100);
  CHECK(q.empty());
}

TEST_CASE("entries of several interleaved timeouts and of none come out smallest first",
          "[deadlines]") {
  std::mt19937 gen(7);
  Queue q;
  std::vector<Queue::Entry> in;
  for (std::uint64_t id = 1; id <= 5000; ++id) {
    // Six timeouts interleaved (more than the runs), and one entry in ten at random.
    const int now = static_cast<int>(id);
    const int deadline = id % 10 == 0 ? static_cast<int>(gen() % 20000)
                                      : now + 100 * static_cast<int>(gen() % 6);
    q.push(deadline, id);
    in.emplace_back(deadline, id);
  }
  std::sort(in.begin(), in.end());
  CHECK(drain(q) == in);
}

TEST_CASE("equal entries come out one after the other", "[deadlines]") {
  // A deadline moved away and back leaves two equal entries of one id in the queue.
  Queue q;
  q.push(5, 9);
  q.push(5, 2);  // fits no run behind (5, 9): goes to another
  q.push(5, 9);
  q.push(4, 1);
  CHECK(drain(q) == std::vector<Queue::Entry>{{4, 1}, {5, 2}, {5, 9}, {5, 9}});
}

TEST_CASE("pushes and pops may alternate", "[deadlines]") {
  Queue q;
  q.push(10, 1);
  q.push(3, 2);
  CHECK(q.top() == Queue::Entry{3, 2});
  q.pop();
  q.push(1, 3);
  q.push(20, 4);
  CHECK(q.top() == Queue::Entry{1, 3});
  q.pop();
  CHECK(drain(q) == std::vector<Queue::Entry>{{10, 1}, {20, 4}});
}

TEST_CASE("assign replaces every entry", "[deadlines]") {
  Queue q;
  for (std::uint64_t id = 1; id <= 10; ++id)
    q.push(static_cast<int>(100 - id), id);
  q.assign({{7, 1}, {3, 2}, {5, 3}});
  CHECK(q.size() == 3);
  CHECK(drain(q) == std::vector<Queue::Entry>{{3, 2}, {5, 3}, {7, 1}});
  q.push(2, 4);
  CHECK(drain(q) == std::vector<Queue::Entry>{{2, 4}});
}
