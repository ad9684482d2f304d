// Topic and pattern rules (proto/include/sagebus/wire/topic.hpp): what matches, what does
// not, and every form the broker refuses with INVALID_ARGUMENT.
#include <string>

#include <catch2/catch.hpp>

#include "sagebus/wire/topic.hpp"

using namespace sagebus::wire;

namespace {

std::string tokens(std::size_t n) {
  std::string s = "t";
  for (std::size_t i = 1; i < n; ++i)
    s += ".t";
  return s;
}

}  // namespace

TEST_CASE("patterns match the topics they describe", "[topic]") {
  struct Row {
    const char* pattern;
    const char* topic;
    bool matches;
  };
  const Row rows[] = {
      {"events.user.login", "events.user.login", true},
      {"events.user.login", "events.user.logout", false},
      {"events.user.login", "events.user", false},
      {"events.user", "events.user.login", false},
      {"events.*.login", "events.user.login", true},
      {"events.*.login", "events.admin.login", true},
      {"events.*.login", "events.login", false},
      {"events.*.login", "events.a.b.login", false},
      {"events.*", "events.user", true},
      {"events.*", "events.user.login", false},
      {"events.*", "events", false},
      {"*", "events", true},
      {"*", "events.user", false},
      {"*.*", "a.b", true},
      {"*.*", "a", false},
      {"events.>", "events.user", true},
      {"events.>", "events.user.login.ok", true},
      {"events.>", "events", false},  // '>' takes one or more tokens
      {"events.>", "other.user", false},
      {">", "events", true},
      {">", "a.b.c.d", true},
      {"*.>", "a.b", true},
      {"*.>", "a", false},
      {"events.*.>", "events.user.login", true},
      {"events.*.>", "events.user", false},
      {"a.b.c", "a.b.c", true},
      {"a.b.c", "a.b.C", false},  // case matters
      {"a:b/c-d_e", "a:b/c-d_e", true},
  };
  for (const auto& row : rows) {
    INFO("pattern '" << row.pattern << "', topic '" << row.topic << "'");
    REQUIRE_FALSE(check_pattern(row.pattern));
    REQUIRE_FALSE(check_topic(row.topic));
    CHECK(topic_matches(row.pattern, row.topic) == row.matches);
  }
}

TEST_CASE("valid topics and patterns pass their checks", "[topic]") {
  for (const char* topic : {"a", "events.user.login", "A-Z_0:9/x", "legacy.queue_1"}) {
    INFO(topic);
    CHECK_FALSE(check_topic(topic));
    CHECK_FALSE(check_pattern(topic));  // every topic is also a pattern
  }
  for (const char* pattern : {"*", ">", "a.*", "a.>", "*.b.>", "*.*.*"}) {
    INFO(pattern);
    CHECK_FALSE(check_pattern(pattern));
  }
  CHECK_FALSE(check_topic(std::string(kMaxTopicBytes, 'x')));
  CHECK_FALSE(check_topic(tokens(kMaxTopicTokens)));
}

TEST_CASE("invalid topics are refused with a reason", "[topic]") {
  struct Row {
    std::string topic;
    const char* reason;
  };
  const Row rows[] = {
      {"", "is empty"},
      {"a..b", "empty token"},
      {".a", "empty token"},
      {"a.", "empty token"},
      {".", "empty token"},
      {"a.*", "wildcards belong in subscription patterns"},
      {"a.>", "wildcards belong in subscription patterns"},
      {"a*", "wildcards belong in subscription patterns"},
      {"a b", "character outside"},
      {"a.b\xc3\xa9", "character outside"},
      {"a#", "character outside"},
      {std::string(kMaxTopicBytes + 1, 'x'), "bytes long"},
      {tokens(kMaxTopicTokens + 1), "more than"},
  };
  for (const auto& row : rows) {
    INFO("topic '" << row.topic << "'");
    const auto error = check_topic(row.topic);
    REQUIRE(error);
    CHECK_THAT(*error, Catch::Contains(row.reason));
  }
}

TEST_CASE("invalid patterns are refused with a reason", "[topic]") {
  struct Row {
    std::string pattern;
    const char* reason;
  };
  const Row rows[] = {
      {"", "is empty"},
      {"a..b", "empty token"},
      {".a", "empty token"},
      {"a.", "empty token"},
      {"a.>.b", "'>' before its last token"},
      {">.a", "'>' before its last token"},
      {"a*", "character outside"},  // wildcards are whole tokens only
      {"*a.b", "character outside"},
      {"a.b>", "character outside"},
      {"a.**", "character outside"},
      {"a b", "character outside"},
      {std::string(kMaxTopicBytes + 1, 'x'), "bytes long"},
      {tokens(kMaxTopicTokens + 1), "more than"},
  };
  for (const auto& row : rows) {
    INFO("pattern '" << row.pattern << "'");
    const auto error = check_pattern(row.pattern);
    REQUIRE(error);
    CHECK_THAT(*error, Catch::Contains(row.reason));
  }
}

TEST_CASE("the error names what was checked", "[topic]") {
  const auto error = check_topic("a..b", "queue name");
  REQUIRE(error);
  CHECK_THAT(*error, Catch::StartsWith("queue name"));
}
