// The call table's count of pending calls per caller (the max-calls-per-client limit):
// exact whichever way a call ends.
#include <chrono>

#include <catch2/catch.hpp>

#include "pending.hpp"

using namespace sagebus::broker;
using namespace std::chrono_literals;

namespace {

const TimePoint t0{};

Call call_from(const RoutingId& caller, CallKind kind = CallKind::request) {
  Call c;
  c.kind = kind;
  c.caller = caller;
  c.service = "memory";
  c.method = "retrieve";
  c.accepted = t0;
  c.deadline = t0 + 1s;
  return c;
}

}  // namespace

TEST_CASE("a caller's calls and sends count as pending from add", "[pending][per-caller]") {
  PendingCalls calls(100);
  calls.add(call_from("a"));
  calls.add(call_from("a", CallKind::send));
  calls.add(call_from("b"));
  CHECK(calls.pending_of("a") == 2);
  CHECK(calls.pending_of("b") == 1);
  CHECK(calls.pending_of("nobody") == 0);
}

TEST_CASE("a call stops counting when its outcome is claimed, and erasing it then changes nothing",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  Call* call = calls.add(call_from("a"));
  const CallId id = call->id;
  calls.set_dispatched(*call, "instance");
  // Its deadline passed: the caller has its outcome, the call stays for the late reply.
  REQUIRE(calls.claim_outcome(*call));
  CHECK(calls.pending_of("a") == 0);
  CHECK_FALSE(calls.claim_outcome(*call));
  CHECK(calls.pending_of("a") == 0);
  calls.erase(id);  // the late reply came
  CHECK(calls.pending_of("a") == 0);
  CHECK(calls.size() == 0);
}

TEST_CASE("a call erased without a claim stops counting", "[pending][per-caller]") {
  PendingCalls calls(100);
  const CallId id = calls.add(call_from("a"))->id;
  calls.add(call_from("a"));
  calls.erase(id);
  CHECK(calls.pending_of("a") == 1);
  calls.erase(id);  // twice: nothing more
  calls.erase(12345);
  CHECK(calls.pending_of("a") == 1);
}

TEST_CASE("a retried call (back to waiting, dispatched again) counts once",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  Call* call = calls.add(call_from("a"));
  calls.set_dispatched(*call, "i1");
  calls.set_waiting(*call);  // its instance was lost
  calls.set_dispatched(*call, "i2");
  calls.set_deadline(*call, t0 + 2s);
  CHECK(calls.pending_of("a") == 1);
  REQUIRE(calls.claim_outcome(*call));
  calls.erase(call->id);
  CHECK(calls.pending_of("a") == 0);
}

TEST_CASE("expired deadlines do not change the count until the outcome is claimed",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  calls.add(call_from("a"));
  const auto expired = calls.take_expired(t0 + 5s);
  REQUIRE(expired.size() == 1);
  CHECK(calls.pending_of("a") == 1);
  REQUIRE(calls.claim_outcome(*calls.find(expired[0])));
  calls.erase(expired[0]);
  CHECK(calls.pending_of("a") == 0);
}

TEST_CASE("a caller lost: claiming every outcome of its calls brings its count to 0",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  for (int i = 0; i < 5; ++i)
    calls.add(call_from("gone"));
  calls.add(call_from("stays"));
  calls.for_each([&](Call& c) {
    if (c.caller == "gone") calls.claim_outcome(c);
  });
  CHECK(calls.pending_of("gone") == 0);
  CHECK(calls.pending_of("stays") == 1);
  CHECK(calls.size() == 6);  // the dispatched ones stay until their instances answer
}

TEST_CASE("a claim made on the call itself still ends its count at erase",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  Call* call = calls.add(call_from("a"));
  const CallId id = call->id;
  REQUIRE(call->claim_outcome());
  CHECK(calls.pending_of("a") == 1);  // the table was not told
  calls.erase(id);
  CHECK(calls.pending_of("a") == 0);
}
