// The call table: every caller gets exactly one outcome, deadlines come out in order,
// a reply counts only from the instance the call was given to, a caller's call is found
// by its own id, and a reply after a cancel is told apart.
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "routing/pending.hpp"

using namespace sagebus::broker;
using namespace std::chrono_literals;

namespace {

const TimePoint t0{};
// Connections, as the Registry's handles would name them.
constexpr ClientHandle kA{0, 1};
constexpr ClientHandle kB{1, 1};
constexpr ClientHandle kI1{2, 1};
constexpr ClientHandle kI2{3, 1};

Call make_call(ClientHandle caller, std::uint64_t caller_id, TimePoint deadline) {
  Call c;
  c.caller = caller;
  c.caller_id = caller_id;
  c.service = "memory";
  c.method = "retrieve";
  c.accepted = t0;
  c.deadline = deadline;
  return c;
}

}  // namespace

TEST_CASE("each call gets a distinct dispatch id, never 0", "[pending]") {
  PendingCalls calls(10);
  const CallId a = calls.add(make_call(kA, 1, t0 + 1s))->id;
  const CallId b = calls.add(make_call(kA, 1, t0 + 1s))->id;  // same caller id: still distinct
  CHECK(a != 0);
  CHECK(b != 0);
  CHECK(a != b);
}

TEST_CASE("a call's outcome can be claimed exactly once", "[pending]") {
  PendingCalls calls(10);
  Call* call = calls.add(make_call(kA, 1, t0 + 1s));
  CHECK(call->claim_outcome());
  CHECK_FALSE(call->claim_outcome());
  CHECK_FALSE(call->claim_outcome());
  CHECK(call->outcome_claimed());
}

TEST_CASE("a full table refuses a new call", "[pending]") {
  PendingCalls calls(2);
  REQUIRE(calls.add(make_call(kA, 1, t0 + 1s)) != nullptr);
  REQUIRE(calls.add(make_call(kA, 2, t0 + 1s)) != nullptr);
  CHECK(calls.full());
  CHECK(calls.add(make_call(kA, 3, t0 + 1s)) == nullptr);
  CHECK(calls.size() == 2);
}

TEST_CASE("deadlines expire earliest first, each once", "[pending]") {
  PendingCalls calls(10);
  const CallId late = calls.add(make_call(kA, 1, t0 + 3s))->id;
  const CallId early = calls.add(make_call(kA, 2, t0 + 1s))->id;
  const CallId middle = calls.add(make_call(kA, 3, t0 + 2s))->id;

  CHECK(calls.next_deadline() == t0 + 1s);
  CHECK(calls.take_expired(t0 + 500ms).empty());
  CHECK(calls.take_expired(t0 + 2s) == std::vector<CallId>{early, middle});
  CHECK(calls.take_expired(t0 + 2s).empty());  // not returned twice
  CHECK(calls.take_expired(t0 + 10s) == std::vector<CallId>{late});
}

TEST_CASE("finished calls are skipped by the deadline heap without being searched for",
          "[pending]") {
  PendingCalls calls(10);
  const CallId replied = calls.add(make_call(kA, 1, t0 + 1s))->id;
  Call* answered = calls.add(make_call(kA, 2, t0 + 2s));
  const CallId open = calls.add(make_call(kA, 3, t0 + 3s))->id;

  calls.erase(replied);                // its reply came
  REQUIRE(answered->claim_outcome());  // e.g. its instance was lost
  CHECK(calls.heap_size() == 3);       // lazily deleted: still in the heap

  CHECK(calls.next_deadline() == t0 + 3s);
  CHECK(calls.take_expired(t0 + 5s) == std::vector<CallId>{open});
}

TEST_CASE("the deadline heap is compacted when finished calls pile up", "[pending]") {
  PendingCalls calls(100000);
  for (int i = 0; i < 5000; ++i) {
    const CallId id = calls.add(make_call(kA, 1, t0 + 1h))->id;
    calls.erase(id);  // fast replies, long deadlines
  }
  CHECK(calls.size() == 0);
  CHECK(calls.heap_size() < 1100);  // not 5000
}

TEST_CASE("a dispatched call past its deadline keeps its slot until its late reply", "[pending]") {
  PendingCalls calls(10);
  Call* call = calls.add(make_call(kA, 1, t0 + 1s));
  const CallId id = call->id;
  calls.set_dispatched(*call, kI1);

  // The deadline passes: the caller gets DEADLINE_EXCEEDED, the call stays.
  REQUIRE(calls.take_expired(t0 + 2s) == std::vector<CallId>{id});
  REQUIRE(calls.find(id)->claim_outcome());
  CHECK(calls.size() == 1);
  CHECK(calls.find(id)->state == CallState::dispatched);
  CHECK_FALSE(calls.next_deadline());  // nothing left to time out

  // The late reply is accepted (it frees the instance's slot) but cannot be a second
  // outcome.
  Call* found = nullptr;
  REQUIRE(calls.check_reply(id, kI1, &found) == PendingCalls::ReplyCheck::accepted);
  CHECK(found == calls.find(id));
  CHECK_FALSE(found->claim_outcome());
}

TEST_CASE("a reply from a connection not given the call is rejected and changes nothing",
          "[pending]") {
  PendingCalls calls(10);
  Call* call = calls.add(make_call(kA, 1, t0 + 1s));
  const CallId id = call->id;
  calls.set_dispatched(*call, kI1);

  Call* found = nullptr;
  CHECK(calls.check_reply(id, kI2, &found) == PendingCalls::ReplyCheck::wrong_sender);
  CHECK(found == nullptr);
  CHECK_FALSE(calls.find(id)->outcome_claimed());
  CHECK(calls.find(id)->instance == kI1);
  CHECK(calls.check_reply(id, kI1, &found) == PendingCalls::ReplyCheck::accepted);
}

TEST_CASE("a reply for an id never issued is rejected", "[pending]") {
  PendingCalls calls(10);
  calls.add(make_call(kA, 1, t0 + 1s));
  Call* found = nullptr;
  CHECK(calls.check_reply(12345, kI1, &found) == PendingCalls::ReplyCheck::unknown_id);
}

TEST_CASE("a reply for a call still waiting for an instance is rejected", "[pending]") {
  PendingCalls calls(10);
  const CallId id = calls.add(make_call(kA, 1, t0 + 1s))->id;
  Call* found = nullptr;
  CHECK(calls.check_reply(id, kI1, &found) == PendingCalls::ReplyCheck::wrong_sender);
}

TEST_CASE("a call sent back to waiting forgets its instance", "[pending]") {
  PendingCalls calls(10);
  Call* call = calls.add(make_call(kA, 1, t0 + 1s));
  calls.set_dispatched(*call, kI1);
  calls.set_waiting(*call);
  CHECK(call->state == CallState::waiting);
  Call* found = nullptr;
  CHECK(calls.check_reply(call->id, kI1, &found) == PendingCalls::ReplyCheck::wrong_sender);
}

TEST_CASE("an idempotent call's kept payload shares its buffer with the copy sent", "[pending]") {
  const std::string big(4096, 'p');
  zmq::message_t original(big.data(), big.size());
  zmq::message_t sent;
  sent.copy(original);
  CHECK(sent.data() == original.data());  // refcounted, not copied
  CHECK(original.to_string() == big);
}

TEST_CASE("a moved deadline replaces the earlier one", "[pending]") {
  PendingCalls calls(10);
  Call* held = calls.add(make_call(kA, 1, t0 + 1s));  // e.g. a send held for 1 s
  const CallId id = held->id;
  calls.set_deadline(*held, t0 + 5s);  // delivered: now the send's own deadline counts
  CHECK(calls.next_deadline() == t0 + 5s);
  CHECK(calls.take_expired(t0 + 2s).empty());
  CHECK(calls.take_expired(t0 + 5s) == std::vector<CallId>{id});
}

TEST_CASE("a deadline moved away and back expires once", "[pending]") {
  PendingCalls calls(10);
  Call* call = calls.add(make_call(kA, 1, t0 + 1s));
  const CallId id = call->id;
  calls.set_deadline(*call, t0 + 2s);
  calls.set_deadline(*call, t0 + 1s);
  CHECK(calls.take_expired(t0 + 3s) == std::vector<CallId>{id});
}

TEST_CASE("a call entered after others ended starts blank, whatever they held", "[pending]") {
  PendingCalls calls(10);
  std::vector<CallId> ended;
  for (int i = 0; i < 3; ++i) {
    Call c = make_call(kA, 7, t0 + 1s);
    c.kind = CallKind::send;
    c.routing_key = std::string(100, 'k');  // heap-allocated strings, to be reused
    c.traceparent = "trace";
    c.headers.emplace_back("h", "v");
    c.idempotent = true;
    c.wait_for_ready = true;
    c.stream = true;
    c.credit = 9;
    c.asked = 4;
    c.chunks = 3;
    c.parent = 12;
    c.payload.emplace_back("payload", 7);
    c.peer = "node-7";
    c.send_deadline = t0 + 2s;
    c.retried = true;
    c.lost_reason = "lost";
    c.caller_lost = true;
    Call* call = calls.add(std::move(c));
    calls.set_dispatched(*call, kI1);
    REQUIRE(calls.claim_outcome(*call));
    ended.push_back(call->id);
  }
  for (const CallId id : ended)
    calls.erase(id);

  Call* call = calls.add_in_place([](Call& blank) {
    CHECK(blank.id == 0);
    CHECK(blank.kind == CallKind::request);
    CHECK_FALSE(blank.caller);
    CHECK(blank.caller_id == 0);
    CHECK(blank.service.empty());
    CHECK(blank.method.empty());
    CHECK(blank.routing_key.empty());
    CHECK(blank.traceparent.empty());
    CHECK(blank.headers.empty());
    CHECK_FALSE(blank.idempotent);
    CHECK_FALSE(blank.wait_for_ready);
    CHECK_FALSE(blank.stream);
    CHECK(blank.credit == 0);
    CHECK(blank.asked == 0);
    CHECK(blank.chunks == 0);
    CHECK(blank.parent == 0);
    CHECK(blank.payload.empty());
    CHECK(blank.accepted == TimePoint{});
    CHECK(blank.deadline == TimePoint{});
    CHECK(blank.peer.empty());
    CHECK(blank.send_deadline == TimePoint{});
    CHECK(blank.state == CallState::waiting);
    CHECK_FALSE(blank.instance);
    CHECK_FALSE(blank.retried);
    CHECK(blank.lost_reason.empty());
    CHECK_FALSE(blank.caller_lost);
    CHECK(blank.stats == nullptr);
    CHECK_FALSE(blank.outcome_claimed());
    blank.caller = kB;
    blank.deadline = t0 + 1s;
  });
  REQUIRE(call != nullptr);
  CHECK(calls.find(call->id) == call);
  CHECK(calls.pending_of(kB) == 1);
  CHECK(calls.pending_of(kA) == 0);
  CHECK(calls.next_deadline() == t0 + 1s);
  CHECK(calls.claim_outcome(*call));  // its outcome is its own, not the ended calls'
}

TEST_CASE("room says how many more calls the table takes", "[pending]") {
  PendingCalls calls(3);
  CHECK(calls.room() == 3);
  const CallId id = calls.add(make_call(kA, 1, t0 + 1s))->id;
  CHECK(calls.room() == 2);
  calls.add(make_call(kA, 2, t0 + 1s));
  calls.add(make_call(kA, 3, t0 + 1s));
  CHECK(calls.room() == 0);
  calls.set_capacity(1);  // lowered below what it holds
  CHECK(calls.room() == 0);
  calls.set_capacity(3);
  calls.erase(id);
  CHECK(calls.room() == 1);
}

TEST_CASE(
    "a gather is found by its caller's id and counted for it and its parts added after it have "
    "the ids that follow and are neither",
    "[pending][gather]") {
  PendingCalls calls(10);
  // Ids of ended calls are not reused: the parts still follow their gather.
  calls.erase(calls.add(make_call(kA, 1, t0 + 1s))->id);
  Call gather = make_call(kA, 7, t0 + 1s);
  gather.kind = CallKind::gather;
  gather.asked = 2;
  const CallId gid = calls.add(std::move(gather))->id;
  std::vector<CallId> parts;
  for (int i = 0; i < 2; ++i)
    parts.push_back(calls
                        .add_in_place([&](Call& c) {
                          c.parent = gid;
                          c.caller_id = 7;  // no caller: its outcome is the gather's
                          c.deadline = t0 + 1s;
                        })
                        ->id);
  CHECK(parts == std::vector<CallId>{gid + 1, gid + 2});
  REQUIRE(calls.find_by_caller(kA, 7) != nullptr);
  CHECK(calls.find_by_caller(kA, 7)->id == gid);
  CHECK(calls.indexed() == 1);
  CHECK(calls.pending_of(kA) == 1);
  const PendingCalls& read_only = calls;
  REQUIRE(read_only.find(gid + 1) != nullptr);
  CHECK(read_only.find(gid + 1)->parent == gid);
  // Every one of them has the deadline; the broker settles them together.
  std::vector<CallId> expired = calls.take_expired(t0 + 1s);
  std::sort(expired.begin(), expired.end());
  CHECK(expired == std::vector<CallId>{gid, gid + 1, gid + 2});
}

TEST_CASE("a full table does not fill a call in place", "[pending]") {
  PendingCalls calls(1);
  REQUIRE(calls.add(make_call(kA, 1, t0 + 1s)) != nullptr);
  bool filled = false;
  CHECK(calls.add_in_place([&](Call&) { filled = true; }) == nullptr);
  CHECK_FALSE(filled);
}

TEST_CASE("a request call is found by its caller and the caller's id until it is erased",
          "[pending][by-caller]") {
  PendingCalls calls(10);
  const CallId first = calls.add(make_call(kA, 7, t0 + 1s))->id;
  const CallId other = calls.add(make_call(kB, 7, t0 + 1s))->id;  // another caller, same id
  REQUIRE(calls.find_by_caller(kA, 7) != nullptr);
  CHECK(calls.find_by_caller(kA, 7)->id == first);
  CHECK(calls.find_by_caller(kB, 7)->id == other);
  CHECK(calls.find_by_caller(kA, 8) == nullptr);
  CHECK(calls.find_by_caller(kI1, 7) == nullptr);

  calls.erase(first);
  CHECK(calls.find_by_caller(kA, 7) == nullptr);
  CHECK(calls.find_by_caller(kB, 7)->id == other);
  CHECK(calls.indexed() == 1);
}

TEST_CASE("a send is not found by its caller's id", "[pending][by-caller]") {
  PendingCalls calls(10);
  Call send = make_call(kA, 7, t0 + 1s);
  send.kind = CallKind::send;
  calls.add(std::move(send));
  CHECK(calls.find_by_caller(kA, 7) == nullptr);
  CHECK(calls.indexed() == 0);
}

TEST_CASE("a call of a gone connection is not found for one that took its handle slot",
          "[pending][by-caller]") {
  PendingCalls calls(10);
  constexpr ClientHandle kGone{0, 1};
  constexpr ClientHandle kNewInSlot{0, 2};
  const CallId old_call = calls.add(make_call(kGone, 5, t0 + 1s))->id;
  CHECK(calls.find_by_caller(kNewInSlot, 5) == nullptr);
  const CallId new_call = calls.add(make_call(kNewInSlot, 5, t0 + 1s))->id;
  CHECK(calls.find_by_caller(kNewInSlot, 5)->id == new_call);
  CHECK(calls.find_by_caller(kGone, 5)->id == old_call);
  calls.erase(old_call);
  CHECK(calls.find_by_caller(kNewInSlot, 5)->id == new_call);
}

TEST_CASE("two calls under one caller id: the first is found until it is erased",
          "[pending][by-caller]") {
  PendingCalls calls(10);
  const CallId first = calls.add(make_call(kA, 7, t0 + 1s))->id;
  const CallId second = calls.add(make_call(kA, 7, t0 + 1s))->id;
  CHECK(calls.find_by_caller(kA, 7)->id == first);
  calls.erase(second);  // not the one indexed: the index keeps the first
  CHECK(calls.find_by_caller(kA, 7)->id == first);
  calls.erase(first);
  CHECK(calls.find_by_caller(kA, 7) == nullptr);
  CHECK(calls.indexed() == 0);
}

TEST_CASE("calls added after others ended reuse the index's nodes under their own keys",
          "[pending][by-caller]") {
  PendingCalls calls(100);
  for (int round = 0; round < 3; ++round) {
    std::vector<CallId> ids;
    for (std::uint64_t n = 0; n < 20; ++n)
      ids.push_back(
          calls.add(make_call(kA, 100 * static_cast<std::uint64_t>(round) + n, t0 + 1s))->id);
    CHECK(calls.indexed() == 20);
    for (std::uint64_t n = 0; n < 20; ++n) {
      const Call* found = calls.find_by_caller(kA, 100 * static_cast<std::uint64_t>(round) + n);
      REQUIRE(found != nullptr);
      CHECK(found->id == ids[n]);
    }
    if (round > 0)
      CHECK(calls.find_by_caller(kA, 100 * static_cast<std::uint64_t>(round - 1)) == nullptr);
    for (const CallId id : ids)
      calls.erase(id);
    CHECK(calls.indexed() == 0);
  }
}

TEST_CASE("a reply after a cancel is told apart from one nobody was given", "[pending][cancel]") {
  PendingCalls calls(10);
  Call* dispatched = calls.add(make_call(kA, 1, t0 + 1s));
  calls.set_dispatched(*dispatched, kI1);
  const CallId id = dispatched->id;
  const CallId waiting = calls.add(make_call(kA, 2, t0 + 1s))->id;
  calls.erase_cancelled(id);
  calls.erase_cancelled(waiting);

  Call* out = nullptr;
  CHECK(calls.find(id) == nullptr);
  CHECK(calls.find_by_caller(kA, 1) == nullptr);
  CHECK(calls.check_reply(id, kI1, &out) == PendingCalls::ReplyCheck::cancelled);
  CHECK(calls.check_reply(id, kI2, &out) == PendingCalls::ReplyCheck::unknown_id);
  // A call that waited was held by no instance: nothing it is sent can be an answer.
  CHECK(calls.check_reply(waiting, kI1, &out) == PendingCalls::ReplyCheck::unknown_id);
  CHECK(out == nullptr);
}

TEST_CASE("the last kRecentCancels cancelled dispatches are remembered", "[pending][cancel]") {
  PendingCalls calls(10);
  std::vector<CallId> cancelled;
  for (std::size_t n = 0; n <= PendingCalls::kRecentCancels; ++n) {
    Call* call = calls.add(make_call(kA, n, t0 + 1s));
    calls.set_dispatched(*call, kI1);
    cancelled.push_back(call->id);
    calls.erase_cancelled(call->id);
  }
  Call* out = nullptr;
  CHECK(calls.check_reply(cancelled.front(), kI1, &out) == PendingCalls::ReplyCheck::unknown_id);
  CHECK(calls.check_reply(cancelled[1], kI1, &out) == PendingCalls::ReplyCheck::cancelled);
  CHECK(calls.check_reply(cancelled.back(), kI1, &out) == PendingCalls::ReplyCheck::cancelled);
  CHECK(calls.size() == 0);
}
