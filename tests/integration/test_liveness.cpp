// Liveness and broker restarts: leases in both directions, callers and
// handlers that vanish or hang, and broker restarts that must neither lose a call's
// outcome nor run a call twice. Each case WARNs the times it measured.
//
// Covered elsewhere, not repeated here: a SIGKILLed instance's calls end UNAVAILABLE at
// once and an idempotent one is retried (test_lifecycle), a SIGKILLed queue reader's item
// goes to the next reader (test_queues), services and subscriptions come back after a
// broker restart (test_lifecycle, test_pubsub), a call fails fast while no broker was
// ever reachable and waits for one that starts late (test_lifecycle).
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "raw_peer.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Short leases, so that losing one takes a fraction of a second.
constexpr milliseconds kHeartbeat{100};
constexpr unsigned kLiveness = 4;
constexpr milliseconds kLease = kHeartbeat * kLiveness;
const std::vector<std::string> kShortLease{"--heartbeat-ms", std::to_string(kHeartbeat.count()),
                                           "--liveness", std::to_string(kLiveness)};
// What a loaded machine (or a sanitizer build) may add to a lease before it is seen lost:
// the broker checks leases every heartbeat / 2, and the test polls.
constexpr milliseconds kDetectionMargin{1000};
// How late an outcome may come after its deadline: the 100 ms the bus promises, plus
// scheduling on a loaded machine.
constexpr milliseconds kDeadlineMargin{100 + 150};

long long ms(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

// A call's outcome and when it arrived.
struct Timed {
  Reply reply;
  Clock::time_point at;
};

// Starts a call whose outcome (reply or failure) comes with its arrival time.
std::future<Timed> call_timed(Client& client, const std::string& service, const std::string& method,
                              const std::string& payload, const CallOptions& options) {
  auto promise = std::make_shared<std::promise<Timed>>();
  auto future = promise->get_future();
  client.call_async(service, method, payload, options, [promise](Reply r) {
    promise->set_value({std::move(r), Clock::now()});
  });
  return future;
}

// The outcome of `call`, waited for no longer than `timeout`.
Timed outcome_of(std::future<Timed>& call, milliseconds timeout = 15000ms) {
  REQUIRE(call.wait_for(timeout) == std::future_status::ready);
  return call.get();
}

// The connection called `name` as the broker lists it, if it has one.
std::optional<admin::ClientInfo> client_info(Client& admin, const std::string& name) {
  const auto list = broker_clients(admin);
  for (const auto& c : list.clients())
    if (c.name() == name) return c;
  return std::nullopt;
}

bool has_client(Client& admin, const std::string& name) {
  return client_info(admin, name).has_value();
}

// The lease the broker holds on connection `name`, in ms, with " idle" for the idle
// lease; "gone" when it has no such connection.
std::string lease_of(Client& admin, const std::string& name) {
  const auto c = client_info(admin, name);
  return c ? std::to_string(c->lease_ms()) + (c->idle() ? " idle" : "") : "gone";
}

// The connection names of the instances of `service`, live or draining.
std::multiset<std::string> instances_of(Client& admin, const std::string& service) {
  std::multiset<std::string> names;
  const auto list = broker_services(admin);
  for (const auto& s : list.services())
    if (s.name() == service)
      for (const auto& i : s.instances())
        names.insert(i.client());
  return names;
}

// Readers waiting in get() on queue `name`; 0 while the broker has no such queue.
unsigned readers_of(Client& admin, const std::string& name) {
  const auto list = broker_queues(admin);
  for (const auto& q : list.queues())
    if (q.name() == name) return q.readers();
  return 0;
}

// Calls in flight on the instance of `service` served by connection `client`.
unsigned in_flight_on(Client& admin, const std::string& service, const std::string& client) {
  const auto list = broker_services(admin);
  for (const auto& s : list.services())
    if (s.name() == service)
      for (const auto& i : s.instances())
        if (i.client() == client) return i.in_flight();
  return 0;
}

// A gate handlers wait at; opened at the latest by its destructor, so that a failed
// REQUIRE never leaves a Service waiting for its handlers forever. Declare it after the
// Service whose handlers wait at it.
class Gate {
 public:
  void open() {
    if (!opened_) promise_.set_value();
    opened_ = true;
  }
  ~Gate() { open(); }
  std::shared_future<void> waiter() const { return future_; }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_ = promise_.get_future().share();
  bool opened_ = false;
};

// The outcomes of calls by payload, each recorded as it arrives: a call with two
// outcomes, or none, shows. Declare it before the Clients whose calls it records.
class Outcomes {
 public:
  // Starts a call whose payload is `token` and records its outcome under that token.
  void call(Client& client, const std::string& service, const std::string& method,
            const std::string& token, const CallOptions& options) {
    {
      std::lock_guard lock(mutex_);
      started_.push_back(token);
    }
    client.call_async(service, method, token, options, [this, token](Reply r) {
      std::lock_guard lock(mutex_);
      by_token_[token].push_back(std::move(r));
      cv_.notify_all();
    });
  }
  // Waits up to `timeout` for every call started to have at least one outcome.
  bool wait_all(milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return by_token_.size() == started_.size(); });
  }
  std::vector<std::string> started() const {
    std::lock_guard lock(mutex_);
    return started_;
  }
  std::vector<Reply> of(const std::string& token) const {
    std::lock_guard lock(mutex_);
    auto it = by_token_.find(token);
    return it == by_token_.end() ? std::vector<Reply>{} : it->second;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> started_;
  std::map<std::string, std::vector<Reply>> by_token_;
};

// sagebus-test-peer "hold-all", connected as "frozen": an instance of "work" (whose
// "hold" never answers), a subscription to "news.>", and the one item `admin` puts on
// queue "jobs", taken and never acknowledged; its log says "ready" once it holds them.
std::unique_ptr<Process> start_holder(const Broker& broker, Client& admin, const TempDir& dir) {
  LegacyQueue(admin, "jobs").put("job-1");
  auto p = std::make_unique<Process>(
      std::vector<std::string>{test_peer_path(), broker.endpoint(), "hold-all", "frozen", "work",
                               "news.>", "jobs"},
      dir.path() + "/frozen.log");
  REQUIRE(p->wait_for_log("ready", 10s));
  return p;
}

// A second sage-busd on `endpoint` (the first one's, after it died).
std::unique_ptr<Process> restart_broker(const std::string& endpoint, const TempDir& dir,
                                        const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{busd_path(), "--endpoint", endpoint, "--http", "off"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = std::make_unique<Process>(argv, dir.path() + "/restarted.log");
  REQUIRE(p->wait_for_log("listening on " + endpoint, 10s));
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Liveness

TEST_CASE(
    "a client frozen by SIGSTOP loses its lease within heartbeat x liveness, and with it "
    "its calls, registration, subscription, mail and queue item, and after SIGCONT it "
    "comes back by itself",
    "[liveness][lease]") {
  Broker broker(kShortLease);
  Client admin(at(broker, "admin"));
  TempDir dir;
  const auto holder = start_holder(broker, admin, dir);
  Process& frozen = *holder;

  // Two calls running on it, one of them idempotent.
  Client caller(at(broker, "caller"));
  auto plain = call_timed(caller, "work", "hold", "plain", {.timeout = 10s});
  auto idempotent =
      call_timed(caller, "work", "hold", "again", {.timeout = 10s, .idempotent = true});
  REQUIRE(frozen.wait_for_log("holding plain", 5s));
  REQUIRE(frozen.wait_for_log("holding again", 5s));
  // Another instance, registered after those calls went to the frozen one.
  Client healthy_client(at(broker, "healthy"));
  Service healthy(healthy_client, "work");
  healthy.handle("hold", [](const Request& r) { return "healthy:" + std::string(r.payload); });
  healthy.start();
  REQUIRE(healthy.wait_registered(5s));
  // Another reader, waiting for the queue's next item.
  Client reader_client(at(broker, "reader"));
  LegacyQueue reader(reader_client, "jobs");
  auto next_item = std::async(std::launch::async, [&] { return reader.get(10s); });
  REQUIRE(eventually([&] { return readers_of(admin, "jobs") == 1; }, 5s));
  Client sender(at(broker, "sender"));
  REQUIRE(sender.wait_connected(5s));

  frozen.signal(SIGSTOP);
  const auto stopped_at = Clock::now();
  // Mail for it while it is frozen: the broker hands it over, nobody takes it.
  auto letter = std::async(std::launch::async, [&] {
    return error_of([&] { sender.send("frozen", "letter", {.timeout = 10s}); });
  });

  REQUIRE(eventually([&] { return !has_client(admin, "frozen"); }, 10s));
  const auto detected = Clock::now() - stopped_at;
  WARN("SIGSTOPped client dropped by the broker " << ms(detected) << " ms after the stop (lease "
                                                  << kLease.count() << " ms)");
  CHECK(detected >= kLease / 2);  // the lease decided: nothing noticed it sooner
  CHECK(detected <= kLease + kDetectionMargin);

  const auto lost = outcome_of(plain);
  INFO(lost.reply.message);
  CHECK(lost.reply.status == Status::unavailable);
  CHECK_THAT(lost.reply.message, Catch::Contains("lease expired"));
  CHECK(lost.at - stopped_at <= kLease + kDetectionMargin);  // at the loss, not at its 10 s
  CHECK(outcome_of(idempotent).reply.payload == "healthy:again");
  const auto undelivered = letter.get();
  INFO(undelivered.what());
  CHECK(undelivered.status() == Status::undeliverable);
  CHECK_THAT(undelivered.what(), Catch::Contains("lease expired"));
  REQUIRE(next_item.wait_for(5s) == std::future_status::ready);
  CHECK(next_item.get() == "job-1");
  CHECK(instances_of(admin, "work") == std::multiset<std::string>{"healthy"});
  CHECK(subscriptions_on(admin, "news.>") == 0);
  const auto counters = broker_status(admin).counters();
  CHECK(counters.leases_expired() == 1);
  CHECK(counters.retried() == 1);
  CHECK(counters.queue_redeliveries() == 1);

  // Mail sent while it is gone is held for its name.
  auto kept = std::async(std::launch::async, [&] {
    return error_of([&] { sender.send("frozen", "kept", {.timeout = 10s, .hold = 10s}); });
  });
  REQUIRE(eventually([&] { return broker_status(admin).sends_held() == 1; }, 5s));

  frozen.signal(SIGCONT);
  const auto resumed_at = Clock::now();
  REQUIRE(eventually([&] { return has_client(admin, "frozen"); }, 10s));
  WARN("SIGCONTed client connected again " << ms(Clock::now() - resumed_at) << " ms after SIGCONT");
  CHECK(eventually(
      [&] {
        return instances_of(admin, "work") == std::multiset<std::string>{"frozen", "healthy"};
      },
      5s));
  CHECK(eventually([&] { return subscriptions_on(admin, "news.>") == 1; }, 5s));
  CHECK(admin.publish("news.today", "welcome back", {.confirm = true}) == 1);
  CHECK(frozen.wait_for_log("event welcome back", 5s));
  CHECK(kept.get().status() == Status::ok);
  CHECK(frozen.wait_for_log("mail kept", 5s));
}

// On waking up, the SDK must not take what the broker sent it before dropping it at its
// lease expiry: that DELIVER's sender was already told UNDELIVERABLE (Engine::check_stall_).
TEST_CASE(
    "mail a frozen client never took, and whose sender was told UNDELIVERABLE, is not taken "
    "when the client wakes up",
    "[liveness][lease][p2p]") {
  Broker broker(kShortLease);
  Client admin(at(broker, "admin"));
  TempDir dir;
  const auto holder = start_holder(broker, admin, dir);
  Process& frozen = *holder;
  Client sender(at(broker, "sender"));
  REQUIRE(sender.wait_connected(5s));

  frozen.signal(SIGSTOP);
  const auto error = error_of([&] { sender.send("frozen", "letter", {.timeout = 10s}); });
  INFO("the send ended: " << error.what() << "; the frozen peer's log:\n" << frozen.log());
  REQUIRE(error.status() == Status::undeliverable);
  frozen.signal(SIGCONT);
  REQUIRE(eventually([&] { return has_client(admin, "frozen"); }, 10s));
  // Whatever it takes from before its lease expired, it takes before this.
  sender.send("frozen", "after");
  REQUIRE(frozen.wait_for_log("mail after", 5s));

  INFO("the frozen peer's log:\n" << frozen.log());
  CHECK(frozen.log().find("mail letter") == std::string::npos);
}

TEST_CASE(
    "a broker frozen by SIGSTOP: clients notice within heartbeat x liveness and fail calls "
    "UNAVAILABLE, and after SIGCONT they come back by themselves",
    "[liveness][lease]") {
  Broker broker(kShortLease);
  Client instance_client(at(broker, "steady-instance"));
  Service steady(instance_client, "steady");
  steady.handle("echo", [](const Request& r) { return std::string(r.payload); });
  steady.start();
  REQUIRE(steady.wait_registered(5s));
  Client caller(at(broker, "caller"));
  Inbox ticks;
  auto subscription = caller.subscribe("ticks.>", ticks.handler());
  REQUIRE(subscription.wait_subscribed(5s));
  REQUIRE(caller.call("steady", "echo", "before").payload == "before");

  broker.process().signal(SIGSTOP);
  const auto stopped_at = Clock::now();
  auto unanswered = call_timed(caller, "steady", "echo", "unanswered", {.timeout = 10s});

  REQUIRE(eventually([&] { return !caller.connected() && !instance_client.connected(); }, 10s));
  const auto detected = Clock::now() - stopped_at;
  WARN("SIGSTOPped broker found silent by its clients " << ms(detected) << " ms after the stop ("
                                                        << kLease.count() << " ms lease)");
  CHECK(detected >= kLease / 2);
  CHECK(detected <= kLease + kDetectionMargin);
  const auto lost = outcome_of(unanswered);
  INFO(lost.reply.message);
  CHECK(lost.reply.status == Status::unavailable);
  CHECK(lost.at - stopped_at <= kLease + kDetectionMargin);  // not at its 10 s deadline

  // While it is silent, a call fails fast, or waits when it asks to.
  const auto asked_at = Clock::now();
  CHECK(status_of([&] { caller.call("steady", "echo", "impatient", {.timeout = 10s}); }) ==
        Status::unavailable);
  CHECK(Clock::now() - asked_at < 1s);
  auto patient =
      call_timed(caller, "steady", "echo", "patient", {.timeout = 10s, .wait_for_ready = true});

  broker.process().signal(SIGCONT);
  const auto resumed_at = Clock::now();
  REQUIRE(eventually([&] { return caller.connected() && instance_client.connected(); }, 10s));
  WARN("clients welcomed again " << ms(Clock::now() - resumed_at) << " ms after SIGCONT");
  CHECK(outcome_of(patient).reply.payload == "patient");
  CHECK(eventually(
      [&] {
        return error_of([&] {
                 caller.call("steady", "echo", "after", {.timeout = 1s});
               }).status() == Status::ok;
      },
      5s));
  // Subscribed again without user code.
  CHECK(eventually(
      [&] {
        return error_of([&] {
                 caller.publish("ticks.now", "after", {.confirm = true});
               }).status() == Status::ok &&
               ticks.size() >= 1;
      },
      5s));
}

// A broker that resumes after a freeze handles what its clients sent meanwhile as heard
// now (their leases kept), and a client that says HELLO again to a broker that still
// knows it re-subscribes under each subscription's first id, which replaces it
// (Engine::send_subscribe_) instead of holding it twice.
TEST_CASE(
    "a broker resuming after a freeze keeps the leases of clients that spoke meanwhile, and "
    "each of their subscriptions once",
    "[liveness][lease]") {
  Broker broker(kShortLease);
  Client caller(at(broker, "caller"));
  Inbox ticks;
  auto subscription = caller.subscribe("ticks.>", ticks.handler());
  REQUIRE(subscription.wait_subscribed(5s));

  broker.process().signal(SIGSTOP);
  REQUIRE(eventually([&] { return !caller.connected(); }, 10s));
  broker.process().signal(SIGCONT);
  REQUIRE(caller.wait_connected(10s));
  REQUIRE(eventually(
      [&] {
        return error_of([&] {
                 caller.publish("ticks.now", "after", {.confirm = true});
               }).status() == Status::ok &&
               ticks.size() >= 1;
      },
      5s));

  const auto status = broker_status(caller);
  CHECK(status.counters().leases_expired() == 0);
  CHECK(subscriptions_on(caller, "ticks.>") == 1);
}

TEST_CASE(
    "a caller that dies with calls in flight: its calls are cancelled at once and their "
    "instance freed while the service is not disturbed",
    "[liveness][caller]") {
  Broker broker;
  GatedService slow(broker.endpoint(), "slow", 8);
  Client admin(at(broker, "admin"));
  TempDir dir;
  Process doomed(
      {test_peer_path(), broker.endpoint(), "call", "doomed", "slow", "wait", "3", "20000"},
      dir.path() + "/doomed.log");
  REQUIRE(doomed.wait_for_log("called 3", 10s));
  REQUIRE(eventually([&] { return in_flight(admin, "slow") == 3; }, 5s));
  const auto before = broker_status(admin).counters();

  doomed.signal(SIGKILL);
  const auto killed_at = Clock::now();
  REQUIRE(doomed.wait_exit(5s) != -1);
  REQUIRE(eventually([&] { return !has_client(admin, "doomed"); }, 5s));
  WARN("SIGKILLed caller dropped by the broker " << ms(Clock::now() - killed_at)
                                                 << " ms after the kill");
  CHECK(Clock::now() - killed_at < 1s);  // its connection's close is seen, not its lease
  // Its calls are cancelled with it: the instance's slots are free while its handlers,
  // told CANCEL, still run.
  CHECK(in_flight(admin, "slow") == 0);
  CHECK(broker_status(admin).counters().cancelled() - before.cancelled() == 3);

  slow.open();
  CHECK(admin.call("slow", "wait", "still here").payload == "still here");
  const auto status = broker_status(admin);
  CHECK(status.calls_in_flight() == 0);
  CHECK(status.calls_waiting() == 0);
  // Whatever the cancelled handlers still sent is dropped as sent after the cancel; nothing
  // is taken for a reply nobody was given.
  CHECK(status.counters().replies_after_cancel() - before.replies_after_cancel() <= 3);
  CHECK(status.counters().rejected_replies() == before.rejected_replies());
  CHECK(status.counters().dropped_replies() == before.dropped_replies());
  CHECK(in_flight(admin, "slow") == 0);
  CHECK(slow.client().connected());
  CHECK(instances_of(admin, "slow") == std::multiset<std::string>{"slow-instance"});
  CHECK(doomed.log().find("outcome") == std::string::npos);
}

TEST_CASE(
    "a handler that hangs in a live process: its callers get DEADLINE_EXCEEDED at their "
    "deadline, and its instance is never given more than max_inflight calls",
    "[liveness][hung]") {
  Broker broker({"--max-waiting", "1"});
  std::atomic<int> entered{0};  // handler runs
  Client hung_client(at(broker, "hung-instance"));
  // Spare workers: a third call given to it would run at once, and show.
  Service hung(hung_client, "hung", {.max_inflight = 2, .workers = 4});
  Gate gate;
  hung.handle("work", [&entered, waiter = gate.waiter()](const Request&) {
    ++entered;
    waiter.wait();
    return std::string("hung");
  });
  hung.start();
  REQUIRE(hung.wait_registered(5s));
  Client caller(at(broker, "caller"));
  Client admin(at(broker, "admin"));
  REQUIRE(admin.wait_connected(5s));

  auto ends_at_deadline = [&](const std::string& token, milliseconds timeout) {
    const auto started = Clock::now();
    auto call = call_timed(caller, "hung", "work", token, {.timeout = timeout});
    return std::make_pair(started, std::move(call));
  };
  auto check_deadline = [&](std::pair<Clock::time_point, std::future<Timed>>& call,
                            milliseconds timeout) {
    const auto outcome = outcome_of(call.second);
    const auto took = outcome.at - call.first;
    WARN("a call to the hung handler with a " << timeout.count() << " ms timeout ended after "
                                              << ms(took) << " ms: " << outcome.reply.message);
    CHECK(outcome.reply.status == Status::deadline_exceeded);
    CHECK(took >= timeout);
    CHECK(took <= timeout + kDeadlineMargin);
  };

  // Its two slots: each call ends at its deadline, and keeps its slot while the handler hangs.
  auto first = ends_at_deadline("1", 300ms);
  auto second = ends_at_deadline("2", 300ms);
  check_deadline(first, 300ms);
  check_deadline(second, 300ms);
  CHECK(entered == 2);
  CHECK(in_flight(admin, "hung") == 2);

  // The next call waits for capacity until its deadline; one more than the wait queue
  // holds (--max-waiting 1) is OVERLOADED at once.
  auto waiting = ends_at_deadline("3", 1000ms);
  REQUIRE(eventually([&] { return broker_status(admin).calls_waiting() == 1; }, 1s));
  const auto asked_at = Clock::now();
  CHECK(status_of([&] { caller.call("hung", "work", "4", {.timeout = 5s}); }) ==
        Status::overloaded);
  CHECK(Clock::now() - asked_at < 500ms);
  check_deadline(waiting, 1000ms);
  CHECK(entered == 2);
  CHECK(in_flight(admin, "hung") == 2);

  // A healthy instance takes what follows; the hung one still gets nothing.
  Client healthy_client(at(broker, "healthy-instance"));
  Service healthy(healthy_client, "hung", {.max_inflight = 4});
  healthy.handle("work", [](const Request&) { return std::string("healthy"); });
  healthy.start();
  REQUIRE(healthy.wait_registered(5s));
  for (int i = 0; i < 20; ++i)
    CHECK(caller.call("hung", "work", "x", {.timeout = 5s}).payload == "healthy");
  CHECK(entered == 2);
  CHECK(in_flight_on(admin, "hung", "hung-instance") == 2);

  // When it comes back to life, its replies are late: counted, and its slots are free.
  const auto late_before = broker_status(admin).counters().late_replies();
  gate.open();
  CHECK(eventually(
      [&] { return broker_status(admin).counters().late_replies() - late_before == 2; }, 5s));
  CHECK(in_flight(admin, "hung") == 0);
  healthy.stop();
}

// ---------------------------------------------------------------------------------------
// Broker restarts

TEST_CASE(
    "calls in flight when the broker is SIGKILLed and restarted each end exactly once, none "
    "runs twice, and a call waiting for the broker completes after the restart",
    "[restart]") {
  auto broker = std::make_unique<Broker>(kShortLease);
  const auto endpoint = broker->endpoint();
  std::mutex mutex;
  std::map<std::string, int> executed;  // by payload: how often the handler ran for it
  Outcomes outcomes;
  Client instance_client(at(endpoint, "ledger-instance"));
  Service ledger(instance_client, "ledger", {.max_inflight = 8});
  ledger.handle("record", [&](const Request& r) {
    {
      std::lock_guard lock(mutex);
      ++executed[std::string(r.payload)];
    }
    std::this_thread::sleep_for(50ms);  // long enough to be in flight at the kill
    return std::string(r.payload);
  });
  ledger.start();
  REQUIRE(ledger.wait_registered(5s));
  Client caller(at(endpoint, "caller"));
  REQUIRE(caller.wait_connected(5s));
  auto runs = [&] {
    std::lock_guard lock(mutex);
    return executed.size();
  };

  // 40 calls, 8 at a time: the kill comes when some are answered, some running, most
  // waiting.
  for (int i = 0; i < 40; ++i)
    outcomes.call(caller, "ledger", "record", "before-" + std::to_string(i), {.timeout = 10s});
  REQUIRE(eventually([&] { return runs() >= 12; }, 10s));
  broker->process().signal(SIGKILL);
  REQUIRE(broker->process().wait_exit(5s) != -1);
  REQUIRE(eventually([&] { return !caller.connected() && !instance_client.connected(); }, 5s));

  // While it is down: a call fails fast, unless it asks to wait.
  const auto asked_at = Clock::now();
  CHECK(status_of([&] { caller.call("ledger", "record", "impatient", {.timeout = 10s}); }) ==
        Status::unavailable);
  CHECK(Clock::now() - asked_at < 1s);
  const auto patient_at = Clock::now();
  auto patient =
      call_timed(caller, "ledger", "record", "patient", {.timeout = 10s, .wait_for_ready = true});

  TempDir dir;
  const auto again = restart_broker(endpoint, dir, kShortLease);
  const auto patient_outcome = outcome_of(patient);
  CHECK(patient_outcome.reply.payload == "patient");
  WARN("a call made while the broker was down, with wait_for_ready, completed "
       << ms(patient_outcome.at - patient_at) << " ms after it was made");
  for (int i = 0; i < 40; ++i)
    outcomes.call(caller, "ledger", "record", "after-" + std::to_string(i), {.timeout = 10s});
  REQUIRE(outcomes.wait_all(20s));

  std::map<std::string, int> by_status;
  int ran_twice = 0, two_outcomes = 0, wrong_payload = 0, ran_but_unavailable = 0;
  for (const auto& token : outcomes.started()) {
    const auto replies = outcomes.of(token);
    const int runs_of_token = [&] {
      std::lock_guard lock(mutex);
      return executed.contains(token) ? executed[token] : 0;
    }();
    if (runs_of_token > 1) ++ran_twice;
    if (replies.size() != 1) ++two_outcomes;
    if (replies.empty()) continue;
    const auto& reply = replies.front();
    ++by_status[std::string(status_name(reply.status))];
    if (reply.ok() && reply.payload != token) ++wrong_payload;
    if (reply.ok()) CHECK(runs_of_token == 1);
    if (reply.status == Status::unavailable && runs_of_token == 1) ++ran_but_unavailable;
    if (token.starts_with("after-"))
      CHECK(reply.ok());
    else
      CHECK((reply.ok() || reply.status == Status::unavailable));
  }
  std::string summary;
  for (const auto& [status, n] : by_status)
    summary += " " + status + "=" + std::to_string(n);
  WARN("80 calls across a broker SIGKILL and restart:"
       << summary << "; " << ran_but_unavailable
       << " ended UNAVAILABLE after their handler had run (\"may or may not have taken effect\")");
  CHECK(by_status["UNAVAILABLE"] >= 1);  // the kill did catch calls in flight
  CHECK(two_outcomes == 0);
  CHECK(ran_twice == 0);
  CHECK(wrong_payload == 0);
}

// Dispatch ids start at 1 in every broker process, so the reply of a handler that outlives
// a restart carries the id of one of the new broker's calls.
TEST_CASE(
    "a handler still running when the broker restarts: its reply answers no call of the new "
    "broker",
    "[restart]") {
  auto broker = std::make_unique<Broker>(kShortLease);
  const auto endpoint = broker->endpoint();
  Client instance_client(at(endpoint, "survivor-instance"));
  Service survivor(instance_client, "survivor", {.max_inflight = 4});
  Gate old_gate, new_gate;
  survivor.handle("old", [waiter = old_gate.waiter()](const Request& r) {
    waiter.wait();
    return "old:" + std::string(r.payload);
  });
  survivor.handle("new", [waiter = new_gate.waiter()](const Request& r) {
    waiter.wait();
    return "new:" + std::string(r.payload);
  });
  survivor.start();
  REQUIRE(survivor.wait_registered(5s));
  Client caller(at(endpoint, "caller"));
  // The old broker's first call: dispatch id 1.
  auto old_call = call_timed(caller, "survivor", "old", "x", {.timeout = 10s});
  REQUIRE(eventually([&] { return in_flight(caller, "survivor") == 1; }, 5s));

  broker->process().signal(SIGKILL);
  REQUIRE(broker->process().wait_exit(5s) != -1);
  CHECK(outcome_of(old_call).reply.status == Status::unavailable);
  TempDir dir;
  const auto again = restart_broker(endpoint, dir, kShortLease);
  REQUIRE(caller.wait_connected(10s));
  // The new broker's first call, on the same instance: dispatch id 1 again.
  auto new_call =
      call_timed(caller, "survivor", "new", "y", {.timeout = 10s, .wait_for_ready = true});
  REQUIRE(eventually([&] { return in_flight(caller, "survivor") == 1; }, 10s));

  old_gate.open();  // the old call's handler returns now, to the new broker
  (void)eventually([&] { return new_call.wait_for(0s) == std::future_status::ready; }, 1s);
  new_gate.open();
  const auto outcome = outcome_of(new_call);
  CHECK(outcome.reply.payload == "new:y");
}

// A LegacyQueue::get() waiting when the broker goes away is asked again of the restarted
// broker, within its timeout (QUEUE_GET waits for ready; Engine::requeue_or_fail_).
TEST_CASE(
    "a queue reader waiting in get() when the broker restarts gets an item put after the "
    "restart, without user code",
    "[restart][queues]") {
  auto broker = std::make_unique<Broker>(kShortLease);
  const auto endpoint = broker->endpoint();
  Client reader_client(at(endpoint, "reader"));
  LegacyQueue reader(reader_client, "jobs");
  auto item = std::async(std::launch::async, [&] { return reader.get(10s); });
  Client writer_client(at(endpoint, "writer"));
  REQUIRE(eventually([&] { return readers_of(writer_client, "jobs") == 1; }, 5s));

  broker->process().signal(SIGKILL);
  REQUIRE(broker->process().wait_exit(5s) != -1);
  TempDir dir;
  const auto again = restart_broker(endpoint, dir, kShortLease);
  LegacyQueue writer(writer_client, "jobs");
  REQUIRE(eventually(
      [&] {
        try {
          writer.put("after the restart");
          return true;
        } catch (const Error&) {
          return false;  // not connected again yet
        }
      },
      10s));

  REQUIRE(item.wait_for(10s) == std::future_status::ready);
  CHECK(item.get() == "after the restart");
}

TEST_CASE("after a broker restart, clients reconnect within reconnect_max however long it was away",
          "[restart][backoff]") {
  auto broker = std::make_unique<Broker>(kShortLease);
  const auto endpoint = broker->endpoint();
  constexpr auto kMin = 100ms, kMax = 400ms;
  Client client(
      {.endpoint = endpoint, .name = "patient", .reconnect_min = kMin, .reconnect_max = kMax});
  REQUIRE(client.wait_connected(5s));

  broker->process().signal(SIGKILL);
  REQUIRE(broker->process().wait_exit(5s) != -1);
  REQUIRE(eventually([&] { return !client.connected(); }, 5s));
  // The scenario: away long enough for the client's backoff to reach its cap.
  std::this_thread::sleep_for(1500ms);
  TempDir dir;
  const auto again = restart_broker(endpoint, dir, kShortLease);
  const auto listening_at = Clock::now();

  REQUIRE(client.wait_connected(5s));
  const auto took = Clock::now() - listening_at;
  WARN("reconnected " << ms(took) << " ms after the restarted broker listened (reconnect_min "
                      << kMin.count() << " ms, reconnect_max " << kMax.count() << " ms)");
  // The cap, plus libzmq's jitter (up to reconnect_min), plus a margin.
  CHECK(took <= kMax + kMin + 500ms);
}

// A caller in a synchronous call may wait on the client's socket itself (Engine::call); a
// second caller's request, sent meanwhile, must still end at its own deadline, though the
// first one's wait was planned without it.
TEST_CASE(
    "a call to a silent broker ends at its deadline while another thread's call waits on the "
    "same client",
    "[liveness][deadline]") {
  Broker broker;
  EchoInstance echo(broker.endpoint(), "echo");
  GatedService held(broker.endpoint(), "held", ServiceOptions{}.max_inflight);
  Client admin(at(broker, "admin"));
  Client shared(at(broker, "shared"));
  // Right after a call of its own, a caller is the likeliest to wait on the socket itself.
  auto first = std::async(std::launch::async, [&] {
    shared.call("echo", "echo", "warm");
    return shared.call("held", "wait", "first", {.timeout = 20s}).payload;
  });
  REQUIRE(eventually([&] { return in_flight(admin, "held") == 1; }, 5s));

  broker.process().signal(SIGSTOP);
  const auto asked_at = Clock::now();
  const auto status = status_of([&] { shared.call("echo", "echo", "short", {.timeout = 300ms}); });
  const auto took = Clock::now() - asked_at;
  broker.process().signal(SIGCONT);
  held.open();

  WARN("the short call ended after " << ms(took) << " ms (deadline 300 ms)");
  CHECK(status == Status::deadline_exceeded);
  CHECK(took <= 300ms + kDeadlineMargin);
  CHECK(first.get() == "first");
}

TEST_CASE(
    "the broker answers every HEARTBEAT but one that wants no answer, and either renews the "
    "lease",
    "[liveness]") {
  // A lease of 1.6 s, and a heartbeat that wants no answer every 100 ms for longer.
  Broker broker({"--heartbeat-ms", "400", "--liveness", "4"});
  RawPeer raw(broker.endpoint());
  REQUIRE(raw.hello("raw-heartbeats"));
  wire::Header quiet;
  quiet.set_kind(wire::HEARTBEAT);
  quiet.set_no_answer(true);
  for (int i = 0; i < 20; ++i) {
    raw.send(quiet);
    std::this_thread::sleep_for(100ms);  // the pace of the heartbeats, not a wait for an outcome
  }
  wire::Header asking;
  asking.set_kind(wire::HEARTBEAT);
  const auto id = raw.send(asking);
  // The first message back answers this one: no quiet heartbeat was answered, and the
  // lease held (a client without one is answered HELLO_REQUIRED).
  const auto answer = raw.receive(5s);
  REQUIRE(answer);
  CHECK(answer->kind() == wire::HEARTBEAT);
  CHECK(answer->id() == id);
}

TEST_CASE("a HEARTBEAT that says idle holds the idle lease until the client's next message",
          "[liveness][lease]") {
  // A short lease of 400 ms, an idle one of 2 s.
  Broker broker({"--heartbeat-ms", "100", "--liveness", "4", "--idle-heartbeat-ms", "500"});
  Client admin(at(broker, "admin"));
  RawPeer stays_idle(broker.endpoint());
  RawPeer beats(broker.endpoint());
  RawPeer hellos(broker.endpoint());
  REQUIRE(stays_idle.hello("stays-idle"));
  REQUIRE(beats.hello("beats"));
  REQUIRE(hellos.hello("hellos"));
  wire::Header idle;
  idle.set_kind(wire::HEARTBEAT);
  idle.set_no_answer(true);
  idle.set_idle(true);
  const auto idle_from = Clock::now();
  for (RawPeer* peer : {&stays_idle, &beats, &hellos})
    peer->send(idle);
  REQUIRE(eventually([&] { return lease_of(admin, "hellos") == "2000 idle"; }, 5s));
  CHECK(lease_of(admin, "stays-idle") == "2000 idle");
  CHECK(lease_of(admin, "beats") == "2000 idle");

  // Any other message takes the short lease again: a heartbeat that does not say idle,
  // or a HELLO again.
  wire::Header plain;
  plain.set_kind(wire::HEARTBEAT);
  plain.set_no_answer(true);
  const auto woke_at = Clock::now();
  beats.send(plain);
  REQUIRE(hellos.hello("hellos"));
  CHECK(lease_of(admin, "hellos") == "400");
  REQUIRE(eventually(
      [&] { return lease_of(admin, "beats") == "gone" && lease_of(admin, "hellos") == "gone"; },
      5s));
  const auto short_lease = Clock::now() - woke_at;
  REQUIRE(eventually([&] { return !has_client(admin, "stays-idle"); }, 10s));
  const auto idle_lease = Clock::now() - idle_from;
  WARN("dropped " << ms(short_lease) << " ms after their last messages (lease 400 ms), and "
                  << ms(idle_lease) << " ms after its idle heartbeat (idle lease 2000 ms)");
  CHECK(short_lease >= 400ms);
  CHECK(short_lease <= 400ms + kDetectionMargin);
  CHECK(idle_lease >= 2000ms);
  CHECK(idle_lease <= 2000ms + kDetectionMargin);
  CHECK(broker_status(admin).counters().leases_expired() == 3);
  CHECK_THAT(broker.log(), Catch::Contains("lease expired (silent for more than 2000 ms, the idle "
                                           "lease)"));
}

TEST_CASE(
    "an SDK client with nothing at stake holds the idle lease, and one with a call in flight "
    "or a service the short one",
    "[liveness][lease]") {
  // Leases of 400 ms and, idle, 2 s.
  Broker broker({"--heartbeat-ms", "100", "--liveness", "4", "--idle-heartbeat-ms", "500"});
  Client admin(at(broker, "admin"));
  Client server(at(broker, "server"));
  Service slow(server, "slow");
  Gate gate;
  auto waiter = gate.waiter();
  slow.handle("wait", [waiter](const Request&) {
    waiter.wait();
    return std::string("done");
  });
  slow.start();
  REQUIRE(slow.wait_registered(5s));
  Client caller(at(broker, "caller"));
  REQUIRE(eventually([&] { return lease_of(admin, "caller") == "2000 idle"; }, 5s));
  // Almost four short leases later it is the same connection, never expired.
  std::this_thread::sleep_for(1500ms);  // the time that passes, not a wait for an outcome
  const auto held = client_info(admin, "caller");
  REQUIRE(held);
  CHECK(held->connected_ms() >= 1500);
  CHECK(lease_of(admin, "server") == "400");

  auto call = call_timed(caller, "slow", "wait", "", {.timeout = 10s});
  CHECK(eventually([&] { return lease_of(admin, "caller") == "400"; }, 5s));
  gate.open();
  CHECK(outcome_of(call).reply.payload == "done");
  CHECK(eventually([&] { return lease_of(admin, "caller") == "2000 idle"; }, 5s));
  CHECK(lease_of(admin, "server") == "400");
  CHECK(broker_status(admin).counters().leases_expired() == 0);
}
