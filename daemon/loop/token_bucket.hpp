// TokenBucket: a rate limiter. take() succeeds at most `burst` times at once and
// `rate_per_s` times per second on average. LogThrottle: a TokenBucket for log lines
// about events that may come by the thousand, each line saying how many it stands for.
// The clock is passed in, so both are deterministic under test. Not thread safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>
#include <utility>

namespace sagebus::broker {

class TokenBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  TokenBucket(double rate_per_s, double burst) : rate_(rate_per_s), burst_(burst), tokens_(burst) {}

  // Spends one token if there is one.
  bool take(TimePoint now) {
    if (started_) {
      const std::chrono::duration<double> elapsed = now - last_;
      if (elapsed.count() > 0) tokens_ = std::min(burst_, tokens_ + elapsed.count() * rate_);
    }
    started_ = true;
    last_ = std::max(last_, now);
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

 private:
  double rate_;
  double burst_;
  double tokens_;
  TimePoint last_{};
  bool started_ = false;
};

class LogThrottle {
 public:
  using TimePoint = TokenBucket::TimePoint;

  LogThrottle(double rate_per_s, double burst) : bucket_(rate_per_s, burst) {}

  // An event at `now`: whether to log it, and if so how many events before it since the
  // last logged one were not.
  std::optional<std::size_t> take(TimePoint now) {
    if (!bucket_.take(now)) {
      ++unlogged_;
      return std::nullopt;
    }
    return std::exchange(unlogged_, 0);
  }

 private:
  TokenBucket bucket_;
  std::size_t unlogged_ = 0;
};

}  // namespace sagebus::broker
