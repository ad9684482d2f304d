// Limits: each one configurable and enforced, each refusal answered and counted by the
// limit's name in /metrics, busctl stats and busctl status; and the broker's memory
// bounded under a flood of calls to a slow service. (max-waiting has its own tests in
// test_balancing.cpp; max-payload and max-header on the raw wire in test_hostile.cpp.)
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <semaphore>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// The calls the broker counts as pending for the connection named `name`.
unsigned pending(Client& observer, const std::string& name) {
  const auto list = broker_clients(observer);
  for (const auto& c : list.clients())
    if (c.name() == name) return c.calls_pending();
  return 0;
}

std::uint64_t refusals(Client& observer, const std::string& limit) {
  const auto status = broker_status(observer);
  for (const auto& l : status.limits())
    if (l.name() == limit) return l.refusals();
  FAIL("no limit " << limit << " in the status reply");
  return 0;
}

// The line of `text` that contains every one of `parts`, or "".
std::string line_with(const std::string& text, const std::vector<std::string>& parts) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (const auto& p : parts)
      all = all && line.find(p) != std::string::npos;
    if (all) return line;
  }
  return {};
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// The listen backlog of the IPv4 TCP socket listening on `port`, as the kernel reports it
// (sock_diag, as `ss -lt` shows it under Send-Q), or -1.
long listen_backlog(std::uint16_t port) {
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return -1;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } ask{};
  ask.header.nlmsg_len = sizeof(ask);
  ask.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  ask.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  ask.request.sdiag_family = AF_INET;
  ask.request.sdiag_protocol = IPPROTO_TCP;
  ask.request.idiag_states = 1U << TCP_LISTEN;
  long backlog = -1;
  if (::send(fd, &ask, sizeof(ask), 0) == static_cast<ssize_t>(sizeof(ask))) {
    // Netlink messages, each padded to 4 bytes (the NLMSG_* macros, without their casts).
    constexpr std::size_t kHeader = (sizeof(nlmsghdr) + 3) & ~std::size_t{3};
    char buffer[16384];
    for (bool done = false; !done;) {
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      const auto size = static_cast<std::size_t>(n);
      for (std::size_t at = 0; at + sizeof(nlmsghdr) <= size;) {
        nlmsghdr h;
        std::memcpy(&h, buffer + at, sizeof(h));
        if (h.nlmsg_len < sizeof(h) || at + h.nlmsg_len > size) break;
        if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        inet_diag_msg socket;
        if (h.nlmsg_len >= kHeader + sizeof(socket)) {
          std::memcpy(&socket, buffer + at + kHeader, sizeof(socket));
          if (ntohs(socket.id.idiag_sport) == port) backlog = socket.idiag_wqueue;
        }
        at += (h.nlmsg_len + 3) & ~std::uint32_t{3};
      }
    }
  }
  ::close(fd);
  return backlog;
}

long somaxconn() {
  long value = -1;
  std::ifstream("/proc/sys/net/core/somaxconn") >> value;
  return value;
}

}  // namespace

TEST_CASE(
    "a connection with max-calls-per-client calls pending is answered OVERLOADED, others "
    "are not, and the refusal shows in /metrics, busctl stats and busctl status",
    "[limits][per-client]") {
  Broker broker({"--max-calls-per-client", "4"});
  GatedService slow(broker.endpoint(), "slow", 2);
  EchoInstance echo(broker.endpoint(), "echo");
  Client greedy(at(broker, "greedy"));
  Client other(at(broker, "other"));
  Client observer(at(broker, "observer"));

  std::vector<std::future<Reply>> held;
  for (int i = 0; i < 4; ++i)
    held.push_back(
        greedy.call_async("slow", "wait", "held-" + std::to_string(i), {.timeout = 20s}));
  // Two in flight on the instance, two waiting for it: all four pending.
  REQUIRE(eventually([&] { return pending(observer, "greedy") == 4; }, 10s));

  const Error refused = error_of([&] { greedy.call("echo", "echo", "one too many"); });
  CHECK(refused.status() == Status::overloaded);
  CHECK_THAT(refused.what(), Catch::Contains("max-calls-per-client"));
  // The limit is per connection: another one calls as usual.
  for (int i = 0; i < 4; ++i)
    CHECK(other.call("echo", "echo", "fine").payload == "fine");

  const std::string metrics = observer.call("$broker", "metrics", "").payload;
  CHECK_THAT(metrics,
             Catch::Contains("\nsagebus_limit_refusals_total{limit=\"max-calls-per-client\"} 1\n"));
  CHECK_THAT(metrics, Catch::Contains("\nsagebus_limit{limit=\"max-calls-per-client\"} 4\n"));
  const auto stats = run(
      {busctl_path(), "--endpoint", broker.endpoint(), "stats", "sagebus_limit_refusals_total"});
  CHECK(stats.exit_code == 0);
  const std::string row = line_with(stats.out, {"limit=max-calls-per-client"});
  INFO(stats.out);
  CHECK_THAT(row, Catch::StartsWith("sagebus_limit_refusals_total"));
  CHECK_THAT(row, Catch::EndsWith(" 1"));
  const auto status = run({busctl_path(), "--endpoint", broker.endpoint(), "status"});
  CHECK(status.exit_code == 0);
  INFO(status.out);
  CHECK_THAT(status.out, Catch::Contains("LIMIT"));
  const std::string limit_row = line_with(status.out, {"max-calls-per-client"});
  CHECK_THAT(limit_row, Catch::Matches("max-calls-per-client +4 +1"));  // LIMIT VALUE REFUSED

  slow.open();
  for (int i = 0; i < 4; ++i)
    CHECK(held[static_cast<std::size_t>(i)].get().payload == "held-" + std::to_string(i));
  CHECK(eventually([&] { return pending(observer, "greedy") == 0; }, 5s));
  CHECK(greedy.call("echo", "echo", "room again").payload == "room again");
}

TEST_CASE("the pending count of a connection returns to 0 whichever way its calls end",
          "[limits][per-client]") {
  TempDir dir;
  Broker broker({"--max-calls-per-client", "3"});
  Client caller(at(broker, "caller"));
  Client observer(at(broker, "observer"));
  auto drained = [&] { return eventually([&] { return pending(observer, "caller") == 0; }, 10s); };
  auto echo_process = [&](const std::string& service, int delay_ms) {
    auto p = std::make_unique<Process>(
        std::vector<std::string>{echo_service_path(), "--endpoint", broker.endpoint(), "--name",
                                 service, "--delay-ms", std::to_string(delay_ms)},
        dir.path() + "/" + service + ".log");
    REQUIRE(p->wait_for_log("ready", 10s));
    return p;
  };

  SECTION("replies") {
    EchoInstance echo(broker.endpoint(), "echo");
    std::vector<std::future<Reply>> calls;
    for (int i = 0; i < 3; ++i)
      calls.push_back(caller.call_async("echo", "echo", "r"));
    for (auto& c : calls)
      CHECK(c.get().payload == "r");
  }
  SECTION("deadlines, waiting for capacity and held by a hung handler") {
    GatedService hung(broker.endpoint(), "hung", 1);
    std::vector<std::future<Reply>> calls;
    for (int i = 0; i < 3; ++i)
      calls.push_back(caller.call_async("hung", "wait", "d", {.timeout = 300ms}));
    for (auto& c : calls)
      CHECK(status_of([&] { c.get(); }) == Status::deadline_exceeded);
    // One of them still holds the instance's slot until its late reply; it no longer
    // counts for its caller, who has its outcome.
    REQUIRE(drained());
    CHECK(in_flight(observer, "hung") == 1);
    hung.open();
  }
  SECTION("its instance lost") {
    auto lossy = echo_process("lossy", 60000);
    std::vector<std::future<Reply>> calls;
    for (int i = 0; i < 3; ++i)
      calls.push_back(caller.call_async("lossy", "echo", "l", {.timeout = 20s}));
    REQUIRE(eventually([&] { return in_flight(observer, "lossy") == 3; }, 10s));
    lossy->signal(SIGKILL);
    for (auto& c : calls)
      CHECK(status_of([&] { c.get(); }) == Status::unavailable);
  }
  SECTION("retried on another instance after its instance was lost") {
    auto lossy = echo_process("retried", 60000);
    std::vector<std::future<Reply>> calls;
    for (int i = 0; i < 3; ++i)
      calls.push_back(
          caller.call_async("retried", "echo", "again", {.timeout = 20s, .idempotent = true}));
    REQUIRE(eventually([&] { return in_flight(observer, "retried") == 3; }, 10s));
    CHECK(pending(observer, "caller") == 3);
    EchoInstance spare(broker.endpoint(), "retried");
    lossy->signal(SIGKILL);
    for (auto& c : calls)
      CHECK(c.get().payload == "again");
  }
  SECTION("its caller gone") {
    GatedService hung(broker.endpoint(), "hung", 1);
    {
      Client leaving(at(broker, "leaving"));
      std::vector<std::future<Reply>> abandoned;
      for (int i = 0; i < 3; ++i)
        abandoned.push_back(leaving.call_async("hung", "wait", "gone", {.timeout = 20s}));
      REQUIRE(eventually([&] { return pending(observer, "leaving") == 3; }, 10s));
    }
    // Its calls are forgotten; the one the instance holds stays until the instance answers.
    CHECK(eventually([&] { return broker_status(observer).calls_waiting() == 0; }, 10s));
    hung.open();
    CHECK(eventually([&] { return broker_status(observer).calls_in_flight() == 0; }, 10s));
  }

  // Whatever happened above, the caller has its whole allowance again.
  REQUIRE(drained());
  GatedService full(broker.endpoint(), "full", 3);
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 3; ++i)
    calls.push_back(caller.call_async("full", "wait", "f", {.timeout = 20s}));
  REQUIRE(eventually([&] { return pending(observer, "caller") == 3; }, 10s));
  CHECK(status_of([&] { caller.call("full", "wait", "x"); }) == Status::overloaded);
  full.open();
  for (auto& c : calls)
    CHECK(c.get().payload == "f");
}

TEST_CASE("the SDK refuses what the broker's max-payload would: a publish, and a reply",
          "[limits][payload]") {
  Broker broker({"--max-payload", "1024"});
  Client instance(at(broker, "big-replier"));
  Service service(instance, "big");
  service.handle("reply", [](const Request&) { return std::string(4096, 'r'); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  REQUIRE(caller.wait_connected(5s));

  // An unconfirmed publish would be dropped by the broker without a word: refused here.
  const Error publish = error_of([&] { caller.publish("big.news", std::string(2048, 'p')); });
  CHECK(publish.status() == Status::invalid_argument);
  CHECK_THAT(publish.what(), Catch::Contains("max-payload of 1024"));
  caller.publish("big.news", std::string(1024, 'p'));  // at the limit: taken

  // A reply over the limit: the caller hears HANDLER_ERROR, and the instance stays.
  const Error reply = error_of([&] { caller.call("big", "reply", "", {.timeout = 5s}); });
  CHECK(reply.status() == Status::handler_error);
  CHECK_THAT(reply.what(), Catch::Contains("4096 bytes exceeds the broker's max-payload"));
  CHECK(broker_status(caller).instances() == 1);
  CHECK(broker_status(caller).counters().disconnects() == 0);
}

TEST_CASE("a SUBSCRIBE beyond max-subscriptions is answered OVERLOADED and counted",
          "[limits][subscriptions]") {
  Broker broker({"--max-subscriptions", "2"});
  Client subscriber(at(broker, "subscriber"));
  Client observer(at(broker, "observer"));
  Inbox inbox;
  auto a = subscriber.subscribe("a.>", inbox.handler());
  auto b = subscriber.subscribe("b.>", inbox.handler());
  REQUIRE(a.wait_subscribed(5s));
  REQUIRE(b.wait_subscribed(5s));

  auto c = subscriber.subscribe("c.>", inbox.handler());
  const Error refused = error_of([&] { c.wait_subscribed(5s); });
  CHECK(refused.status() == Status::overloaded);
  CHECK_THAT(refused.what(), Catch::Contains("2 subscriptions"));
  CHECK(refusals(observer, "max-subscriptions") == 1);
  // Per connection: another one subscribes as usual.
  auto elsewhere = observer.subscribe("c.>", inbox.handler());
  CHECK(elsewhere.wait_subscribed(5s));
  // The two that were accepted still deliver.
  CHECK(subscriber.publish("a.x", "to a", {.confirm = true}) == 1);
  CHECK(eventually([&] { return inbox.size() == 1; }, 5s));
}

TEST_CASE(
    "max-header: a call whose header is over it is refused at once and counted, until a "
    "reload raises it",
    "[limits][header]") {
  TempDir dir;
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const std::string file = dir.path() + "/busd.toml";
  const std::string base = "endpoint = [\"" + endpoint + "\"]\nhttp = \"off\"\n";
  write(file, base + "max-header = 2048\n");
  Process busd({busd_path(), "--config", file}, dir.path() + "/busd.log");
  REQUIRE(busd.wait_for_log("listening on " + endpoint, 10s));
  EchoInstance echo(endpoint, "echo");
  Client caller(at(endpoint, "caller"));
  Client observer(at(endpoint, "observer"));
  const CallOptions big{.timeout = 1s, .headers = {{"padding", std::string(3000, 'p')}}};

  CHECK(caller.call("echo", "echo", "small header").payload == "small header");
  // The broker does not parse the header, but answers by the id it starts with.
  const auto asked = std::chrono::steady_clock::now();
  const Error refused = error_of([&] { caller.call("echo", "echo", "big header", big); });
  CHECK(refused.status() == Status::invalid_argument);
  CHECK_THAT(refused.what(), Catch::Contains("over sage-busd's max-header of 2048 bytes"));
  CHECK(std::chrono::steady_clock::now() - asked < 900ms);  // not at its 1 s deadline
  CHECK(refusals(observer, "max-header") == 1);
  CHECK(broker_status(observer).counters().malformed() == 1);

  write(file, base + "max-header = 8192\n");
  busd.signal(SIGHUP);
  REQUIRE(busd.wait_for_log("reload: max-header: 2048 -> 8192", 5s));
  CHECK(caller.call("echo", "echo", "big header", big).payload == "big header");
  CHECK(refusals(observer, "max-header") == 1);
}

TEST_CASE("a flood of calls to a slow service: every call ends once, broker memory stays bounded",
          "[limits][flood]") {
  constexpr int kClients = 4;
  constexpr int kCallsEach = 5000;
  constexpr int kOutstanding = kCallsEach;  // per flooding client: all at once
  constexpr std::size_t kPayload = 4096;
  constexpr int kMaxWaiting = 1000;
  constexpr int kPeerQueue = 500;
  Broker broker(
      {"--max-waiting", std::to_string(kMaxWaiting), "--peer-queue", std::to_string(kPeerQueue)});
  Client service_client(at(broker, "slow-instance"));
  Service slow(service_client, "slow", {.max_inflight = 1, .workers = 1});
  slow.handle("work", [](const Request&) {
    std::this_thread::sleep_for(1ms);
    return std::string("done");
  });
  slow.start();
  REQUIRE(slow.wait_registered(5s));
  // Everything the callbacks touch is declared before the clients that run them, so that
  // it outlives their callback threads.
  const int total = kClients * kCallsEach;
  std::vector<std::atomic<int>> outcomes(static_cast<std::size_t>(total));
  std::mutex mutex;
  std::map<Status, int> by_status;
  std::atomic<int> ended{0};
  std::vector<std::unique_ptr<std::counting_semaphore<kOutstanding>>> rooms;
  for (int c = 0; c < kClients; ++c)
    rooms.push_back(std::make_unique<std::counting_semaphore<kOutstanding>>(kOutstanding));
  std::vector<std::unique_ptr<Client>> callers;
  for (int c = 0; c < kClients; ++c)
    callers.push_back(std::make_unique<Client>(at(broker, "flood-" + std::to_string(c))));
  Client observer(at(broker, "observer"));
  const std::string payload(kPayload, 'f');
  for (auto& c : callers)  // warm up: connections, buffers, the allocator's pools
    for (int i = 0; i < 20; ++i)
      REQUIRE(c->call("slow", "work", payload).payload == "done");

  const pid_t pid = broker.process().pid();
  const long baseline = rss_kib(pid);
  std::atomic<long> peak{baseline};
  std::atomic<bool> flooding{true};
  std::thread sampler([&] {
    while (flooding) {
      const long now = static_cast<long>(child::rss_kib(pid));
      long seen = peak;
      while (now > seen && !peak.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(5ms);
    }
  });

  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> flooders;
  for (int c = 0; c < kClients; ++c) {
    flooders.emplace_back([&, c] {
      auto& room = *rooms[static_cast<std::size_t>(c)];
      for (int i = 0; i < kCallsEach; ++i) {
        room.acquire();
        const std::size_t index = static_cast<std::size_t>(c * kCallsEach + i);
        callers[static_cast<std::size_t>(c)]->call_async("slow", "work", payload, {.timeout = 2s},
                                                         [&, index](Reply r) {
                                                           ++outcomes[index];
                                                           {
                                                             std::lock_guard lock(mutex);
                                                             ++by_status[r.status];
                                                           }
                                                           ++ended;
                                                           room.release();
                                                         });
      }
      for (int i = 0; i < kOutstanding; ++i)  // every call of this client has ended
        room.acquire();
    });
  }
  for (auto& f : flooders)
    f.join();
  const auto took = std::chrono::steady_clock::now() - started;
  flooding = false;
  sampler.join();
  const long after = rss_kib(pid);

  CHECK(ended == total);
  int once = 0;
  for (const auto& o : outcomes)
    once += o == 1 ? 1 : 0;
  CHECK(once == total);
  std::ostringstream statuses;
  for (const auto& [status, n] : by_status) {
    statuses << ' ' << status_name(status) << '=' << n;
    CHECK((status == Status::ok || status == Status::overloaded ||
           status == Status::deadline_exceeded));
  }
  CHECK(by_status[Status::ok] > 0);
  CHECK(by_status[Status::overloaded] > 0);

  // What the broker may hold at once: the calls waiting for the instance and the
  // messages queued per connection, far less than what was sent. The sanitizers keep
  // freed memory in quarantine (256 MiB by default), so their bound is theirs.
#if defined(__SANITIZE_ADDRESS__)
  constexpr long kBoundKib = 48 * 1024 + 256 * 1024;
#else
  constexpr long kBoundKib = 48 * 1024;
#endif
  const long sent_kib = static_cast<long>(total) * static_cast<long>(kPayload) / 1024;
  WARN("flood: " << total << " calls of " << kPayload << " bytes (" << sent_kib / 1024
                 << " MiB) from " << kClients << " clients in "
                 << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                 << " ms; outcomes:" << statuses.str() << "; broker RSS " << baseline
                 << " KiB before, peak " << peak << " KiB (+" << (peak - baseline) << " KiB), "
                 << after << " KiB after; bound +" << kBoundKib << " KiB");
  CHECK(peak - baseline < kBoundKib);
  // Nothing is left behind in the call table.
  CHECK(eventually(
      [&] {
        const auto s = broker_status(observer);
        return s.calls_in_flight() == 0 && s.calls_waiting() == 0;
      },
      10s));
  slow.stop();
}

TEST_CASE("the broker listens with as long a backlog as the kernel allows", "[limits]") {
  // ZeroMQ's default of 100 drops the SYNs of clients beyond it that connect at once (all
  // of them, after a restart), and each waits a second or more to try again.
  Broker broker;
  const auto port = static_cast<std::uint16_t>(broker.port());
  const long cap = somaxconn();
  REQUIRE(cap > 0);
  INFO("-1: the kernel's sock_diag did not report the broker's listening socket");
  CHECK(listen_backlog(port) == std::min(cap, 65535L));
}
