// IdleSpin: the window after a receive, the idle-CPU rule, how often the host is asked,
// and reading /proc/loadavg's runnable count.
#include <chrono>
#include <optional>

#include <catch2/catch.hpp>

#include "loop/idle_spin.hpp"

using namespace sagebus::broker;
using namespace std::chrono_literals;

namespace {

// A two-CPU host whose runnable count the test sets, counting how often it is asked, and
// the IdleSpin that asks it.
struct TwoCpuHost {
  std::optional<long> runnable = 1;
  int asked = 0;
  IdleSpin spin{[this] {
                  ++asked;
                  return runnable;
                },
                2};
  const IdleSpin::Clock::time_point t0 = IdleSpin::Clock::now();
};

}  // namespace

TEST_CASE("spinning lasts the window after a receive, and not before the first", "[idle_spin]") {
  TwoCpuHost host;
  IdleSpin& spin = host.spin;
  const auto t0 = host.t0;
  CHECK_FALSE(spin.may_spin(t0, 100us));  // nothing received yet
  spin.received(t0);
  CHECK(spin.may_spin(t0, 100us));
  CHECK(spin.may_spin(t0 + 99us, 100us));
  CHECK_FALSE(spin.may_spin(t0 + 100us, 100us));
  spin.received(t0 + 150us);
  CHECK(spin.may_spin(t0 + 200us, 100us));
}

TEST_CASE("a window of zero never spins", "[idle_spin]") {
  TwoCpuHost host;
  const int asked = host.asked;
  host.spin.received(host.t0);
  CHECK_FALSE(host.spin.may_spin(host.t0, 0us));
  CHECK(host.asked == asked);
}

TEST_CASE("spinning needs a CPU for every runnable thread, this one included", "[idle_spin]") {
  TwoCpuHost host;
  auto t = host.t0;
  host.spin.received(t);
  host.runnable = 2;
  CHECK(host.spin.may_spin(t, 10ms));
  host.runnable = 3;
  t += IdleSpin::kRecheck;
  CHECK_FALSE(host.spin.may_spin(t, 10ms));
  host.runnable = std::nullopt;  // the count cannot be read
  t += IdleSpin::kRecheck;
  CHECK_FALSE(host.spin.may_spin(t, 10ms));
  host.runnable = 1;
  t += IdleSpin::kRecheck;
  CHECK(host.spin.may_spin(t, 10ms));
}

TEST_CASE("the host is asked at most once a recheck interval", "[idle_spin]") {
  TwoCpuHost host;
  CHECK(host.asked == 1);  // once when made: knows_load()
  host.spin.received(host.t0);
  CHECK(host.spin.may_spin(host.t0, 10ms));
  host.runnable = 5;
  CHECK(host.spin.may_spin(host.t0 + IdleSpin::kRecheck / 2, 10ms));  // the last answer holds
  CHECK(host.asked == 2);
  CHECK_FALSE(host.spin.may_spin(host.t0 + IdleSpin::kRecheck, 10ms));
  CHECK(host.asked == 3);
}

TEST_CASE("a host whose load cannot be read is known as such, and never spun on", "[idle_spin]") {
  IdleSpin spin([] { return std::optional<long>(); }, 2);
  CHECK_FALSE(spin.knows_load());
  const auto t0 = IdleSpin::Clock::now();
  spin.received(t0);
  CHECK_FALSE(spin.may_spin(t0, 10ms));
  CHECK(TwoCpuHost().spin.knows_load());
}

TEST_CASE("the runnable count is read from /proc/loadavg's fourth field", "[idle_spin]") {
  CHECK(IdleSpin::runnable_of("0.20 0.18 0.12 2/180 4011\n") == 2);
  CHECK(IdleSpin::runnable_of("12.00 9.50 3.25 17/1024 99") == 17);
  CHECK_FALSE(IdleSpin::runnable_of("").has_value());
  CHECK_FALSE(IdleSpin::runnable_of("0.20 0.18 0.12").has_value());
  CHECK_FALSE(IdleSpin::runnable_of("0.20 0.18 0.12 /180 1").has_value());
  CHECK_FALSE(IdleSpin::runnable_of("0.20 0.18 0.12 x2/180 1").has_value());
}

TEST_CASE("this host's /proc/loadavg gives a runnable count", "[idle_spin]") {
  IdleSpin spin;  // the real probe: at least this thread is runnable
  const auto t0 = IdleSpin::Clock::now();
  spin.received(t0);
  // Whether it may spin depends on the host's load; that it reads the load, and says no
  // once the window is over, does not.
  CHECK(spin.knows_load());
  (void)spin.may_spin(t0, 1ms);
  CHECK_FALSE(spin.may_spin(t0 + 2ms, 1ms));
}
