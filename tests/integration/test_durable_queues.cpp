// Durable legacy queues (sage-busd --store): what a put confirmed survives the broker's
// SIGKILL, an item handed out and not acknowledged comes back marked redelivered, a
// transient queue keeps nothing, and acknowledging across a restart is refused rather
// than claimed. The crash test (tests/crash/) kills the broker hundreds of times; these
// are the single cases, one by one.
#include <csignal>
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// A broker with its store in `dir`.
std::vector<std::string> stored_in(const TempDir& dir) {
  return {"--store", dir.path() + "/store.db", "--heartbeat-ms", "200"};
}

// SIGKILL, then start again on the same port and store.
void crash_and_restart(Broker& broker) {
  broker.process().signal(SIGKILL);
  REQUIRE(broker.process().wait_exit(5s) != -1);
  broker.start();
}

// Once `client` is talking to the restarted broker.
bool reconnected(Client& client) {
  return eventually(
      [&] {
        try {
          broker_status(client);
          return true;
        } catch (const Error&) {
          return false;
        }
      },
      5s);
}

admin::QueueInfo queue_info(Client& admin, const std::string& name) {
  const auto list = broker_queues(admin);
  for (const auto& q : list.queues())
    if (q.name() == name) return q;
  FAIL("the broker has no queue " << name);
  return {};
}

}  // namespace

TEST_CASE("confirmed puts survive the broker's SIGKILL in order", "[queues][store]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "putter"));
  LegacyQueue queue(client, "jobs");
  for (int i = 0; i < 100; ++i)
    queue.put("item-" + std::to_string(i));
  CHECK(queue_info(client, "jobs").durable());

  crash_and_restart(broker);
  CHECK(broker.log().find("1 queues and 100 items read back") != std::string::npos);
  for (int i = 0; i < 100; ++i) {
    const auto item = queue.get_item(5s);
    REQUIRE(item);
    CHECK(item->data == "item-" + std::to_string(i));
    CHECK_FALSE(item->redelivered);
    CHECK(item->deliveries == 1);
  }
  CHECK_FALSE(queue.get(1ms));
}

TEST_CASE("an item handed out and not acknowledged when the broker died is redelivered, marked",
          "[queues][store]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "reader"));
  {
    LegacyQueue queue(client, "jobs");
    queue.put("a");
    queue.put("b");
    REQUIRE(queue.get(5s) == "a");  // handed out, never acknowledged

    crash_and_restart(broker);
    CHECK(broker.log().find("1 were handed out before and will be redelivered") !=
          std::string::npos);
    // This get carries the acknowledgement of "a" to a broker that never gave it out: it
    // acknowledges nothing, and "a" comes back.
    const auto again = queue.get_item(5s);
    REQUIRE(again);
    CHECK(again->data == "a");
    CHECK(again->redelivered);
    CHECK(again->deliveries == 2);
    queue.ack();
    const auto next = queue.get_item(5s);
    REQUIRE(next);
    CHECK(next->data == "b");
    CHECK_FALSE(next->redelivered);
    queue.ack();
  }
  crash_and_restart(broker);
  LegacyQueue queue(client, "jobs");
  CHECK_FALSE(queue.get(1ms));  // acknowledged means gone, also from the disk
}

TEST_CASE("an acknowledgement the restarted broker cannot honour is refused NOT_FOUND",
          "[queues][store]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "reader"));
  LegacyQueue queue(client, "jobs");
  queue.put("a");
  REQUIRE(queue.get(5s) == "a");
  crash_and_restart(broker);
  REQUIRE(reconnected(client));
  const Error e = error_of([&] { queue.ack(); });
  CHECK(e.status() == Status::not_found);
  CHECK(std::string(e.what()).find("redelivered") != std::string::npos);
  const auto again = queue.get_item(5s);
  REQUIRE(again);
  CHECK(again->redelivered);
}

TEST_CASE("a transient queue keeps nothing across a restart, and its declaration stays",
          "[queues][store]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "putter"));
  {
    LegacyQueue scratch(client, "scratch", QueueOptions{.transient = true});
    scratch.put("lost");
    CHECK_FALSE(queue_info(client, "scratch").durable());
  }
  crash_and_restart(broker);
  REQUIRE(reconnected(client));
  LegacyQueue scratch(client, "scratch");
  CHECK_FALSE(scratch.get(1ms));
  CHECK_FALSE(queue_info(client, "scratch").durable());
}

TEST_CASE("a durable queue holding items cannot be declared transient", "[queues][store]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "putter"));
  LegacyQueue queue(client, "jobs");
  queue.put("x");
  const Error e = error_of([&] { LegacyQueue(client, "jobs", QueueOptions{.transient = true}); });
  CHECK(e.status() == Status::invalid_argument);
  CHECK(std::string(e.what()).find("busctl queue purge jobs") != std::string::npos);
}

TEST_CASE("without a store the broker says queues live in memory", "[queues][store]") {
  Broker broker;
  CHECK(broker.log().find("legacy queues live in memory") != std::string::npos);
  Client client(at(broker, "putter"));
  LegacyQueue queue(client, "jobs");
  queue.put("x");
  CHECK_FALSE(queue_info(client, "jobs").durable());
  CHECK_FALSE(broker_status(client).has_store());
}

TEST_CASE("the store's figures are in the status and in /metrics", "[queues][store]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "putter"));
  LegacyQueue queue(client, "jobs");
  queue.put("x");
  const auto status = broker_status(client);
  CHECK(status.store().path() == dir.path() + "/store.db");
  CHECK(status.store().available());
  CHECK(status.store().commits() >= 1);
  CHECK(status.store().bytes() > 0);
  const std::string metrics = client.call("$broker", "metrics", "").payload;
  CHECK(metrics.find("sagebus_store_commits_total") != std::string::npos);
  CHECK(metrics.find("sagebus_store_commit_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
}

TEST_CASE("a store in a directory that does not exist stops the broker with what to do",
          "[queues][store]") {
  TempDir dir;
  const RunResult r =
      run({busd_path(), "--endpoint", "tcp://127.0.0.1:" + std::to_string(free_port()), "--http",
           "off", "--store", dir.path() + "/nowhere/store.db"});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("nowhere does not exist; create it") != std::string::npos);
}

TEST_CASE("an item's TTL holds across a restart", "[queues][store][ttl]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "putter"));
  LegacyQueue queue(client, "jobs");
  queue.put("brief", 5s, 300ms);
  queue.put("lasting", 5s, 60s);
  crash_and_restart(broker);
  REQUIRE(reconnected(client));
  // The first expires 300 ms after its put, whatever the restart did meanwhile.
  REQUIRE(eventually([&] { return queue_info(client, "jobs").expired() == 1; }, 5s));
  CHECK(queue.get(5s) == "lasting");
  CHECK(error_of([&] { queue.put("x", 5s, -1ms); }).status() == Status::invalid_argument);
}

TEST_CASE("an item given back with nack goes to the next reader marked redelivered",
          "[queues][store][nack]") {
  TempDir dir;
  Broker broker(stored_in(dir));
  Client client(at(broker, "reader"));
  LegacyQueue first(client, "jobs");
  LegacyQueue second(client, "jobs");
  first.put("a");
  first.put("b");
  REQUIRE(first.get(5s) == "a");
  first.nack();
  const auto again = second.get_item(5s);
  REQUIRE(again);
  CHECK(again->data == "a");
  CHECK(again->redelivered);
  CHECK(again->deliveries == 2);
  CHECK(queue_info(client, "jobs").redeliveries() == 1);
}
