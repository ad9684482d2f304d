// Middleware through the real broker: client and service interceptors see each call
// before and after, in order, may add headers and may refuse a call with a status; the
// logging and metrics interceptors (docs/sdk.md, "Middleware").
#include <mutex>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "sagebus/logging_interceptor.hpp"
#include "sagebus/metrics_interceptor.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// Records what it sees as "<name>:before <method>" and "<name>:after <method> <STATUS>";
// adds header <name>=seen; refuses method "forbidden" with PERMISSION_DENIED if asked.
class Recorder final : public Interceptor {
 public:
  Recorder(std::string name, std::vector<std::string>& log, std::mutex& mutex, bool refuse = false)
      : name_(std::move(name)), log_(log), mutex_(mutex), refuse_(refuse) {}
  std::optional<Error> before(CallInfo& call) override {
    add_(name_ + ":before " + std::string(call.method));
    call.headers[name_] = "seen";
    if (refuse_ && call.method == "forbidden")
      return Error(Status::permission_denied, name_ + " refuses " + std::string(call.method));
    return std::nullopt;
  }
  void after(const CallInfo& call, const CallEnd& end) override {
    add_(name_ + ":after " + std::string(call.method) + " " + std::string(status_name(end.status)));
  }

 private:
  void add_(std::string line) {
    std::lock_guard lock(mutex_);
    log_.push_back(std::move(line));
  }
  std::string name_;
  std::vector<std::string>& log_;
  std::mutex& mutex_;
  bool refuse_;
};

}  // namespace

TEST_CASE("interceptors see each call before and after in order and add headers", "[middleware]") {
  Broker broker;
  std::mutex mutex;
  std::vector<std::string> log;
  ClientOptions service_side = at(broker, "instance");
  Client instance(service_side);
  Service service(instance, "svc",
                  {.interceptors = {std::make_shared<Recorder>("s1", log, mutex),
                                    std::make_shared<Recorder>("s2", log, mutex)}});
  service.handle("headers", [](const Request& req) {
    std::string seen;
    for (const auto& [k, v] : req.headers)
      seen += k + "=" + v + ";";
    return seen;
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  ClientOptions options = at(broker, "caller");
  options.interceptors = {std::make_shared<Recorder>("c1", log, mutex),
                          std::make_shared<Recorder>("c2", log, mutex)};
  Client caller(options);
  // Both clients' and both service interceptors' headers reach the handler.
  CHECK(caller.call("svc", "headers", "").payload == "c1=seen;c2=seen;s1=seen;s2=seen;");
  std::lock_guard lock(mutex);
  CHECK(log == std::vector<std::string>{"c1:before headers", "c2:before headers",
                                        "s1:before headers", "s2:before headers",
                                        "s2:after headers OK", "s1:after headers OK",
                                        "c2:after headers OK", "c1:after headers OK"});
}

TEST_CASE("an interceptor refusing a call produces that status at the caller", "[middleware]") {
  Broker broker;
  std::mutex mutex;
  std::vector<std::string> log;
  Client instance(at(broker, "instance"));
  Service service(instance, "svc",
                  {.interceptors = {std::make_shared<Recorder>("guard", log, mutex, true)}});
  std::atomic<int> ran{0};
  service.handle("forbidden", [&](const Request&) {
    ++ran;
    return std::string("should not run");
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  // Service-side refusal.
  Client caller(at(broker, "caller"));
  const Error on_service = error_of([&] { caller.call("svc", "forbidden", ""); });
  CHECK(on_service.status() == Status::permission_denied);
  CHECK(on_service.message() == "guard refuses forbidden");
  CHECK(ran == 0);
  // Client-side refusal: nothing is sent.
  ClientOptions options = at(broker, "careful");
  options.interceptors = {std::make_shared<Recorder>("local", log, mutex, true)};
  Client careful(options);
  const Error on_client = error_of([&] { careful.call("svc", "forbidden", ""); });
  CHECK(on_client.status() == Status::permission_denied);
  CHECK(on_client.message() == "local refuses forbidden");
  std::lock_guard lock(mutex);
  CHECK(std::count(log.begin(), log.end(), "local:after forbidden PERMISSION_DENIED") == 1);
  CHECK(std::count(log.begin(), log.end(), "guard:before forbidden") == 1);
}

TEST_CASE("the metrics interceptor keeps a latency histogram that the service exposes",
          "[middleware]") {
  Broker broker;
  auto metrics = std::make_shared<MetricsInterceptor>();
  std::vector<std::string> lines;
  std::mutex mutex;
  auto logging = std::make_shared<LoggingInterceptor>("svc", [&](std::string_view line) {
    std::lock_guard lock(mutex);
    lines.emplace_back(line);
  });
  Client instance(at(broker, "instance"));
  Service service(instance, "svc", {.interceptors = {metrics, logging}});
  service.handle("echo", [](const Request& req) { return std::string(req.payload); });
  service.handle("metrics", metrics->handler());
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  for (int i = 0; i < 5; ++i)
    caller.call("svc", "echo", "hello");
  const auto snapshot = metrics->snapshot();
  REQUIRE(snapshot.count("svc.echo") == 1);
  CHECK(snapshot.at("svc.echo").count == 5);
  CHECK(snapshot.at("svc.echo").statuses.at(Status::ok) == 5);
  const std::string text = caller.call("svc", "metrics", "").payload;
  CHECK_THAT(text, Catch::Contains(
                       "sagebus_call_duration_seconds_count{service=\"svc\",method=\"echo\"} 5"));
  CHECK_THAT(text, Catch::Contains(
                       "sagebus_calls_total{service=\"svc\",method=\"echo\",status=\"OK\"} 5"));
  std::lock_guard lock(mutex);
  REQUIRE(lines.size() >= 5);
  CHECK_THAT(lines.front(), Catch::StartsWith("svc svc.echo 5 B -> OK 5 B in "));
  CHECK_THAT(lines.front(), Catch::Contains(" trace "));
}
