// The rate limiter behind HELLO_REQUIRED answers.
#include <chrono>

#include <catch2/catch.hpp>

#include "loop/token_bucket.hpp"

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
