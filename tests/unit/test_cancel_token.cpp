// sagebus::CancelToken (sagebus/call_context.hpp): registered functions run once, on the
// thread that cancels, outside the token's lock; forget() keeps one from running; the first
// reason is the one kept; a child is cancelled with its parent, not the reverse.
#include <atomic>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/call_context.hpp"

using sagebus::CancelToken;

TEST_CASE("cancel runs each registered function once on the thread that cancels", "[cancel]") {
  CancelToken token;
  std::vector<int> ran;
  std::vector<std::thread::id> threads;
  CHECK(token.on_cancel([&] {
    ran.push_back(1);
    threads.push_back(std::this_thread::get_id());
  }) != 0);
  CHECK(token.on_cancel([&] {
    ran.push_back(2);
    threads.push_back(std::this_thread::get_id());
  }) != 0);
  CHECK(ran.empty());
  CHECK_FALSE(token.cancelled());
  std::thread canceller([&] { token.cancel("first"); });
  const auto canceller_id = canceller.get_id();
  canceller.join();
  CHECK(token.cancelled());
  CHECK(ran == std::vector<int>{1, 2});
  CHECK(threads == std::vector<std::thread::id>{canceller_id, canceller_id});
  token.cancel("second");
  CHECK(ran == std::vector<int>{1, 2});
}

TEST_CASE("on_cancel after cancel runs the function at once and returns 0", "[cancel]") {
  CancelToken token;
  token.cancel();
  int ran = 0;
  CHECK(token.on_cancel([&] { ++ran; }) == 0);
  CHECK(ran == 1);
  token.forget(0);  // harmless
  token.cancel();
  CHECK(ran == 1);
}

TEST_CASE("forget keeps a registered function from running and only that one", "[cancel]") {
  CancelToken token;
  int kept = 0;
  int forgotten = 0;
  const auto a = token.on_cancel([&] { ++forgotten; });
  const auto b = token.on_cancel([&] { ++kept; });
  CHECK(a != b);
  token.forget(a);
  token.forget(a);          // twice: harmless
  token.forget(a + b + 7);  // never given: harmless
  token.forget(0);
  token.cancel();
  CHECK(forgotten == 0);
  CHECK(kept == 1);
  token.forget(b);  // after it ran: harmless
}

TEST_CASE("why is empty until the token is cancelled then the first reason", "[cancel]") {
  SECTION("given") {
    CancelToken token;
    CHECK(token.why().empty());
    token.cancel("the user pressed stop");
    token.cancel("the deadline passed");
    CHECK(token.why() == "the user pressed stop");
  }
  SECTION("the default") {
    CancelToken token;
    token.cancel();
    CHECK(token.why() == "cancelled by the caller");
  }
}

TEST_CASE("copies of a token are the same token and fresh tokens are apart", "[cancel]") {
  CancelToken token;
  const CancelToken copy = token;  // NOLINT(performance-unnecessary-copy-initialization)
  CancelToken other;
  int ran = 0;
  (void)copy.on_cancel([&] { ++ran; });
  token.cancel("through the original");
  CHECK(copy.cancelled());
  CHECK(copy.why() == "through the original");
  CHECK(ran == 1);
  CHECK_FALSE(other.cancelled());
}

TEST_CASE("a child is cancelled with its parent and with its reason but not the reverse",
          "[cancel]") {
  SECTION("the parent cancels its children and theirs") {
    CancelToken parent;
    const CancelToken child = parent.child();
    const CancelToken grandchild = child.child();
    int ran = 0;
    (void)grandchild.on_cancel([&] { ++ran; });
    CHECK_FALSE(child.cancelled());
    parent.cancel("shutting down");
    CHECK(child.cancelled());
    CHECK(child.why() == "shutting down");
    CHECK(grandchild.cancelled());
    CHECK(grandchild.why() == "shutting down");
    CHECK(ran == 1);
  }
  SECTION("a child cancelled alone leaves its parent and siblings") {
    CancelToken parent;
    CancelToken child = parent.child();
    const CancelToken sibling = parent.child();
    child.cancel("this call only");
    CHECK(child.cancelled());
    CHECK(child.why() == "this call only");
    CHECK_FALSE(parent.cancelled());
    CHECK_FALSE(sibling.cancelled());
    parent.cancel("later");
    CHECK(sibling.cancelled());
    CHECK(child.why() == "this call only");  // its first reason stays
  }
  SECTION("a child of a cancelled parent is cancelled at once") {
    CancelToken parent;
    parent.cancel("gone");
    const CancelToken child = parent.child();
    CHECK(child.cancelled());
    CHECK(child.why() == "gone");
  }
}

TEST_CASE("a child outlives its parent and a parent its children", "[cancel]") {
  std::optional<CancelToken> parent(std::in_place);
  CancelToken child = parent->child();
  { const CancelToken short_lived = parent->child(); }
  parent->cancel("with a dead child");  // the dead child's registration does nothing
  CHECK(child.cancelled());

  std::optional<CancelToken> other(std::in_place);
  CancelToken orphan = other->child();
  other.reset();
  CHECK_FALSE(orphan.cancelled());
  orphan.cancel("alone");
  CHECK(orphan.why() == "alone");
}

TEST_CASE("functions run outside the token's lock and may use the token", "[cancel]") {
  CancelToken token;
  bool saw_cancelled = false;
  std::string saw_why;
  int inner = 0;
  (void)token.on_cancel([&] {
    saw_cancelled = token.cancelled();
    saw_why = token.why();
    CHECK(token.on_cancel([&] { ++inner; }) == 0);  // runs at once
    token.cancel("again");                          // does nothing
  });
  token.cancel("outer");
  CHECK(saw_cancelled);
  CHECK(saw_why == "outer");
  CHECK(inner == 1);
  CHECK(token.why() == "outer");
}

TEST_CASE("threads cancelling at once run each function once", "[cancel]") {
  for (int round = 0; round < 50; ++round) {
    CancelToken token;
    std::atomic<int> ran{0};
    for (int i = 0; i < 8; ++i)
      (void)token.on_cancel([&] { ran.fetch_add(1); });
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&token, i] { token.cancel("thread " + std::to_string(i)); });
    for (auto& t : threads)
      t.join();
    CHECK(ran.load() == 8);
    CHECK(token.why().rfind("thread ", 0) == 0);
  }
}

TEST_CASE("forget of a function a cancel on another thread has not reached keeps it from running",
          "[cancel]") {
  // call_context.hpp: "fn does not run after forget() returns (unless it is running on
  // another thread right now)". Here the second function is not running when forget()
  // returns: the cancelling thread is still in the first.
  CancelToken token;
  std::promise<void> first_running;
  std::promise<void> forgotten;
  auto forgotten_future = forgotten.get_future();
  std::atomic<int> second_ran{0};
  (void)token.on_cancel([&] {
    first_running.set_value();
    forgotten_future.wait();
  });
  const auto second = token.on_cancel([&] { second_ran.fetch_add(1); });
  std::thread canceller([&] { token.cancel(); });
  first_running.get_future().wait();
  token.forget(second);
  forgotten.set_value();
  canceller.join();
  CHECK(second_ran.load() == 0);
}
