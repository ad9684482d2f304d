// The call table's count of pending calls per caller (the max-calls-per-client limit):
// exact whichever way a call ends.
#include <chrono>

#include <catch2/catch.hpp>

#include "routing/pending.hpp"

using namespace sagebus::broker;
using namespace std::chrono_literals;

namespace {

const TimePoint t0{};
// Connections, as the Registry's handles would name them.
constexpr ClientHandle kA{0, 1};
constexpr ClientHandle kB{1, 1};
constexpr ClientHandle kNobody{2, 1};
constexpr ClientHandle kInstance{3, 1};
constexpr ClientHandle kI2{4, 1};

Call call_from(ClientHandle caller, CallKind kind = CallKind::request) {
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
  calls.add(call_from(kA));
  calls.add(call_from(kA, CallKind::send));
  calls.add(call_from(kB));
  CHECK(calls.pending_of(kA) == 2);
  CHECK(calls.pending_of(kB) == 1);
  CHECK(calls.pending_of(kNobody) == 0);
}

TEST_CASE("a call stops counting when its outcome is claimed, and erasing it then changes nothing",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  Call* call = calls.add(call_from(kA));
  const CallId id = call->id;
  calls.set_dispatched(*call, kInstance);
  // Its deadline passed: the caller has its outcome, the call stays for the late reply.
  REQUIRE(calls.claim_outcome(*call));
  CHECK(calls.pending_of(kA) == 0);
  CHECK_FALSE(calls.claim_outcome(*call));
  CHECK(calls.pending_of(kA) == 0);
  calls.erase(id);  // the late reply came
  CHECK(calls.pending_of(kA) == 0);
  CHECK(calls.size() == 0);
}

TEST_CASE("a call erased without a claim stops counting", "[pending][per-caller]") {
  PendingCalls calls(100);
  const CallId id = calls.add(call_from(kA))->id;
  calls.add(call_from(kA));
  calls.erase(id);
  CHECK(calls.pending_of(kA) == 1);
  calls.erase(id);  // twice: nothing more
  calls.erase(12345);
  CHECK(calls.pending_of(kA) == 1);
}

TEST_CASE("a retried call (back to waiting, dispatched again) counts once",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  Call* call = calls.add(call_from(kA));
  calls.set_dispatched(*call, kInstance);
  calls.set_waiting(*call);  // its instance was lost
  calls.set_dispatched(*call, kI2);
  calls.set_deadline(*call, t0 + 2s);
  CHECK(calls.pending_of(kA) == 1);
  REQUIRE(calls.claim_outcome(*call));
  calls.erase(call->id);
  CHECK(calls.pending_of(kA) == 0);
}

TEST_CASE("expired deadlines do not change the count until the outcome is claimed",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  calls.add(call_from(kA));
  const auto expired = calls.take_expired(t0 + 5s);
  REQUIRE(expired.size() == 1);
  CHECK(calls.pending_of(kA) == 1);
  REQUIRE(calls.claim_outcome(*calls.find(expired[0])));
  calls.erase(expired[0]);
  CHECK(calls.pending_of(kA) == 0);
}

TEST_CASE("a caller lost: claiming every outcome of its calls brings its count to 0",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  for (int i = 0; i < 5; ++i)
    calls.add(call_from(kA));
  calls.add(call_from(kB));
  calls.for_each([&](Call& c) {
    if (c.caller == kA) calls.claim_outcome(c);
  });
  CHECK(calls.pending_of(kA) == 0);
  CHECK(calls.pending_of(kB) == 1);
  CHECK(calls.size() == 6);  // the dispatched ones stay until their instances answer
}

TEST_CASE("a claim made on the call itself still ends its count at erase",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  Call* call = calls.add(call_from(kA));
  const CallId id = call->id;
  REQUIRE(call->claim_outcome());
  CHECK(calls.pending_of(kA) == 1);  // the table was not told
  calls.erase(id);
  CHECK(calls.pending_of(kA) == 0);
}

TEST_CASE("a connection new in a gone one's handle slot counts from 0, not the gone one's calls",
          "[pending][per-caller]") {
  PendingCalls calls(100);
  constexpr ClientHandle gone{7, 1};
  constexpr ClientHandle next{7, 2};  // the slot's next owner
  const CallId old_call = calls.add(call_from(gone))->id;
  calls.add(call_from(gone));
  CHECK(calls.pending_of(next) == 0);
  const CallId new_call = calls.add(call_from(next))->id;
  CHECK(calls.pending_of(next) == 1);
  CHECK(calls.pending_of(gone) == 0);  // stale: it resolves to nothing any more
  calls.erase(old_call);               // the gone caller's call ends
  CHECK(calls.pending_of(next) == 1);
  calls.erase(new_call);
  CHECK(calls.pending_of(next) == 0);
}

TEST_CASE("a call without a caller counts for no one", "[pending][per-caller]") {
  PendingCalls calls(100);
  calls.add(call_from(ClientHandle{}));
  CHECK(calls.pending_of(ClientHandle{}) == 0);
  CHECK(calls.pending_of(ClientHandle{0, 1}) == 0);
}
