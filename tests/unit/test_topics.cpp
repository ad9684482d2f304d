// The subscription table (daemon/routing/topics.hpp): matching through the trie, replacing and
// removing subscriptions, credit and gap accounting, and the recent-topics counts.
#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "routing/topics.hpp"
#include "sagebus/wire/topic.hpp"

using namespace sagebus;
using namespace sagebus::broker;

namespace {

using Key = std::pair<RoutingId, std::uint64_t>;

std::set<Key> matches(SubscriptionTable& table, std::string_view topic) {
  std::vector<Subscription*> out;
  table.match(topic, out);
  std::set<Key> keys;
  for (const Subscription* s : out)
    keys.emplace(s->client, s->id);
  REQUIRE(keys.size() == out.size());  // each subscription at most once
  return keys;
}

constexpr std::size_t kMany = 1000;

}  // namespace

TEST_CASE("a publish reaches every overlapping pattern that matches, and only those", "[topics]") {
  SubscriptionTable table;
  table.subscribe("A", 1, "events.>", 0, kMany);
  table.subscribe("A", 2, "events.user.login", 0, kMany);
  table.subscribe("B", 1, "events.*.login", 0, kMany);
  table.subscribe("B", 2, "*.user.*", 0, kMany);
  table.subscribe("C", 1, ">", 0, kMany);
  table.subscribe("C", 2, "events.*", 0, kMany);
  table.subscribe("D", 1, "other.>", 0, kMany);

  CHECK(matches(table, "events.user.login") ==
        std::set<Key>{{"A", 1}, {"A", 2}, {"B", 1}, {"B", 2}, {"C", 1}});
  CHECK(matches(table, "events.user") == std::set<Key>{{"A", 1}, {"C", 1}, {"C", 2}});
  CHECK(matches(table, "events") == std::set<Key>{{"C", 1}});
  CHECK(matches(table, "other.x.y") == std::set<Key>{{"C", 1}, {"D", 1}});
  CHECK(matches(table, "x.user.y") == std::set<Key>{{"B", 2}, {"C", 1}});
}

TEST_CASE("the trie agrees with topic_matches on every pattern and topic", "[topics]") {
  const std::vector<std::string> patterns = {"a",   "a.b",   "a.*",   "*.b",   "a.>", ">",
                                             "*",   "*.*",   "a.b.c", "a.*.c", "*.>", "a.b.>",
                                             "b.>", "*.*.*", "a.*.>", "*.b.c"};
  const std::vector<std::string> topics = {"a",     "b",     "a.b",     "a.c",   "b.b",
                                           "a.b.c", "a.x.c", "a.b.c.d", "x.b.c", "b.a"};
  SubscriptionTable table;
  for (std::size_t i = 0; i < patterns.size(); ++i)
    table.subscribe("S", i, patterns[i], 0, kMany);
  for (const auto& topic : topics) {
    std::set<Key> expected;
    for (std::size_t i = 0; i < patterns.size(); ++i)
      if (wire::topic_matches(patterns[i], topic)) expected.emplace("S", i);
    INFO(topic);
    CHECK(matches(table, topic) == expected);
  }
}

TEST_CASE("subscribing again with the same id replaces the pattern and resets the credit",
          "[topics]") {
  SubscriptionTable table;
  REQUIRE(table.subscribe("A", 7, "a.*", 10, kMany) == SubscriptionTable::Added::added);
  Subscription* sub = table.find("A", 7);
  sub->sent();
  sub->sent();
  REQUIRE(sub->credit == 8);

  CHECK(table.subscribe("A", 7, "b.>", 10, kMany) == SubscriptionTable::Added::replaced);
  CHECK(table.size() == 1);
  CHECK(table.find("A", 7) == sub);  // the same subscription, kept
  CHECK(sub->credit == 10);
  CHECK(sub->delivered == 2);
  CHECK(matches(table, "a.x").empty());
  CHECK(matches(table, "b.x.y") == std::set<Key>{{"A", 7}});
}

TEST_CASE("unsubscribing removes one subscription and leaves the others", "[topics]") {
  SubscriptionTable table;
  table.subscribe("A", 1, "a.b", 0, kMany);
  table.subscribe("B", 1, "a.b", 0, kMany);
  CHECK(table.unsubscribe("A", 1));
  CHECK_FALSE(table.unsubscribe("A", 1));  // already gone
  CHECK_FALSE(table.unsubscribe("Z", 9));
  CHECK(matches(table, "a.b") == std::set<Key>{{"B", 1}});
  CHECK(table.size() == 1);
}

TEST_CASE("removing a client removes all its subscriptions and nobody else's", "[topics]") {
  SubscriptionTable table;
  table.subscribe("A", 1, "a.>", 0, kMany);
  table.subscribe("A", 2, "a.b", 0, kMany);
  table.subscribe("A", 3, "*", 0, kMany);
  table.subscribe("B", 1, "a.b", 0, kMany);
  CHECK(table.remove_client("A") == 3);
  CHECK(table.count("A") == 0);
  CHECK(table.size() == 1);
  CHECK(matches(table, "a.b") == std::set<Key>{{"B", 1}});
  CHECK(matches(table, "a").empty());
  CHECK(table.remove_client("A") == 0);
}

TEST_CASE("a client's subscriptions are bounded, replacing one is not a new one", "[topics]") {
  SubscriptionTable table;
  CHECK(table.subscribe("A", 1, "a", 0, 2) == SubscriptionTable::Added::added);
  CHECK(table.subscribe("A", 2, "b", 0, 2) == SubscriptionTable::Added::added);
  CHECK(table.subscribe("A", 3, "c", 0, 2) == SubscriptionTable::Added::too_many);
  CHECK(table.subscribe("A", 2, "c", 0, 2) == SubscriptionTable::Added::replaced);
  CHECK(table.subscribe("B", 1, "c", 0, 2) == SubscriptionTable::Added::added);
  CHECK(table.count("A") == 2);
}

TEST_CASE("credit 0 on SUBSCRIBE means the default window, CREDIT is capped", "[topics]") {
  SubscriptionTable table;
  table.subscribe("A", 1, "a", 0, kMany);
  Subscription* sub = table.find("A", 1);
  CHECK(sub->credit == Subscription::kDefaultCredit);
  sub->add_credit(Subscription::kMaxCredit);
  CHECK(sub->credit == Subscription::kMaxCredit);
  sub->add_credit(4'000'000'000u);
  CHECK(sub->credit == Subscription::kMaxCredit);
}

TEST_CASE("missed events add up to the gap the next EVENT reports, then it starts over",
          "[topics]") {
  SubscriptionTable table;
  table.subscribe("A", 1, "a", 1, kMany);
  Subscription* sub = table.find("A", 1);
  sub->sent();  // spends the only credit
  CHECK(sub->credit == 0);
  sub->missed();
  sub->missed();
  sub->missed();
  CHECK(sub->gap == 3);
  CHECK(sub->dropped == 3);
  sub->add_credit(5);
  sub->sent();  // this EVENT carried dropped = 3
  CHECK(sub->gap == 0);
  CHECK(sub->dropped == 3);
  CHECK(sub->delivered == 2);
  CHECK(sub->credit == 4);
}

TEST_CASE("recent topics keep counts for the most recently published, evicting the oldest",
          "[topics]") {
  RecentTopics recent(2);
  recent.count("a");
  recent.count("b");
  recent.count("a");  // a is now the most recent
  recent.count("c");  // evicts b
  std::vector<std::pair<std::string, std::uint64_t>> seen;
  recent.for_each([&](const std::string& t, std::uint64_t n) { seen.emplace_back(t, n); });
  CHECK(seen == std::vector<std::pair<std::string, std::uint64_t>>{{"c", 1}, {"a", 2}});
  CHECK(recent.size() == 2);
}

TEST_CASE("matching() remembers a topic's subscriptions until the table changes", "[topics]") {
  SubscriptionTable table;
  auto keys = [&](std::string_view topic) {
    std::set<Key> out;
    for (const Subscription* s : table.matching(topic))
      out.emplace(s->client, s->id);
    return out;
  };
  table.subscribe("A", 1, "jobs.*", 0, kMany);
  CHECK_FALSE(table.remembers("jobs.x"));
  CHECK(keys("jobs.x") == std::set<Key>{{"A", 1}});
  CHECK(table.remembers("jobs.x"));

  SECTION("a new subscription is seen") {
    table.subscribe("B", 1, "jobs.>", 0, kMany);
    CHECK_FALSE(table.remembers("jobs.x"));
    CHECK(keys("jobs.x") == std::set<Key>{{"A", 1}, {"B", 1}});
  }
  SECTION("a replaced pattern is seen") {
    table.subscribe("A", 1, "other.*", 0, kMany);
    CHECK(keys("jobs.x").empty());
    CHECK(keys("other.x") == std::set<Key>{{"A", 1}});
  }
  SECTION("an unsubscribe is seen") {
    table.unsubscribe("A", 1);
    CHECK(keys("jobs.x").empty());
  }
  SECTION("a removed client is seen") {
    table.subscribe("B", 1, "jobs.x", 0, kMany);
    CHECK(keys("jobs.x").size() == 2);
    table.remove_client("A");
    CHECK(keys("jobs.x") == std::set<Key>{{"B", 1}});
  }
  SECTION("past the limit the memory starts afresh and stays right") {
    for (std::size_t i = 0; i <= SubscriptionTable::kMaxRememberedTopics; ++i)
      CHECK(keys("jobs.t" + std::to_string(i)) == std::set<Key>{{"A", 1}});
    CHECK_FALSE(table.remembers("jobs.x"));
    CHECK(keys("jobs.x") == std::set<Key>{{"A", 1}});
  }
}
