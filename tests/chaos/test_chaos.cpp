// The chaos test: 4 instances of service "chaos" (sagebus-chaos-instance
// processes), 8 callers calling them continuously for 60 s, while a killer SIGKILLs and
// restarts instances at random, SIGSTOPs one for longer than its lease, and restarts the
// broker once. Afterwards it prints a summary and checks that
//   - every call had exactly one outcome (calls issued = replies + errors);
//   - no caller got a reply to a call it did not make;
//   - no outcome came later than the call's deadline + kLateMargin (docs/sdk.md, "Calls":
//     the outcome is decided at the deadline; this leaves room for a loaded machine and
//     the sanitizer build);
//   - the broker's peak RSS stayed under kRssBoundKib (64 MiB; the broker runs with its
//     default limits, and its RSS is sampled every 100 ms from /proc);
//   - no call that was not marked idempotent was executed twice (each instance logs the
//     token of every call it executes, before working on it: see chaos_instance.cpp).
// Half of the calls are idempotent; those may run twice after an instance loss (the
// broker retries them once), and the summary counts how often they did.
//
// Timing: heartbeat 200 ms, liveness 3, so a lease is 600 ms; the SIGSTOP lasts 1.5 s.
// Detection times are measured by polling the broker's service table from an observer
// client: from SIGKILL (or SIGSTOP) until the broker no longer routes to the instance.
//
// Callers: 8 Clients, each shared by 2 threads. Callers 0-3 set wait_for_ready, 4-7 do
// not. The waiting half rides through the broker restart (their calls wait for the
// reconnection and for a re-registered instance, up to their deadline), which is what
// checks that reconnecting and replaying registrations need no user code; the fail-fast
// half checks the default contract: UNAVAILABLE / NO_RESPONDERS at once while there is
// nothing to call, never a hang. Each call is made with call_async and a callback, so
// that a second outcome would be seen (and counted) rather than crash a promise.
//
// Environment: SAGEBUS_CHAOS_SEED replays a killer timeline (the seed is printed);
// SAGEBUS_CHAOS_SECONDS changes the calling time (default 60); SAGEBUS_CHAOS_KEEP=1
// keeps the logs directory.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <catch2/catch.hpp>

#include "child_process.hpp"
#include "harness.hpp"

namespace sagebus::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr int kInstances = 4;
constexpr int kCallers = 8;
constexpr int kThreadsPerCaller = 2;
constexpr unsigned kHeartbeatMs = 200;
constexpr unsigned kLiveness = 3;
constexpr milliseconds kLease{kHeartbeatMs * kLiveness};
constexpr milliseconds kStopFor = kLease * 5 / 2;
constexpr milliseconds kLateMargin{25};
// How long past its deadline a caller waits before it declares a call without outcome.
constexpr milliseconds kWatchdog{3000};
// The broker's memory bound. Under ASan every allocation carries redzones and freed
// memory sits in a quarantine (limited to 64 MiB for the broker below), so the bound
// is scaled.
#ifdef SAGEBUS_CHAOS_SANITIZED
constexpr long kRssBoundKib = 320 * 1024;
#else
constexpr long kRssBoundKib = 64 * 1024;
#endif

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strtoull(value, nullptr, 10);
}

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// One call, as its caller saw it. Shared with the callback, which may (it must not)
// run more than once or after the caller gave up waiting.
struct CallRecord {
  std::string token;
  bool idempotent = false;
  Clock::time_point issued;
  Clock::time_point deadline;
  std::mutex mutex;
  std::condition_variable cv;
  int outcomes = 0;
  Status status = Status::ok;
  std::string payload;
  std::string message;
  Clock::time_point ended;
};

// sage-busd on a fixed endpoint, restartable on it.
class ChaosBroker {
 public:
  explicit ChaosBroker(const std::string& dir)
      : dir_(dir), endpoint_("tcp://127.0.0.1:" + std::to_string(free_port())) {}

  void start() {
    const std::vector<std::string> argv{busd_path(),
                                        "--endpoint",
                                        endpoint_,
                                        "--heartbeat-ms",
                                        std::to_string(kHeartbeatMs),
                                        "--liveness",
                                        std::to_string(kLiveness),
                                        "--log-level",
                                        "info",
                                        "--http",
                                        "off"};
    process_ =
        std::make_unique<Process>(argv, dir_ + "/sage-busd-" + std::to_string(++starts_) + ".log");
    if (!process_->wait_for_log("listening on", 10s))
      throw std::runtime_error("sage-busd did not start; its log:\n" + process_->log());
    pid_.store(process_->pid());
  }
  int stop() {
    pid_.store(0);
    return process_->stop();
  }
  void kill() {
    pid_.store(0);
    process_->signal(SIGKILL);
    process_->wait_exit(5s);
    process_.reset();
  }
  const std::string& endpoint() const { return endpoint_; }
  pid_t pid() const { return pid_.load(); }
  Process* process() { return process_.get(); }

 private:
  std::string dir_;
  std::string endpoint_;
  int starts_ = 0;
  std::unique_ptr<Process> process_;
  std::atomic<pid_t> pid_{0};
};

// The broker's peak RSS, sampled every 100 ms (across its restart).
class RssSampler {
 public:
  explicit RssSampler(const ChaosBroker& broker) : broker_(broker), thread_([this] { run_(); }) {}
  ~RssSampler() {
    stop_.store(true);
    thread_.join();
  }
  long peak_kib() const { return peak_.load(); }

 private:
  void run_() {
    while (!stop_.load()) {
      if (const pid_t pid = broker_.pid(); pid > 0)
        peak_.store(std::max<long>(peak_.load(), static_cast<long>(child::rss_kib(pid))));
      std::this_thread::sleep_for(100ms);
    }
  }
  const ChaosBroker& broker_;
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

// One caller: a Client shared by kThreadsPerCaller threads, each calling in a loop.
class Caller {
 public:
  Caller(const std::string& endpoint, int index, std::uint64_t seed, std::atomic<bool>& stop)
      : index_(index), client_(at(endpoint, "chaos-caller-" + std::to_string(index))), stop_(stop) {
    for (int t = 0; t < kThreadsPerCaller; ++t)
      threads_.emplace_back([this, t, seed] { run_(t, seed + static_cast<std::uint64_t>(t)); });
  }
  // On the way out of a failed test too: the threads must not outlive their Client.
  ~Caller() {
    stop_.store(true);
    join();
  }
  void join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // Only after join().
  const std::vector<std::shared_ptr<CallRecord>>& records() const { return records_; }

 private:
  void run_(int thread, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const bool wait_for_ready = index_ < kCallers / 2;
    std::vector<std::shared_ptr<CallRecord>> mine;
    for (std::uint64_t n = 0; !stop_.load(); ++n) {
      auto record = std::make_shared<CallRecord>();
      record->idempotent = rng() % 2 == 0;
      record->token = "c" + std::to_string(index_) + "t" + std::to_string(thread) + "n" +
                      std::to_string(n) + (record->idempotent ? "i" : "x");
      // Mostly quick work; some long enough to be in flight when an instance dies; a few
      // longer than any deadline (their late replies must go nowhere).
      const auto dice = rng() % 1000;
      const unsigned work_ms = dice < 2 ? 2500 : dice < 50 ? 50 + rng() % 150 : rng() % 3;
      const milliseconds timeout(1000 + 500 * (rng() % 3));
      const CallOptions options{
          .timeout = timeout, .wait_for_ready = wait_for_ready, .idempotent = record->idempotent};
      record->issued = Clock::now();
      record->deadline = record->issued + timeout;
      mine.push_back(record);
      client_.call_async("chaos", "work", record->token + " " + std::to_string(work_ms), options,
                         [record](Reply reply) {
                           const auto now = Clock::now();
                           std::lock_guard lock(record->mutex);
                           if (++record->outcomes == 1) {
                             record->ended = now;
                             record->status = reply.status;
                             record->payload = std::move(reply.payload);
                             record->message = std::move(reply.message);
                           }
                           record->cv.notify_all();
                         });
      Status status = Status::ok;
      {
        std::unique_lock lock(record->mutex);
        record->cv.wait_until(lock, record->deadline + kWatchdog,
                              [&] { return record->outcomes > 0; });
        status = record->outcomes > 0 ? record->status : Status::internal;
      }
      // Pacing, so that 16 threads do not take every core of the machine; longer after
      // a failure, so that a fail-fast caller does not spin while there is nothing to call.
      std::this_thread::sleep_for(status == Status::ok ? 2ms : 20ms);
    }
    std::lock_guard lock(mutex_);
    records_.insert(records_.end(), mine.begin(), mine.end());
  }

  int index_;
  Client client_;
  std::atomic<bool>& stop_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<CallRecord>> records_;
  std::vector<std::thread> threads_;
};

// The killer's view of one instance slot.
struct Slot {
  std::unique_ptr<Process> process;
  std::string name;
  int generation = 0;
  bool stopped = false;
};

enum class Act { kill, revive, stop, cont, broker_down, broker_up };
struct Event {
  double at_s;
  Act act;
  int slot = -1;
  double revive_after_s = 0;  // kill
  bool operator>(const Event& o) const { return at_s > o.at_s; }
};

// The killer's timeline for `seconds` of calling, drawn from `rng`: one SIGSTOP in the
// first third, one broker restart around the middle, and SIGKILLs every 2-5 s outside
// those two windows (which are kept clear so that their detection times mean something).
std::vector<Event> timeline(std::mt19937_64& rng, double seconds) {
  auto uniform = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  std::vector<Event> events;
  const double stop_s = uniform(0.15, 0.3) * seconds;
  const double stop_len = std::chrono::duration<double>(kStopFor).count();
  events.push_back({stop_s, Act::stop});
  events.push_back({stop_s + stop_len, Act::cont});
  const double down_s = uniform(0.45, 0.6) * seconds;
  const double down_len = uniform(0.3, 1.5);
  events.push_back({down_s, Act::broker_down});
  events.push_back({down_s + down_len, Act::broker_up});
  for (double t = uniform(1.5, 3.0); t < seconds - 3; t += uniform(2.0, 5.0)) {
    const bool near_stop = t > stop_s - 1 && t < stop_s + stop_len + 1.5;
    const bool near_restart = t > down_s - 1 && t < down_s + down_len + 2;
    if (!near_stop && !near_restart) events.push_back({t, Act::kill, -1, uniform(0.1, 2.0)});
  }
  return events;
}

// The instances of "chaos" the broker routes to, by connection name; nothing if it
// cannot be asked right now.
std::optional<std::vector<std::string>> routed_instances(Client& observer) {
  try {
    std::vector<std::string> names;
    const auto list = broker_services(observer);
    for (const auto& s : list.services())
      if (s.name() == "chaos")
        for (const auto& i : s.instances())
          if (!i.draining()) names.push_back(i.client());
    return names;
  } catch (const Error&) {
    return std::nullopt;
  }
}

bool is_routed(Client& observer, const std::string& name) {
  const auto names = routed_instances(observer);
  return names && std::find(names->begin(), names->end(), name) != names->end();
}

bool is_gone(Client& observer, const std::string& name) {
  const auto names = routed_instances(observer);
  return names && std::find(names->begin(), names->end(), name) == names->end();
}

// Polls `condition` until it holds (returns the milliseconds it took) or `timeout`.
std::optional<double> time_until(const std::function<bool()>& condition, Clock::time_point since,
                                 milliseconds timeout) {
  while (Clock::now() - since < timeout) {
    if (condition()) return ms_between(since, Clock::now());
    std::this_thread::sleep_for(2ms);
  }
  return std::nullopt;
}

std::string figures(std::vector<double> values) {
  if (values.empty()) return "none";
  std::sort(values.begin(), values.end());
  std::ostringstream out;
  out << std::fixed << std::setprecision(0) << values.size() << " x, min " << values.front()
      << " ms, median " << values[values.size() / 2] << " ms, max " << values.back() << " ms";
  return out.str();
}

// Tokens each instance logged, over every generation of every slot.
std::unordered_map<std::string, int> executions(const std::string& dir) {
  std::unordered_map<std::string, int> count;
  for (int slot = 0; slot < kInstances; ++slot) {
    std::ifstream in(dir + "/executed-" + std::to_string(slot) + ".log");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) ++count[line];
  }
  return count;
}

std::string counters_line(const admin::Counters& c) {
  std::ostringstream out;
  out << "calls " << c.calls() << ", retried " << c.retried() << ", leases expired "
      << c.leases_expired() << ", disconnects " << c.disconnects() << ", late replies "
      << c.late_replies() << ", rejected replies " << c.rejected_replies() << ", dropped replies "
      << c.dropped_replies() << ", hello required " << c.hello_required();
  return out.str();
}

}  // namespace

TEST_CASE(
    "chaos: every call ends once, on time, at its own caller, and nothing is executed "
    "twice while instances and the broker are killed",
    "[chaos]") {
  const std::uint64_t seed = env_number("SAGEBUS_CHAOS_SEED", std::random_device{}());
  const double seconds = static_cast<double>(env_number("SAGEBUS_CHAOS_SECONDS", 60));
  std::cout << "chaos seed: " << seed << " (SAGEBUS_CHAOS_SEED=" << seed
            << " replays the killer's timeline)" << std::endl;
  std::mt19937_64 rng(seed);
  child::TempDir dir("sagebus-chaos", std::getenv("SAGEBUS_CHAOS_KEEP") != nullptr);

#ifdef SAGEBUS_CHAOS_SANITIZED
  // Children inherit it: the broker's quarantine of freed memory is bounded, not its RSS.
  {
    const char* asan = std::getenv("ASAN_OPTIONS");
    std::string options = asan != nullptr ? asan : "";
    options += (options.empty() ? "" : ":") + std::string("quarantine_size_mb=64");
    ::setenv("ASAN_OPTIONS", options.c_str(), 1);
  }
#endif

  ChaosBroker broker(dir.path());
  broker.start();
  RssSampler rss(broker);

  std::vector<Slot> slots(kInstances);
  auto launch = [&](int i) {
    Slot& s = slots[static_cast<std::size_t>(i)];
    s.process.reset();  // reaps the previous generation
    s.name = "chaos-i" + std::to_string(i) + "-g" + std::to_string(++s.generation);
    s.process = std::make_unique<Process>(
        std::vector<std::string>{SAGEBUS_CHAOS_INSTANCE, broker.endpoint(), s.name,
                                 dir.path() + "/executed-" + std::to_string(i) + ".log"},
        dir.path() + "/" + s.name + ".out");
    s.stopped = false;
  };
  for (int i = 0; i < kInstances; ++i)
    launch(i);
  Client observer({.endpoint = broker.endpoint(), .name = "chaos-observer"});
  REQUIRE(eventually(
      [&] {
        const auto names = routed_instances(observer);
        return names && names->size() == kInstances;
      },
      20s));

  std::atomic<bool> stop_calling{false};
  std::vector<std::unique_ptr<Caller>> callers;
  for (int c = 0; c < kCallers; ++c)
    callers.push_back(
        std::make_unique<Caller>(broker.endpoint(), c, seed * 1000 + 100 * c, stop_calling));

  // The killer, on this thread (children die with the thread that started them).
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events;
  for (auto& e : timeline(rng, seconds))
    events.push(e);
  std::vector<double> kill_detection, kill_undetected;
  std::optional<double> stop_detection, stop_rejoin;
  double broker_down_ms = 0;
  int kills = 0;
  int stopped_slot = -1;
  Clock::time_point broker_up_at{};
  admin::Counters first_broker;
  std::ostringstream killer_log;  // what the killer did when, for the summary
  killer_log << std::fixed << std::setprecision(2);
  const auto start = Clock::now();
  auto at_time = [&](double s) {
    return start + duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  while (!events.empty() && events.top().at_s < seconds) {
    const Event e = events.top();
    events.pop();
    std::this_thread::sleep_until(at_time(e.at_s));
    const double now_s = std::chrono::duration<double>(Clock::now() - start).count();
    killer_log << "  " << std::setw(6) << now_s << " s  ";
    switch (e.act) {
      case Act::kill: {
        std::vector<int> live;
        for (int i = 0; i < kInstances; ++i)
          if (slots[static_cast<std::size_t>(i)].process &&
              !slots[static_cast<std::size_t>(i)].stopped)
            live.push_back(i);
        if (live.empty()) {
          killer_log << "no instance to kill\n";
          break;
        }
        const int i = live[rng() % live.size()];
        Slot& s = slots[static_cast<std::size_t>(i)];
        const std::string name = s.name;
        const auto killed = Clock::now();
        s.process->signal(SIGKILL);
        ++kills;
        if (auto ms = time_until([&] { return is_gone(observer, name); }, killed, 3s))
          kill_detection.push_back(*ms);
        else
          kill_undetected.push_back(now_s);
        killer_log << "SIGKILL " << name << "\n";
        s.process->wait_exit(2s);
        s.process.reset();
        events.push({now_s + e.revive_after_s, Act::revive, i});
        break;
      }
      case Act::revive:
        launch(e.slot);
        killer_log << "start " << slots[static_cast<std::size_t>(e.slot)].name << "\n";
        break;
      case Act::stop: {
        std::vector<int> live;
        for (int i = 0; i < kInstances; ++i)
          if (slots[static_cast<std::size_t>(i)].process) live.push_back(i);
        if (live.empty()) {
          killer_log << "no instance to stop\n";
          break;
        }
        stopped_slot = live[rng() % live.size()];
        Slot& s = slots[static_cast<std::size_t>(stopped_slot)];
        const auto stopped = Clock::now();
        s.process->signal(SIGSTOP);
        s.stopped = true;
        const std::string name = s.name;
        killer_log << "SIGSTOP " << name << "\n";
        stop_detection = time_until([&] { return is_gone(observer, name); }, stopped, kStopFor);
        break;
      }
      case Act::cont: {
        if (stopped_slot < 0) break;
        Slot& s = slots[static_cast<std::size_t>(stopped_slot)];
        const auto resumed = Clock::now();
        s.process->signal(SIGCONT);
        s.stopped = false;
        const std::string name = s.name;
        killer_log << "SIGCONT " << name << "\n";
        stop_rejoin = time_until([&] { return is_routed(observer, name); }, resumed, 5s);
        break;
      }
      case Act::broker_down:
        try {
          first_broker = broker_status(observer).counters();
        } catch (const Error&) {
        }
        broker.kill();
        killer_log << "SIGKILL sage-busd\n";
        broker_down_ms = -ms_between(start, Clock::now());
        break;
      case Act::broker_up:
        broker.start();
        killer_log << "start sage-busd\n";
        broker_up_at = Clock::now();
        broker_down_ms += ms_between(start, broker_up_at);
        break;
    }
  }
  std::this_thread::sleep_until(at_time(seconds));
  stop_calling.store(true);
  for (auto& c : callers)
    c->join();
  const double calling_s = std::chrono::duration<double>(Clock::now() - start).count();
  admin::Counters second_broker;
  try {
    second_broker = broker_status(observer).counters();
  } catch (const Error&) {
  }
  // Instances finish what they hold (graceful stop); then the logs are complete. Every
  // process still running must exit 0 (under ASan: without a sanitizer report).
  std::vector<std::string> unclean_exits;
  auto check_exit = [&](const std::string& who, int status) {
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      unclean_exits.push_back(who + " (wait status " + std::to_string(status) + ")");
  };
  for (auto& s : slots)
    if (s.process) check_exit(s.name, s.process->stop());
  const long peak_kib = rss.peak_kib();
  check_exit("sage-busd", broker.stop());

  // --- the figures ---------------------------------------------------------------------
  std::map<Status, std::size_t> by_status;
  std::size_t issued = 0, outcomes = 0, missing = 0, duplicated = 0, misdelivered = 0, late = 0;
  std::size_t replied_not_executed = 0, non_idempotent_twice = 0, idempotent_again = 0;
  double max_overshoot_ms = 0;
  std::string worst_overshoot = "none";
  std::size_t past_10ms = 0, past_50ms = 0;  // how the machine's load shows
  std::optional<double> recovery_ms;
  const auto executed = executions(dir.path());
  std::vector<std::string> examples;
  auto example = [&](std::string text) {
    if (examples.size() < 10) examples.push_back(std::move(text));
  };
  for (const auto& caller : callers) {
    for (const auto& r : caller->records()) {
      ++issued;
      std::lock_guard lock(r->mutex);
      if (r->outcomes == 0) {
        ++missing;
        example("no outcome: " + r->token);
        continue;
      }
      outcomes += 1;
      if (r->outcomes > 1) {
        ++duplicated;
        example(std::to_string(r->outcomes) + " outcomes: " + r->token);
      }
      ++by_status[r->status];
      const double overshoot = ms_between(r->deadline, r->ended);
      past_10ms += overshoot > 10 ? 1 : 0;
      past_50ms += overshoot > 50 ? 1 : 0;
      if (overshoot > max_overshoot_ms) {
        max_overshoot_ms = overshoot;
        worst_overshoot = r->token + " at " +
                          std::to_string(static_cast<long>(ms_between(start, r->issued))) +
                          " ms, " + std::string(status_name(r->status)) + ": " + r->message;
      }
      if (overshoot > static_cast<double>(kLateMargin.count())) {
        ++late;
        example("late by " + std::to_string(overshoot) + " ms (" +
                std::string(status_name(r->status)) + "): " + r->token + ": " + r->message);
      }
      if (r->status == Status::ok) {
        if (r->payload.substr(0, r->payload.find('@')) != r->token) {
          ++misdelivered;
          example("reply '" + r->payload + "' delivered for call " + r->token);
        }
        if (!executed.contains(r->token)) {
          ++replied_not_executed;
          example("replied but not executed: " + r->token);
        }
        if (broker_up_at != Clock::time_point{} && r->ended > broker_up_at) {
          const double after = ms_between(broker_up_at, r->ended);
          recovery_ms = std::min(recovery_ms.value_or(after), after);
        }
      }
    }
  }
  for (const auto& [token, times] : executed) {
    if (times < 2) continue;
    if (token.back() == 'i') {
      idempotent_again += static_cast<std::size_t>(times - 1);
    } else {
      ++non_idempotent_twice;
      example("non-idempotent call executed " + std::to_string(times) + " times: " + token);
    }
  }

  std::ostringstream summary;
  summary << std::fixed << std::setprecision(1);
  summary << "==== chaos summary ====\n"
          << "seed                      " << seed << "\n"
          << "calling time              " << calling_s << " s; " << kInstances << " instances, "
          << kCallers << " callers x " << kThreadsPerCaller << " threads (half wait_for_ready)\n"
          << "calls issued              " << issued << "\n"
          << "outcomes                  " << outcomes << " (no outcome: " << missing
          << ", more than one: " << duplicated << ")\n";
  for (const auto& [status, n] : by_status)
    summary << "  " << std::left << std::setw(24) << status_name(status) << std::right << n << "\n";
  summary << "misdelivered replies      " << misdelivered << "\n"
          << "late outcomes (>+" << kLateMargin.count() << " ms)   " << late
          << " (max overshoot of a deadline: " << max_overshoot_ms << " ms, by " << worst_overshoot
          << "; past it by > 10 ms: " << past_10ms << ", > 50 ms: " << past_50ms << ")\n"
          << "non-idempotent run twice  " << non_idempotent_twice << "\n"
          << "idempotent re-executions  " << idempotent_again << "\n"
          << "OK but never executed     " << replied_not_executed << "\n"
          << "unclean exits             " << unclean_exits.size() << "\n"
          << "kills (SIGKILL)           " << kills << "; dropped by the broker after "
          << figures(kill_detection) << "; undetected within 3 s: " << kill_undetected.size()
          << "\n"
          << "stop (SIGSTOP " << kStopFor.count() << " ms)     lease (" << kLease.count()
          << " ms) lost after "
          << (stop_detection ? std::to_string(static_cast<long>(*stop_detection)) + " ms"
                             : std::string("NOT DETECTED"))
          << "; routed again "
          << (stop_rejoin ? std::to_string(static_cast<long>(*stop_rejoin)) + " ms after SIGCONT"
                          : std::string("never"))
          << "\n"
          << "broker restart (SIGKILL)  down " << broker_down_ms << " ms; first OK reply "
          << (recovery_ms ? std::to_string(static_cast<long>(*recovery_ms)) + " ms after restart"
                          : std::string("never"))
          << "\n"
          << "broker peak RSS           " << peak_kib / 1024.0 << " MiB (bound "
          << kRssBoundKib / 1024 << " MiB)\n"
          << "broker 1 counters         " << counters_line(first_broker) << "\n"
          << "broker 2 counters         " << counters_line(second_broker) << "\n";
  summary << "killer timeline:\n" << killer_log.str();
  for (const auto& e : examples)
    summary << "  e.g. " << e << "\n";
  for (const auto& e : unclean_exits)
    summary << "  unclean exit: " << e << "\n";
  summary << "=======================";
  std::cout << summary.str() << std::endl;

  CHECK(issued > 0);
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  CHECK(issued == outcomes);
  CHECK(misdelivered == 0);
  CHECK(late == 0);
  CHECK(peak_kib > 0);
  CHECK(peak_kib < kRssBoundKib);
  CHECK(non_idempotent_twice == 0);
  CHECK(replied_not_executed == 0);
  CHECK(stop_detection.has_value());
  CHECK(kill_undetected.empty());
  CHECK(unclean_exits.empty());
  CHECK(by_status[Status::ok] > issued / 2);
}

}  // namespace sagebus::test
