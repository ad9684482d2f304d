// Legacy queues kept by the real broker: the put/get API old code had, with FIFO order,
// each item to exactly one reader, at-least-once when a reader dies, bounded depth, and
// every put visible on the queue's bus topic.
#include <atomic>
#include <chrono>
#include <csignal>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// The broker's record of queue `name`.
admin::QueueInfo queue_info(Client& admin, const std::string& name) {
  const auto queues = broker_queues(admin);
  for (const auto& q : queues.queues())
    if (q.name() == name) return q;
  FAIL("the broker has no queue " << name);
  return {};
}

using Clock = std::chrono::steady_clock;

long long millis_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

}  // namespace

TEST_CASE(
    "100k items, 4 competing readers: every item is taken exactly once, and each reader "
    "gets its items in put order",
    "[queues][competing]") {
  Broker broker;
  constexpr int kItems = 100000, kPutters = 4, kReaders = 4;
  constexpr int kPerPutter = kItems / kPutters;
  std::atomic<int> taken{0};
  std::atomic<bool> all_put{false};
  std::vector<std::vector<std::string>> got(kReaders);

  const auto started = Clock::now();
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r)
    readers.emplace_back([&, r] {
      Client client(at(broker, "reader-" + std::to_string(r)));
      LegacyQueue queue(client, "work");
      // Until every item is taken, or the queue stays empty for a second after the last put.
      while (taken.load() < kItems) {
        const bool last_chance = all_put.load();
        if (auto item = queue.get(1s)) {
          got[static_cast<std::size_t>(r)].push_back(std::move(*item));
          ++taken;
        } else if (last_chance) {
          return;
        }
      }
    });
  // Items are "<putter>:<sequence>"; each putter puts its own in order.
  std::vector<std::thread> putters;
  std::atomic<int> put_failures{0};
  for (int p = 0; p < kPutters; ++p)
    putters.emplace_back([&, p] {
      Client client(at(broker, "putter-" + std::to_string(p)));
      LegacyQueue queue(client, "work");
      for (int seq = 0; seq < kPerPutter; ++seq)
        try {
          queue.put(std::to_string(p) + ":" + std::to_string(seq), 10s);
        } catch (const Error& e) {
          UNSCOPED_INFO(e.what());
          ++put_failures;
        }
    });
  for (auto& t : putters)
    t.join();
  all_put = true;
  const auto put_ms = millis_since(started);
  for (auto& t : readers)
    t.join();
  WARN(kItems << " items put by " << kPutters << " threads in " << put_ms << " ms; all taken by "
              << kReaders << " readers after " << millis_since(started) << " ms");
  REQUIRE(put_failures == 0);

  std::vector<std::vector<int>> times_taken(kPutters, std::vector<int>(kPerPutter, 0));
  int out_of_order = 0;
  for (const auto& items : got) {
    std::vector<int> last(kPutters, -1);
    for (const auto& item : items) {
      const auto colon = item.find(':');
      const int p = std::stoi(item.substr(0, colon)), seq = std::stoi(item.substr(colon + 1));
      ++times_taken[static_cast<std::size_t>(p)][static_cast<std::size_t>(seq)];
      if (seq <= last[static_cast<std::size_t>(p)]) ++out_of_order;
      last[static_cast<std::size_t>(p)] = seq;
    }
  }
  int missing = 0, duplicated = 0;
  for (const auto& counts : times_taken)
    for (int n : counts) {
      if (n == 0) ++missing;
      if (n > 1) ++duplicated;
    }
  for (int r = 0; r < kReaders; ++r)
    UNSCOPED_INFO("reader " << r << " took " << got[static_cast<std::size_t>(r)].size());
  CHECK(taken == kItems);
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  CHECK(out_of_order == 0);
  Client admin(at(broker, "admin"));
  const auto info = queue_info(admin, "work");
  CHECK(info.depth() == 0);
  CHECK(info.unacked() == 0);
  CHECK(info.redeliveries() == 0);
}

TEST_CASE("a reader SIGKILLed after get and before acknowledging: its item goes to the next reader",
          "[queues][redelivery]") {
  Broker broker;
  Client client(at(broker, "survivor"));
  LegacyQueue queue(client, "jobs");
  queue.put("first");
  queue.put("second");
  TempDir dir;
  Process doomed({test_peer_path(), broker.endpoint(), "queue-get", "jobs"},
                 dir.path() + "/doomed.log");
  REQUIRE(doomed.wait_for_log("got first", 10s));

  doomed.signal(SIGKILL);
  REQUIRE(doomed.wait_exit(5s) != -1);

  REQUIRE(eventually([&] { return queue_info(client, "jobs").redeliveries() == 1; }, 5s));
  CHECK(queue.get(5s) == "first");
  CHECK(queue.get(5s) == "second");
  CHECK(broker_status(client).counters().queue_redeliveries() == 1);
}

TEST_CASE("a put on a full queue waits for its timeout, then fails OVERLOADED",
          "[queues][bounded]") {
  Broker broker({"--max-queue-depth", "3"});
  Client client(at(broker, "writer"));
  LegacyQueue queue(client, "jobs");
  for (const auto* item : {"1", "2", "3"})
    queue.put(item);

  const auto started = Clock::now();
  const auto error = error_of([&] { queue.put("4", 300ms); });
  const auto took = millis_since(started);

  INFO("the put ended after " << took << " ms: " << error.what());
  CHECK(error.status() == Status::overloaded);
  CHECK(took >= 290);
  CHECK(took < 1000);
  CHECK(queue.size() == 3);
}

TEST_CASE("a put waiting on a full queue succeeds when a get makes room", "[queues][bounded]") {
  Broker broker({"--max-queue-depth", "3"});
  Client writer_client(at(broker, "writer"));
  LegacyQueue writer(writer_client, "jobs");
  for (const auto* item : {"1", "2", "3"})
    writer.put(item);
  auto waiting = std::async(std::launch::async, [&] { writer.put("4", 5s); });
  REQUIRE(eventually([&] { return queue_info(writer_client, "jobs").writers() == 1; }, 5s));

  Client reader_client(at(broker, "reader"));
  LegacyQueue reader(reader_client, "jobs");
  CHECK(reader.get(1s) == "1");

  REQUIRE(waiting.wait_for(5s) == std::future_status::ready);
  CHECK_NOTHROW(waiting.get());
  CHECK(reader.get(1s) == "2");
  CHECK(reader.get(1s) == "3");
  CHECK(reader.get(1s) == "4");
}

TEST_CASE("subscribers of legacy.<name> see every put, in order", "[queues][topic]") {
  Broker broker;
  Client client(at(broker, "old-and-new"));
  Inbox watcher;
  auto subscription = client.subscribe("legacy.jobs", watcher.handler());
  REQUIRE(eventually([&] { return subscriptions_on(client, "legacy.jobs") == 1; }, 10s));
  LegacyQueue queue(client, "jobs");

  for (int i = 1; i <= 10; ++i)
    queue.put("item " + std::to_string(i));

  REQUIRE(eventually([&] { return watcher.size() == 10; }, 5s));
  const auto seen = watcher.messages();
  for (int i = 1; i <= 10; ++i) {
    CHECK(seen[static_cast<std::size_t>(i - 1)].payload == "item " + std::to_string(i));
    CHECK(seen[static_cast<std::size_t>(i - 1)].topic == "legacy.jobs");
  }
  CHECK(queue.size() == 10);  // watching takes nothing from the queue
}

TEST_CASE("the broker's --queue-topic mapping publishes a queue's puts on the mapped topic",
          "[queues][topic]") {
  Broker broker({"--queue-topic", "jobs=pipeline.jobs"});
  Client client(at(broker, "old-and-new"));
  Inbox mapped, default_topic;
  auto s1 = client.subscribe("pipeline.jobs", mapped.handler());
  auto s2 = client.subscribe("legacy.jobs", default_topic.handler());
  REQUIRE(eventually([&] { return broker_topics(client).subscriptions_size() == 2; }, 10s));
  LegacyQueue queue(client, "jobs");

  for (const auto* item : {"a", "b", "c"})
    queue.put(item);

  REQUIRE(eventually([&] { return mapped.size() == 3; }, 5s));
  const auto seen = mapped.messages();
  CHECK(seen[0].payload == "a");
  CHECK(seen[1].payload == "b");
  CHECK(seen[2].payload == "c");
  CHECK(seen[0].topic == "pipeline.jobs");
  CHECK(queue_info(client, "jobs").topic() == "pipeline.jobs");
  // Nothing went to the default topic: a marker published there after the puts is the
  // first thing its subscriber sees.
  REQUIRE(client.publish("legacy.jobs", "marker", {.confirm = true}) == 1);
  REQUIRE(eventually([&] { return default_topic.size() >= 1; }, 5s));
  CHECK(default_topic.messages().front().payload == "marker");
}
