// The rate limiter behind HELLO_REQUIRED answers, and the throttle of refusal log lines.
#include <chrono>

#include <catch2/catch.hpp>

#include "loop/token_bucket.hpp"

using sagebus::broker::LogThrottle;
using sagebus::broker::TokenBucket;
using namespace std::chrono_literals;

TEST_CASE("a token bucket allows its burst at once, then its rate", "[token_bucket]") {
  TokenBucket bucket(100.0, 10.0);
  const TokenBucket::TimePoint t0{};
  int taken = 0;
  for (int i = 0; i < 50; ++i)
    taken += bucket.take(t0) ? 1 : 0;
  CHECK(taken == 10);
  taken = 0;
  for (int i = 0; i < 50; ++i)
    taken += bucket.take(t0 + 100ms) ? 1 : 0;
  CHECK(taken == 10);  // 100/s for 0.1 s
}

TEST_CASE("a token bucket never holds more than its burst", "[token_bucket]") {
  TokenBucket bucket(100.0, 5.0);
  const TokenBucket::TimePoint t0{};
  REQUIRE(bucket.take(t0));
  int taken = 0;
  for (int i = 0; i < 50; ++i)
    taken += bucket.take(t0 + 1h) ? 1 : 0;
  CHECK(taken == 5);
}

TEST_CASE("a log throttle lets its burst through, then says how many it held back",
          "[token_bucket]") {
  LogThrottle throttle(1.0, 2.0);
  const LogThrottle::TimePoint t0{};
  CHECK(throttle.take(t0) == 0u);
  CHECK(throttle.take(t0) == 0u);
  for (int i = 0; i < 5; ++i)
    CHECK_FALSE(throttle.take(t0));
  CHECK_FALSE(throttle.take(t0 + 500ms));
  CHECK(throttle.take(t0 + 1s) == 6u);  // the six not logged since the last line
  CHECK_FALSE(throttle.take(t0 + 1s));
  CHECK(throttle.take(t0 + 2s) == 1u);
}
