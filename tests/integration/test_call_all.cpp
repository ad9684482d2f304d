// Scatter-gather through the real broker: call_all asks every live instance that has the
// method and gathers one named outcome each by the deadline (docs/protocol.md,
// "Scatter-gather").
#include <algorithm>
#include <csignal>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// An instance of `service` on a client named `name`, whose "who" answers its name.
class Named {
 public:
  Named(const Broker& broker, const std::string& service, const std::string& name)
      : client_(at(broker, name)), service_(client_, service, {.max_inflight = 4}) {
    service_.handle("who", [name](const Request&) { return name; });
    service_.start();
    REQUIRE(service_.wait_registered(5s));
  }

 private:
  Client client_;
  Service service_;
};

// A service interceptor that notes, per method, whether each call it saw was a call_all's.
class AllSeen final : public Interceptor {
 public:
  std::optional<Error> before(CallInfo& call) override {
    std::lock_guard lock(mutex_);
    seen_.emplace_back(std::string(call.method) + (call.all ? " all" : " one"));
    return std::nullopt;
  }
  std::vector<std::string> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> seen_;
};

std::map<std::string, InstanceReply> by_instance(const std::vector<InstanceReply>& replies) {
  std::map<std::string, InstanceReply> out;
  for (const auto& r : replies)
    out[r.instance] = r;
  return out;
}

}  // namespace

TEST_CASE("call_all asks every instance and names each reply", "[call_all]") {
  Broker broker;
  Named one(broker, "memory", "memory-1"), two(broker, "memory", "memory-2");
  Client caller(at(broker, "caller"));
  const GatherReply gathered = caller.call_all("memory", "who", "", {.timeout = 5s});
  CHECK(gathered.asked == 2);
  const auto replies = by_instance(gathered.replies);
  REQUIRE(replies.size() == 2);
  CHECK(replies.at("memory-1").payload == "memory-1");
  CHECK(replies.at("memory-2").payload == "memory-2");
}

TEST_CASE(
    "call_all over 4 instances with one killed returns 3 replies and 1 "
    "UNAVAILABLE named",
    "[call_all]") {
  Broker broker;
  Named one(broker, "memory", "memory-1"), two(broker, "memory", "memory-2"),
      three(broker, "memory", "memory-3");
  TempDir dir;
  Process doomed({test_peer_path(), broker.endpoint(), "hang", "memory-4", "memory", "who"},
                 dir.path() + "/doomed.log");
  REQUIRE(doomed.wait_for_log("ready", 10s));
  Client caller(at(broker, "caller"));
  std::mutex mutex;
  std::vector<InstanceReply> replies;
  std::promise<std::size_t> asked;
  std::promise<Reply> done;
  caller.call_all_async(
      "memory", "who", "", {.timeout = 10s}, [&](std::size_t n) { asked.set_value(n); },
      [&](InstanceReply r) {
        std::lock_guard lock(mutex);
        replies.push_back(std::move(r));
      },
      [&](Reply r) { done.set_value(std::move(r)); });
  auto asked_future = asked.get_future();
  REQUIRE(asked_future.wait_for(5s) == std::future_status::ready);
  CHECK(asked_future.get() == 4);
  REQUIRE(doomed.wait_for_log("holding", 5s));
  REQUIRE(eventually(
      [&] {
        std::lock_guard lock(mutex);
        return replies.size() == 3;
      },
      5s));
  doomed.signal(SIGKILL);
  auto done_future = done.get_future();
  REQUIRE(done_future.wait_for(5s) == std::future_status::ready);
  CHECK(done_future.get().status == Status::ok);
  std::lock_guard lock(mutex);
  const auto named = by_instance(replies);
  REQUIRE(named.size() == 4);
  for (const char* name : {"memory-1", "memory-2", "memory-3"})
    CHECK(named.at(name).payload == name);
  CHECK(named.at("memory-4").status == Status::unavailable);
}

TEST_CASE(
    "call_all gives an instance that does not answer in time "
    "DEADLINE_EXCEEDED",
    "[call_all]") {
  Broker broker;
  Named one(broker, "memory", "memory-1");
  TempDir dir;
  Process slow({test_peer_path(), broker.endpoint(), "hang", "memory-slow", "memory", "who"},
               dir.path() + "/slow.log");
  REQUIRE(slow.wait_for_log("ready", 10s));
  Client caller(at(broker, "caller"));
  const GatherReply gathered = caller.call_all("memory", "who", "", {.timeout = 500ms});
  CHECK(gathered.asked == 2);
  const auto named = by_instance(gathered.replies);
  REQUIRE(named.size() == 2);
  CHECK(named.at("memory-1").ok());
  CHECK(named.at("memory-slow").status == Status::deadline_exceeded);
}

TEST_CASE("an instance's interceptors see CallInfo::all on a call_all's part only",
          "[call_all][middleware]") {
  Broker broker;
  auto seen = std::make_shared<AllSeen>();
  Client client(at(broker, "memory-1"));
  Service service(client, "memory", {.interceptors = {seen}});
  service.handle("who", [](const Request&) { return std::string("memory-1"); });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  CHECK(caller.call_all("memory", "who", "", {.timeout = 5s}).replies.size() == 1);
  CHECK(caller.call("memory", "who", "", {.timeout = 5s}).payload == "memory-1");
  CHECK(seen->seen() == std::vector<std::string>{"who all", "who one"});
}

TEST_CASE("call_all with no instance fails NO_RESPONDERS", "[call_all]") {
  Broker broker;
  Client caller(at(broker, "caller"));
  CHECK(status_of([&] { caller.call_all("nobody", "who", ""); }) == Status::no_responders);
}
