// IdleSpin: whether sage-busd's loop may look for its next message without sleeping, for
// a moment after it last received one.
//
// Why: a request-reply call crosses a dozen threads (the broker's, the SDKs', ZeroMQ's
// I/O threads), and each one asleep costs a wake-up. On a virtual machine whose vCPU has
// halted, that wake-up goes through the hypervisor and costs tens of microseconds:
// sage-bus-bench reqrep_c1 took 160 µs a call at p50 with the broker sleeping in ::poll()
// between messages, and 90 µs with it polling without sleeping (docs/benchmarks.md).
// Go's scheduler, under nats-server, spins its idle threads before parking them, too.
//
// The contract:
// - The window: for `window` after the last receive that found a message, may_spin()
//   says yes; window 0 turns spinning off. The caller then polls with timeout 0 and, if
//   nothing came, yields (sched_yield) before its next turn, so that any thread waiting
//   for this CPU runs first.
// - Only while a CPU is idle: spinning on a busy host takes a CPU from the threads doing
//   the work. may_spin() says no while the host's runnable threads (this one included)
//   outnumber its CPUs, read from /proc/loadavg's fourth field at most once a
//   kRecheck; when that file cannot be read it says no.
//
// Not thread safe; owned by the broker's loop.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string_view>

namespace sagebus::broker {

class IdleSpin {
 public:
  using Clock = std::chrono::steady_clock;
  // How many threads are runnable on the host now (this one included), or nullopt when
  // that cannot be known.
  using RunnableProbe = std::function<std::optional<long>()>;

  static constexpr std::chrono::milliseconds kRecheck{1};

  // Probes /proc/loadavg; cpus is the number of CPUs online.
  IdleSpin();
  IdleSpin(RunnableProbe probe, long cpus);

  // A receive found a message.
  void received(Clock::time_point now) { last_received_ = now; }

  // Whether the next wait may poll without sleeping.
  bool may_spin(Clock::time_point now, std::chrono::microseconds window);

  // Whether the runnable count could be read when this was made; if not, it never spins.
  bool knows_load() const noexcept { return knows_load_; }

  // The runnable count in /proc/loadavg's text ("0.20 0.18 0.12 2/180 4011": 2).
  static std::optional<long> runnable_of(std::string_view loadavg);

 private:
  RunnableProbe probe_;
  long cpus_;
  bool knows_load_;
  Clock::time_point last_received_{};
  Clock::time_point next_check_{};  // when the host is next asked; the first time at once
  bool cpu_idle_ = false;           // its last answer
};

}  // namespace sagebus::broker
