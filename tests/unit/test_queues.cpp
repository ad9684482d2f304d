// The legacy queues (daemon/routing/queues.hpp): FIFO, waiting readers and putters, the depth
// bound, acknowledgements, and items going back to the front when their reader leaves.
#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "routing/queues.hpp"

using namespace sagebus;
using namespace sagebus::broker;
using namespace std::chrono_literals;

namespace {

const TimePoint t0{};

Frames item(const std::string& text) {
  Frames f;
  f.emplace_back(text.data(), text.size());
  return f;
}

std::string text(const QueueAnswer& a) {
  return a.payload.empty() ? std::string() : a.payload.front().to_string();
}

QueueLimits limits(std::size_t depth = 100) {
  QueueLimits l;
  l.max_depth = depth;
  l.max_queues = 10;
  l.max_waiting = 10;
  l.max_unacked = 10;
  return l;
}

struct Fixture {
  LegacyQueues queues{limits(), {}};
  QueueEffects fx;

  void put(const std::string& what, const RoutingId& from = "P", std::uint64_t id = 1,
           TimePoint deadline = t0 + 1s) {
    queues.put(from, id, "jobs", item(what), t0, deadline, fx);
  }
  // The answer to a get that is served at once.
  QueueAnswer get(const RoutingId& from, std::uint64_t ack = 0) {
    fx = {};
    queues.get(from, 9, "jobs", ack, t0, t0 + 1s, fx);
    REQUIRE(fx.answers.size() == 1);
    return std::move(fx.answers.front());
  }
};

}  // namespace

TEST_CASE("items come out in the order they were put", "[queues]") {
  Fixture f;
  f.put("1");
  f.put("2");
  f.put("3");
  CHECK(f.queues.size("jobs") == 3);
  CHECK(text(f.get("R")) == "1");
  CHECK(text(f.get("R")) == "2");
  CHECK(text(f.get("R")) == "3");
  CHECK(f.queues.size("jobs") == 0);
}

TEST_CASE("a put is answered OK and its item is published on the queue's topic", "[queues]") {
  LegacyQueues queues(limits(), {{"mapped", "new.home"}});
  QueueEffects fx;
  queues.put("P", 4, "jobs", item("x"), t0, t0 + 1s, fx);
  queues.put("P", 5, "mapped", item("y"), t0, t0 + 1s, fx);
  REQUIRE(fx.answers.size() == 2);
  CHECK(fx.answers[0].to == "P");
  CHECK(fx.answers[0].id == 4);
  CHECK(fx.answers[0].status == wire::OK);
  REQUIRE(fx.publishes.size() == 2);
  CHECK(fx.publishes[0].topic == "legacy.jobs");
  CHECK(fx.publishes[1].topic == "new.home");
  CHECK(fx.publishes[1].payload.front().to_string() == "y");
  CHECK(fx.puts == 2);
}

TEST_CASE("the published copy and the queued item share one buffer", "[queues]") {
  LegacyQueues queues(limits(), {});
  QueueEffects fx;
  queues.put("P", 1, "jobs", item(std::string(4096, 'z')), t0, t0 + 1s, fx);
  const void* published = fx.publishes.front().payload.front().data();
  fx = {};
  queues.get("R", 2, "jobs", 0, t0, t0 + 1s, fx);
  CHECK(fx.answers.front().payload.front().data() == published);
}

TEST_CASE("gets on an empty queue wait and are served oldest first", "[queues]") {
  Fixture f;
  f.queues.get("R1", 11, "jobs", 0, t0, t0 + 1s, f.fx);
  f.queues.get("R2", 12, "jobs", 0, t0, t0 + 1s, f.fx);
  CHECK(f.fx.answers.empty());
  CHECK(f.queues.queues().at("jobs").readers.size() == 2);

  f.put("first");
  REQUIRE(f.fx.answers.size() == 2);  // the put's OK and R1's item
  CHECK(f.fx.answers[1].to == "R1");
  CHECK(f.fx.answers[1].id == 11);
  CHECK(text(f.fx.answers[1]) == "first");
  CHECK(f.fx.answers[1].tag != 0);

  f.fx = {};
  f.put("second");
  REQUIRE(f.fx.answers.size() == 2);
  CHECK(f.fx.answers[1].to == "R2");
  CHECK(text(f.fx.answers[1]) == "second");
  CHECK(f.queues.size("jobs") == 0);
}

TEST_CASE("a waiting get ends DEADLINE_EXCEEDED at its deadline", "[queues]") {
  Fixture f;
  f.queues.get("R", 3, "jobs", 0, t0, t0 + 500ms, f.fx);
  CHECK(f.queues.next_deadline() == t0 + 500ms);
  f.queues.expire(t0 + 499ms, f.fx);
  CHECK(f.fx.answers.empty());
  f.queues.expire(t0 + 500ms, f.fx);
  REQUIRE(f.fx.answers.size() == 1);
  CHECK(f.fx.answers[0].status == wire::DEADLINE_EXCEEDED);
  CHECK(f.fx.answers[0].id == 3);
  CHECK_FALSE(f.queues.next_deadline());
  CHECK(f.queues.queues().at("jobs").readers.empty());
}

TEST_CASE("a get with no time to wait on an empty queue ends at once", "[queues]") {
  Fixture f;
  f.queues.get("R", 3, "jobs", 0, t0, t0, f.fx);
  REQUIRE(f.fx.answers.size() == 1);
  CHECK(f.fx.answers[0].status == wire::DEADLINE_EXCEEDED);
}

TEST_CASE(
    "a full queue makes puts wait, lets them in in order as room frees, and answers "
    "OVERLOADED at the deadline",
    "[queues]") {
  LegacyQueues queues(limits(2), {});
  QueueEffects fx;
  queues.put("P", 1, "jobs", item("1"), t0, t0 + 1s, fx);
  queues.put("P", 2, "jobs", item("2"), t0, t0 + 1s, fx);
  queues.put("P", 3, "jobs", item("3"), t0, t0 + 1s, fx);  // waits
  queues.put("P", 4, "jobs", item("4"), t0, t0 + 2s, fx);  // waits
  CHECK(fx.answers.size() == 2);
  CHECK(fx.publishes.size() == 2);  // a waiting put is not published yet
  CHECK(queues.queues().at("jobs").writers.size() == 2);

  fx = {};
  queues.get("R", 10, "jobs", 0, t0, t0 + 1s, fx);  // takes "1": room for put 3
  REQUIRE(fx.answers.size() == 2);
  CHECK(text(fx.answers[0]) == "1");
  CHECK(fx.answers[1].id == 3);
  CHECK(fx.answers[1].status == wire::OK);
  CHECK(fx.publishes.size() == 1);
  CHECK(queues.size("jobs") == 2);

  fx = {};
  queues.expire(t0 + 2s, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].id == 4);
  CHECK(fx.answers[0].status == wire::OVERLOADED);
  CHECK_THAT(fx.answers[0].message, Catch::Contains("stayed full"));

  fx = {};
  std::vector<std::string> order;
  for (int i = 0; i < 2; ++i) {
    queues.get("R", 11, "jobs", 0, t0, t0 + 1s, fx);
    order.push_back(text(fx.answers.back()));
  }
  CHECK(order == std::vector<std::string>{"2", "3"});
}

TEST_CASE("a put on a full queue with no time to wait is OVERLOADED at once", "[queues]") {
  LegacyQueues queues(limits(1), {});
  QueueEffects fx;
  queues.put("P", 1, "jobs", item("1"), t0, t0 + 1s, fx);
  queues.put("P", 2, "jobs", item("2"), t0, t0, fx);
  REQUIRE(fx.answers.size() == 2);
  CHECK(fx.answers[1].status == wire::OVERLOADED);
  CHECK(queues.size("jobs") == 1);
}

TEST_CASE("an acknowledged item is gone for good", "[queues]") {
  Fixture f;
  f.put("1");
  const std::uint64_t tag = f.get("R").tag;
  CHECK(f.queues.unacked("R") == 1);
  CHECK_FALSE(f.queues.ack("OTHER", tag, f.fx));  // not its item
  CHECK(f.queues.ack("R", tag, f.fx));
  CHECK_FALSE(f.queues.ack("R", tag, f.fx));  // already done
  CHECK(f.queues.unacked("R") == 0);
  f.fx = {};
  f.queues.remove_client("R", f.fx);
  CHECK(f.queues.size("jobs") == 0);
  CHECK(f.fx.redeliveries == 0);
}

TEST_CASE("a get acknowledges the tag it carries before taking the next item", "[queues]") {
  Fixture f;
  f.put("1");
  f.put("2");
  const std::uint64_t first = f.get("R").tag;
  const QueueAnswer second = f.get("R", first);
  CHECK(text(second) == "2");
  CHECK(second.tag != first);
  CHECK(f.queues.unacked("R") == 1);
  CHECK(f.queues.queues().at("jobs").unacked == 1);
}

TEST_CASE("a get cannot acknowledge another connection's item", "[queues]") {
  Fixture f;
  f.put("1");
  f.put("2");
  const std::uint64_t tag = f.get("R1").tag;
  f.get("R2", tag);
  CHECK(f.queues.unacked("R1") == 1);
}

TEST_CASE("the items of a reader that leaves go back to the front in the order it took them",
          "[queues]") {
  Fixture f;
  for (const char* s : {"1", "2", "3", "4"})
    f.put(s);
  f.get("R");  // 1
  f.get("R");  // 2
  f.get("S");  // 3, taken by another reader
  f.fx = {};
  f.queues.remove_client("R", f.fx);
  CHECK(f.fx.redeliveries == 2);
  CHECK(f.queues.size("jobs") == 3);
  CHECK(f.queues.queues().at("jobs").redeliveries == 2);
  CHECK(text(f.get("T")) == "1");
  CHECK(text(f.get("T")) == "2");
  CHECK(text(f.get("T")) == "4");
  CHECK(f.queues.unacked("S") == 1);
}

TEST_CASE("items put back go to the longest-waiting reader first", "[queues]") {
  LegacyQueues queues(limits(), {});
  QueueEffects fx;
  queues.put("P", 1, "jobs", item("1"), t0, t0 + 1s, fx);
  queues.get("R", 2, "jobs", 0, t0, t0 + 1s, fx);
  queues.get("W1", 3, "jobs", 0, t0, t0 + 1s, fx);  // both wait: the queue is empty
  queues.get("W2", 4, "jobs", 0, t0, t0 + 1s, fx);
  fx = {};
  queues.remove_client("R", fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].to == "W1");
  CHECK(text(fx.answers[0]) == "1");
}

TEST_CASE("a reader that leaves loses its waiting gets, a putter its waiting puts", "[queues]") {
  LegacyQueues queues(limits(1), {});
  QueueEffects fx;
  queues.get("R", 1, "empty", 0, t0, t0 + 1s, fx);
  queues.put("P", 2, "full", item("1"), t0, t0 + 1s, fx);
  queues.put("P", 3, "full", item("2"), t0, t0 + 1s, fx);  // waits
  fx = {};
  queues.remove_client("R", fx);
  queues.remove_client("P", fx);
  CHECK(fx.answers.empty());
  CHECK(queues.queues().at("empty").readers.empty());
  CHECK(queues.queues().at("full").writers.empty());
  CHECK_FALSE(queues.next_deadline());
}

TEST_CASE("an item whose answer could not be sent goes back to the front", "[queues]") {
  Fixture f;
  f.put("1");
  f.put("2");
  const std::uint64_t tag = f.get("R").tag;
  f.fx = {};
  f.queues.give_back(tag, f.fx);
  CHECK(f.queues.unacked("R") == 0);
  CHECK(f.fx.redeliveries == 0);
  CHECK(text(f.get("S")) == "1");
}

TEST_CASE("delivery tags are unique", "[queues]") {
  Fixture f;
  for (int i = 0; i < 5; ++i)
    f.put(std::to_string(i));
  std::vector<std::uint64_t> tags;
  for (int i = 0; i < 5; ++i)
    tags.push_back(f.get("R").tag);
  std::sort(tags.begin(), tags.end());
  CHECK(std::adjacent_find(tags.begin(), tags.end()) == tags.end());
  CHECK(tags.front() != 0);
}

TEST_CASE("a connection holding too many unacknowledged items is refused more", "[queues]") {
  Fixture f;
  for (int i = 0; i < 11; ++i)
    f.put(std::to_string(i));
  for (int i = 0; i < 10; ++i)
    f.get("R");
  const QueueAnswer refused = f.get("R");
  CHECK(refused.status == wire::OVERLOADED);
  CHECK(f.queues.size("jobs") == 1);
}

TEST_CASE("when the table of queues is full, an idle queue makes room, a busy one does not",
          "[queues]") {
  QueueLimits l = limits();
  l.max_queues = 2;
  LegacyQueues queues(l, {});
  QueueEffects fx;
  queues.put("P", 1, "busy", item("1"), t0, t0 + 1s, fx);
  queues.get("R", 2, "idle", 0, t0, t0, fx);  // created, answered at once, now idle
  queues.put("P", 3, "third", item("1"), t0 + 1s, t0 + 2s, fx);
  CHECK(queues.queues().count("idle") == 0);
  CHECK(queues.queues().count("third") == 1);
  fx = {};
  queues.put("P", 4, "fourth", item("1"), t0, t0 + 1s, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].status == wire::OVERLOADED);
}

TEST_CASE("queue names follow the topic rules, and so must the topic they map to", "[queues]") {
  LegacyQueues queues(limits(), {});
  CHECK_FALSE(queues.check_name("service_response_MemoryRetrieval_0"));
  CHECK(queues.check_name(""));
  CHECK(queues.check_name("a..b"));
  CHECK(queues.check_name("a.*"));
  CHECK(queues.check_name(std::string(250, 'x') + ".y"));  // legacy.<name> is too long
}

// ---------------------------------------------------------------------------------------
// Durable queues: every change is a store write, and a put is answered once stored.

namespace {

std::vector<StoreWrite::Op> ops(const QueueEffects& fx) {
  std::vector<StoreWrite::Op> out;
  for (const auto& w : fx.writes)
    out.push_back(w.op);
  return out;
}

struct Durable : Fixture {
  Durable() { queues.set_durable_default(true); }
  // A put, stored at once.
  void stored_put(const std::string& what, const RoutingId& from = "P") {
    QueueEffects staged;
    queues.put(from, 1, "jobs", item(what), t0, t0 + 1s, staged);
    REQUIRE(staged.staged.size() == 1);
    queues.committed(staged.staged, fx);
  }
};

}  // namespace

TEST_CASE("a put to a durable queue is answered only once committed", "[queues][store]") {
  Durable f;
  f.queues.get("R", 9, "jobs", 0, t0, t0 + 1s, f.fx);  // waits
  QueueEffects put;
  f.queues.put("P", 4, "jobs", item("x"), t0, t0 + 1s, put);
  CHECK(put.answers.empty());
  CHECK(put.publishes.empty());
  REQUIRE(put.staged.size() == 1);
  CHECK(ops(put) == std::vector{StoreWrite::Op::put});
  CHECK(put.writes[0].queue == "jobs");
  CHECK(put.writes[0].payload.front().to_string() == "x");
  CHECK(f.queues.queues().at("jobs").staged == 1);

  QueueEffects done;
  f.queues.committed(put.staged, done);
  // The putter's OK (sent at once), the waiting reader's item (sent once its lease is
  // stored), and the publish.
  REQUIRE(done.answers.size() == 2);
  CHECK(done.answers[0].to == "P");
  CHECK(done.answers[0].status == wire::OK);
  CHECK(done.answers[0].now);
  CHECK(done.answers[1].to == "R");
  CHECK_FALSE(done.answers[1].now);
  CHECK(done.answers[1].deliveries == 1);
  CHECK(ops(done) == std::vector{StoreWrite::Op::lease});
  CHECK(done.publishes.size() == 1);
  CHECK(f.queues.queues().at("jobs").staged == 0);
}

TEST_CASE("a put the store failed to write is answered UNAVAILABLE and dropped",
          "[queues][store]") {
  Durable f;
  QueueEffects put;
  f.queues.put("P", 4, "jobs", item("x"), t0, t0 + 1s, put);
  QueueEffects done;
  f.queues.abandoned(put.staged, "the store /s failed: database or disk is full", done);
  REQUIRE(done.answers.size() == 1);
  CHECK(done.answers[0].status == wire::UNAVAILABLE);
  CHECK(done.answers[0].message.find("/s failed: database or disk is full") != std::string::npos);
  CHECK(f.queues.size("jobs") == 0);
  CHECK(f.queues.queues().at("jobs").staged == 0);
}

TEST_CASE("staged puts count towards the depth", "[queues][store]") {
  Durable f;
  f.queues.set_limits(limits(1));
  QueueEffects fx;
  f.queues.put("P", 1, "jobs", item("1"), t0, t0 + 1s, fx);
  f.queues.put("P", 2, "jobs", item("2"), t0, t0, fx);  // no room, no wait
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].status == wire::OVERLOADED);
}

TEST_CASE("handing out and acknowledging a durable item are store writes", "[queues][store]") {
  Durable f;
  f.stored_put("1");
  const QueueAnswer a = f.get("R");
  CHECK(a.deliveries == 1);
  CHECK(ops(f.fx) == std::vector{StoreWrite::Op::lease});
  CHECK(f.fx.writes[0].deliveries == 1);
  f.fx = {};
  CHECK(f.queues.ack("R", a.tag, f.fx));
  CHECK(ops(f.fx) == std::vector{StoreWrite::Op::remove});
  CHECK(f.queues.queues().at("jobs").bytes == 0);
}

TEST_CASE("an item back from a reader that left keeps its place and says it was redelivered",
          "[queues][store]") {
  Durable f;
  f.stored_put("1");
  f.stored_put("2");
  f.stored_put("3");
  const QueueAnswer first = f.get("A");
  const QueueAnswer second = f.get("B");
  CHECK(text(first) == "1");
  CHECK(text(second) == "2");
  f.fx = {};
  f.queues.remove_client("B", f.fx);  // 2 goes back before 3
  f.queues.remove_client("A", f.fx);  // 1 goes back before 2
  CHECK(f.fx.writes.empty());         // their delivery counts are stored already
  const QueueAnswer again = f.get("C");
  CHECK(text(again) == "1");
  CHECK(again.deliveries == 2);
  CHECK(text(f.get("C")) == "2");
  const QueueAnswer third = f.get("C");
  CHECK(text(third) == "3");
  CHECK(third.deliveries == 1);
}

TEST_CASE("restored items keep their order and delivery counts", "[queues][store]") {
  LegacyQueues queues(limits(), {});
  queues.set_durable_default(true);
  Recovery r;
  r.queues.push_back({"jobs", false});
  r.queues.push_back({"scratch", true});
  for (std::uint64_t seq : {3u, 7u}) {
    StoredItem& i = r.items.emplace_back();
    i.seq = seq;
    i.queue = "jobs";
    i.deliveries = seq == 3 ? 1 : 0;
    i.payload = item(std::to_string(seq));
  }
  r.max_seq = 7;
  queues.restore(r, t0);
  CHECK(queues.size("jobs") == 2);
  CHECK_FALSE(queues.queues().at("scratch").durable);
  QueueEffects fx;
  queues.get("R", 1, "jobs", 0, t0, t0 + 1s, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(text(fx.answers[0]) == "3");
  CHECK(fx.answers[0].deliveries == 2);  // handed out before the restart
  fx = {};
  queues.put("P", 2, "jobs", item("new"), t0, t0 + 1s, fx);
  REQUIRE(fx.staged.size() == 1);
  CHECK(fx.staged[0] > 7);
}

TEST_CASE("a queue declared transient stores nothing", "[queues][store]") {
  Durable f;
  QueueEffects fx;
  f.queues.declare("P", 1, "jobs", true, t0, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].status == wire::OK);
  REQUIRE_FALSE(fx.writes.empty());
  CHECK(fx.writes.back().op == StoreWrite::Op::define);
  CHECK(fx.writes.back().transient);
  fx = {};
  f.queues.put("P", 2, "jobs", item("x"), t0, t0 + 1s, fx);
  CHECK(fx.writes.empty());
  CHECK(fx.staged.empty());
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].status == wire::OK);
}

TEST_CASE("a durable queue holding items cannot be declared transient", "[queues][store]") {
  Durable f;
  f.stored_put("1");
  QueueEffects fx;
  f.queues.declare("P", 1, "jobs", true, t0, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].status == wire::INVALID_ARGUMENT);
  CHECK(fx.answers[0].message.find("busctl queue purge jobs") != std::string::npos);
}

TEST_CASE("without a store a queue cannot be declared durable", "[queues][store]") {
  Fixture f;
  QueueEffects fx;
  f.queues.declare("P", 1, "jobs", false, t0, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].status == wire::UNAVAILABLE);
  CHECK(fx.answers[0].message.find("--store") != std::string::npos);
}

TEST_CASE("purge removes the items not taken and stores their removal", "[queues][store]") {
  Durable f;
  f.stored_put("1");
  f.stored_put("2");
  f.stored_put("3");
  const QueueAnswer taken = f.get("R");
  QueueEffects fx;
  CHECK(f.queues.purge("jobs", fx) == 2);
  CHECK(ops(fx) == std::vector{StoreWrite::Op::remove, StoreWrite::Op::remove});
  CHECK(f.queues.size("jobs") == 0);
  CHECK(f.queues.unacked("R") == 1);  // the taken one stays with its reader
  CHECK(f.queues.peek("jobs", 10).empty());
}

// ---------------------------------------------------------------------------------------
// TTL and giving an item back.

TEST_CASE("an item nobody takes within its TTL is removed and counted", "[queues][ttl]") {
  Durable f;
  QueueEffects put;
  f.queues.put("P", 1, "jobs", item("short"), t0, t0 + 1s, put, 100ms);
  f.queues.put("P", 2, "jobs", item("long"), t0, t0 + 1s, put, 10s);
  f.queues.committed(put.staged, f.fx);
  REQUIRE(f.queues.next_deadline());
  CHECK(*f.queues.next_deadline() == t0 + 100ms);
  QueueEffects fx;
  f.queues.expire(t0 + 99ms, fx);
  CHECK(f.queues.size("jobs") == 2);
  f.queues.expire(t0 + 100ms, fx);
  CHECK(f.queues.size("jobs") == 1);
  CHECK(f.queues.queues().at("jobs").expired == 1);
  CHECK(ops(fx) == std::vector{StoreWrite::Op::remove});
  CHECK(text(f.get("R")) == "long");
}

TEST_CASE("a taken item is kept past its TTL until acknowledged", "[queues][ttl]") {
  Fixture f;
  QueueEffects put;
  f.queues.put("P", 1, "jobs", item("x"), t0, t0 + 1s, put, 100ms);
  const QueueAnswer a = f.get("R");
  CHECK_FALSE(f.queues.next_deadline());  // nothing left to expire
  f.fx = {};
  f.queues.remove_client("R", f.fx);  // back in the queue, for good now
  f.queues.expire(t0 + 1h, f.fx);
  CHECK(f.queues.size("jobs") == 1);
  CHECK(a.deliveries == 1);
}

TEST_CASE("an expired item makes room for a waiting put", "[queues][ttl]") {
  Fixture f;
  f.queues.set_limits(limits(1));
  QueueEffects fx;
  f.queues.put("P", 1, "jobs", item("old"), t0, t0 + 1s, fx, 50ms);
  f.queues.put("P", 2, "jobs", item("new"), t0, t0 + 1s, fx);  // waits for room
  REQUIRE(fx.answers.size() == 1);
  fx = {};
  f.queues.expire(t0 + 50ms, fx);
  REQUIRE(fx.answers.size() == 1);
  CHECK(fx.answers[0].id == 2);
  CHECK(fx.answers[0].status == wire::OK);
  CHECK(text(f.get("R")) == "new");
}

TEST_CASE("a restored item keeps its TTL until it is first taken", "[queues][ttl][store]") {
  LegacyQueues queues(limits(), {});
  queues.set_durable_default(true);
  Recovery r;
  for (std::uint64_t seq : {1u, 2u, 3u}) {
    StoredItem& i = r.items.emplace_back();
    i.seq = seq;
    i.queue = "jobs";
    i.payload = item(std::to_string(seq));
  }
  r.items[0].expires = t0 - 1s;  // passed before the restart
  r.items[1].expires = t0 + 2s;  // 2 s after it
  r.items[2].expires = t0 - 1s;  // passed, but it was handed out: kept
  r.items[2].deliveries = 1;
  queues.restore(r, t0);
  QueueEffects fx;
  queues.expire(t0, fx);
  CHECK(queues.size("jobs") == 2);
  queues.expire(t0 + 2s, fx);
  CHECK(queues.size("jobs") == 1);
  CHECK(queues.queues().at("jobs").expired == 2);
}

TEST_CASE("an item given back goes to its place and is redelivered", "[queues][nack]") {
  Durable f;
  f.stored_put("1");
  f.stored_put("2");
  const QueueAnswer first = f.get("R");
  f.fx = {};
  CHECK_FALSE(f.queues.nack("OTHER", first.tag, f.fx));  // not its item
  CHECK(f.queues.nack("R", first.tag, f.fx));
  CHECK(f.fx.writes.empty());  // its delivery count is stored already
  CHECK(f.queues.unacked("R") == 0);
  CHECK(f.queues.queues().at("jobs").redeliveries == 1);
  const QueueAnswer again = f.get("S");
  CHECK(text(again) == "1");
  CHECK(again.deliveries == 2);
  f.fx = {};
  CHECK_FALSE(f.queues.nack("R", first.tag, f.fx));  // given back already
}
