// Authentication and permissions against a real sage-busd with real CURVE keys
// (docs/security.md): who gets in, what each principal may do, what every refusal says
// and counts, and what a reload of the rules changes.
#include <signal.h>

#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "raw_peer.hpp"
#include "sagebus/wire/curve_keys.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// The principals of the tests below; "caller" has two keys, "nobody" has no rules, "evil"
// a key no principal holds.
constexpr const char* kRules = R"(
[[principal]]
name = "svc"
key-files = ["svc.key"]
allow.register = ["echo", "gated"]
allow.name = ["*", "svc.>"]
allow.publish = ["jobs.>"]

[[principal]]
name = "caller"
keys = ["@CALLER2@"]
key-files = ["caller.key"]
allow.call = ["echo.*", "gated.*"]
deny.call = ["echo.secret"]
allow.name = ["*"]
allow.subscribe = ["jobs.>"]
deny.subscribe = ["jobs.private"]
allow.queue-put = ["work"]
allow.send = [">"]

[[principal]]
name = "worker"
key-files = ["worker.key"]
allow.queue-get = ["work"]
allow.name = ["*"]

[[principal]]
name = "ops"
key-files = ["ops.key"]
allow.inspect = ["*"]
allow.admin = ["*"]
allow.name = ["*"]

[[principal]]
name = "nobody"
key-files = ["nobody.key"]
)";

// How many times `needle` stands in `text`.
std::size_t occurrences(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + 1))
    ++n;
  return n;
}

// A broker with auth, the key pairs of every principal in `dir`, and clients for them.
// "broker-old" is a second key pair of the broker's, for [broker.endpoint-keys].
class Secured {
 public:
  explicit Secured(std::string rules = kRules, std::vector<std::string> broker_args = {}) {
    for (const char* who :
         {"broker", "broker-old", "svc", "caller", "caller2", "worker", "ops", "nobody", "evil"}) {
      keys_[who] = wire::generate_curve_keys();
      wire::write_key_pair(dir_.path() + "/" + who, keys_[who]);
    }
    write_rules(std::move(rules));
    broker_args.insert(broker_args.end(), {"--auth", rules_path()});
    broker_ = std::make_unique<Broker>(std::move(broker_args));
  }

  Broker& broker() { return *broker_; }
  const std::string& dir() const { return dir_.path(); }
  std::string rules_path() const { return dir_.path() + "/auth.toml"; }
  const wire::CurveKeys& keys(const std::string& who) { return keys_.at(who); }

  // Writes the rules file: the broker's key and `rules` (which may go on with a
  // [broker.endpoint-keys] table).
  void write_rules(std::string rules) {
    const std::string marker = "@CALLER2@";
    if (const auto at = rules.find(marker); at != std::string::npos)
      rules.replace(at, marker.size(), keys_.at("caller2").public_key);
    std::ofstream(rules_path()) << "[broker]\nkey-file = \"broker.key_secret\"\n" << rules;
  }
  // Re-reads the rules (SIGHUP) and waits for the broker to say it did, or that it could not.
  bool reload(std::string_view expect = "reload: auth rules re-read") {
    ++reloads_;
    broker_->process().signal(SIGHUP);
    return eventually([&] { return occurrences(broker_->log(), expect) >= reloads_; }, 5s);
  }

  // Options for a client of principal `who` (its key as Z85 text; the broker's as a file).
  ClientOptions as(const std::string& who, std::string name) {
    ClientOptions o = at(*broker_, std::move(name));
    o.server_key = dir_.path() + "/broker.key";
    o.client_key = keys_.at(who).secret_key;
    return o;
  }

 private:
  TempDir dir_;
  std::map<std::string, wire::CurveKeys> keys_;
  std::unique_ptr<Broker> broker_;
  std::size_t reloads_ = 0;
};

std::string call_echo(Client& client, const std::string& method = "echo") {
  return client.call("echo", method, "hi", {.timeout = 3s}).payload;
}

// A raw CURVE connection for principal `keys`.
RawPeer raw_as(Secured& s, const wire::CurveKeys& keys) {
  return RawPeer(s.broker().endpoint(), [&](zmq::socket_t& socket) {
    socket.set(zmq::sockopt::curve_serverkey, s.keys("broker").public_key);
    socket.set(zmq::sockopt::curve_publickey, keys.public_key);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  });
}

}  // namespace

TEST_CASE(
    "auth: a principal's key gets in, an unknown key, a wrong broker key and a "
    "plaintext client are told UNAUTHENTICATED naming the endpoint",
    "[auth]") {
  Secured s;
  EchoInstance echo(s.as("svc", "echo-1"), "echo");
  Client caller(s.as("caller", "caller-1"));
  CHECK(call_echo(caller) == "hi");

  SECTION("a key of no principal") {
    Client evil(s.as("evil", "evil-1"));
    const Error e = error_of([&] { call_echo(evil); });
    CHECK(e.status() == Status::unauthenticated);
    CHECK_THAT(e.message(), Catch::Contains(s.broker().endpoint()));
    CHECK_THAT(e.message(), Catch::Contains("refused this client's key"));
    CHECK(s.broker().process().wait_for_log("is not a key of any principal", 5s));
  }
  SECTION("a wrong broker key") {
    ClientOptions o = s.as("caller", "caller-2");
    o.server_key = s.keys("evil").public_key;
    Client lost(o);
    const Error e = error_of([&] { call_echo(lost); });
    CHECK(e.status() == Status::unauthenticated);
    CHECK_THAT(e.message(), Catch::Contains(s.broker().endpoint()));
    CHECK_THAT(e.message(), Catch::Contains("server_key"));
  }
  SECTION("a plaintext client") {
    Client plain(at(s.broker(), "plain-1"));
    const Error e = error_of([&] { call_echo(plain); });
    CHECK(e.status() == Status::unauthenticated);
    CHECK_THAT(e.message(), Catch::Contains("requires CURVE authentication"));
  }
  SECTION("a principal's second key, given as a file") {
    ClientOptions o = s.as("caller", "caller-3");
    o.client_key = s.dir() + "/caller2.key_secret";
    Client second(o);
    CHECK(call_echo(second) == "hi");
  }
  SECTION("wait_for_ready does not turn a refused key into a timeout") {
    Client evil(s.as("evil", "evil-2"));
    const auto started = std::chrono::steady_clock::now();
    const Status status = status_of(
        [&] { evil.call("echo", "echo", "hi", {.timeout = 5s, .wait_for_ready = true}); });
    CHECK(status == Status::unauthenticated);
    CHECK(std::chrono::steady_clock::now() - started < 4s);
  }
}

TEST_CASE(
    "auth: every verb is denied by default and allowed by a rule, a deny beats an "
    "allow, each refusal says PERMISSION_DENIED, the verb and the subject",
    "[auth]") {
  Secured s;
  EchoInstance echo(s.as("svc", "echo-1"), "echo");
  Client caller(s.as("caller", "caller-1"));

  SECTION("a caller may not register") {
    Service mine(caller, "echo");
    mine.handle("echo", [](const Request& r) { return std::string(r.payload); });
    mine.start();
    const Error e = error_of([&] { mine.wait_registered(5s); });
    CHECK(e.status() == Status::permission_denied);
    CHECK_THAT(e.message(), Catch::Contains("may not register 'echo'"));
  }
  SECTION("an allowed call, and a denied method under an allowed wildcard") {
    CHECK(call_echo(caller) == "hi");
    const Error e = error_of([&] { call_echo(caller, "secret"); });
    CHECK(e.status() == Status::permission_denied);
    CHECK_THAT(e.message(), Catch::Contains("may not call 'echo.secret'"));
  }
  SECTION("subscribe: allowed, denied outside the rule, and denied when a deny overlaps") {
    Inbox inbox;
    Subscription ok = caller.subscribe("jobs.a", inbox.handler());
    CHECK(ok.wait_subscribed(5s));
    Subscription outside = caller.subscribe("secrets.>", inbox.handler());
    Error e = error_of([&] { outside.wait_subscribed(5s); });
    CHECK(e.status() == Status::permission_denied);
    CHECK_THAT(e.message(), Catch::Contains("may not subscribe 'secrets.>'"));
    // "jobs.*" would receive jobs.private, which the rules deny.
    Subscription overlaps = caller.subscribe("jobs.*", inbox.handler());
    e = error_of([&] { overlaps.wait_subscribed(5s); });
    CHECK(e.status() == Status::permission_denied);
    CHECK_THAT(e.message(), Catch::Contains("may not subscribe 'jobs.*'"));
  }
  SECTION("publish needs its rule, confirmed or not") {
    CHECK(status_of([&] { caller.publish("jobs.a", "x", {.confirm = true}); }) ==
          Status::permission_denied);
    Client svc(s.as("svc", "svc-pub"));
    svc.publish("jobs.a", "x", {.confirm = true});
  }
  SECTION("queues: put and get are separate verbs") {
    Client worker(s.as("worker", "worker-1"));
    LegacyQueue put_side(caller, "work");
    LegacyQueue get_side(worker, "work");
    put_side.put("item");
    CHECK(get_side.get(2s) == "item");
    CHECK(status_of([&] { LegacyQueue(worker, "work").put("x"); }) == Status::permission_denied);
    CHECK(status_of([&] { (void)put_side.get(1s); }) == Status::permission_denied);
  }
  SECTION("inspect and admin are the broker's own service's verbs") {
    CHECK(status_of([&] { caller.call("$broker", "status", "", {.timeout = 3s}); }) ==
          Status::permission_denied);
    CHECK(status_of([&] { caller.call("$broker", "reload", "", {.timeout = 3s}); }) ==
          Status::permission_denied);
    Client ops(s.as("ops", "ops-1"));
    ops.call("$broker", "status", "", {.timeout = 3s});
    ops.call("$broker", "reload", "", {.timeout = 3s});
    CHECK(s.broker().process().wait_for_log("reload: auth rules re-read", 5s));
  }
  SECTION("a principal with no rules can do nothing, not even connect under a name") {
    Client nobody(s.as("nobody", "nobody-1"));
    CHECK_FALSE(nobody.wait_connected(1s));
    const auto refused = nobody.connection_error();
    REQUIRE(refused);
    CHECK(refused->status() == Status::permission_denied);
    CHECK_THAT(refused->message(), Catch::Contains("may not name 'nobody-1'"));
    // Its calls are not sent: the connection is unavailable, and says why.
    const Error e = error_of([&] { call_echo(nobody); });
    CHECK(e.status() == Status::unavailable);
    CHECK_THAT(e.message(), Catch::Contains("may not name 'nobody-1'"));
  }
  SECTION("refusals are counted per principal and verb") {
    (void)status_of([&] { call_echo(caller, "secret"); });
    Client ops(s.as("ops", "ops-2"));
    const std::string metrics = ops.call("$broker", "metrics", "", {.timeout = 3s}).payload;
    CHECK_THAT(
        metrics,
        Catch::Contains("sagebus_permission_denied_total{principal=\"caller\",verb=\"call\"} 1"));
  }
}

TEST_CASE("auth: a p2p name held under another principal's rules cannot be squatted", "[auth]") {
  Secured s;
  Client svc(s.as("svc", "svc.memory"));
  REQUIRE(svc.wait_connected(5s));
  Client squatter(s.as("caller", "svc.memory"));
  CHECK_FALSE(squatter.wait_connected(1s));
  auto refused = squatter.connection_error();
  REQUIRE(refused);
  CHECK(refused->status() == Status::permission_denied);
  CHECK_THAT(refused->message(), Catch::Contains("may not name 'svc.memory'"));
  // Nor with takeover.
  ClientOptions o = s.as("caller", "svc.memory");
  o.takeover = true;
  Client taker(o);
  CHECK_FALSE(taker.wait_connected(1s));
  refused = taker.connection_error();
  REQUIRE(refused);
  CHECK(refused->status() == Status::permission_denied);
  CHECK(svc.connected());
}

TEST_CASE("auth: a reply from an instance not given the call is refused", "[auth]") {
  Secured s;
  RawPeer instance = raw_as(s, s.keys("svc"));
  REQUIRE(instance.hello("svc-raw"));
  wire::Header reg;
  reg.set_kind(wire::REGISTER);
  reg.set_service("echo");
  reg.mutable_registration()->add_methods("echo");
  reg.mutable_registration()->set_max_inflight(4);
  REQUIRE(instance.reply_to(instance.send(reg))->status() == wire::OK);

  Client caller(s.as("caller", "caller-1"));
  auto reply = caller.call_async("echo", "echo", "hi", {.timeout = 5s});
  std::optional<wire::Header> request;
  while (!request || request->kind() != wire::REQUEST) {
    request = instance.receive();
    REQUIRE(request);
  }

  // Another connection of the same principal, and registered for the same service, still
  // was not given this call.
  RawPeer forger = raw_as(s, s.keys("svc"));
  REQUIRE(forger.hello("svc-forger"));
  reg.set_id(0);
  REQUIRE(forger.reply_to(forger.send(reg))->status() == wire::OK);
  wire::Header forged;
  forged.set_kind(wire::REPLY);
  forged.set_id(request->id());
  forged.set_status(wire::OK);
  forger.send(forged, {"forged"});
  REQUIRE(forger.sync());

  wire::Header real;
  real.set_kind(wire::REPLY);
  real.set_id(request->id());
  real.set_status(wire::OK);
  instance.send(real, {"real"});
  CHECK(reply.get().payload == "real");
}

TEST_CASE("auth: an empty rules file lets nobody in", "[auth]") {
  Secured s("");
  Client caller(s.as("caller", "caller-1"));
  CHECK(status_of([&] { call_echo(caller); }) == Status::unauthenticated);
}

TEST_CASE("auth: ten thousand refusals make a handful of log lines, and are all counted",
          "[auth]") {
  Secured s;
  EchoInstance echo(s.as("svc", "echo-1"), "echo");
  Client caller(s.as("caller", "caller-1"));
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 10000; ++i)
    calls.push_back(caller.call_async("echo", "secret", "x", {.timeout = 20s}));
  std::map<Status, std::size_t> outcomes;
  for (auto& call : calls)
    ++outcomes[status_of([&] { call.get(); })];
  CHECK(outcomes[Status::permission_denied] == 10000);
  for (const auto& [status, n] : outcomes)
    INFO(status_name(status) << ": " << n);
  // The next line a second later says how many it stands for.
  REQUIRE(eventually(
      [&] {
        (void)status_of([&] { call_echo(caller, "secret"); });
        return s.broker().log().find("more refusals since the last such line") != std::string::npos;
      },
      5s));
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  const std::size_t lines = occurrences(s.broker().log(), "refused a REQUEST from");
  // A burst of 10, then one a second.
  CHECK(lines >= 1);
  CHECK(lines <= 12 + static_cast<std::size_t>(seconds));
  Client ops(s.as("ops", "ops-1"));
  const std::string metrics = ops.call("$broker", "metrics", "", {.timeout = 3s}).payload;
  const std::string series = "sagebus_permission_denied_total{principal=\"caller\",verb=\"call\"} ";
  const auto at = metrics.find(series);
  REQUIRE(at != std::string::npos);
  CHECK(std::stoull(metrics.substr(at + series.size())) >= 10001);  // and those since
}

TEST_CASE(
    "auth: a reload that takes a permission away revokes live registrations and "
    "subscriptions, a broken one changes nothing, a call in flight ends once",
    "[auth]") {
  Secured s;
  GatedService gated(s.as("svc", "gated-1"), "gated", 4);
  EchoInstance echo(s.as("svc", "echo-1"), "echo");
  Client caller(s.as("caller", "caller-1"));
  Inbox inbox;
  Subscription sub = caller.subscribe("jobs.a", inbox.handler());
  REQUIRE(sub.wait_subscribed(5s));
  auto in_flight = caller.call_async("gated", "wait", "held", {.timeout = 20s});
  Client ops(s.as("ops", "ops-1"));
  REQUIRE(eventually(
      [&] {
        admin::BrokerStatus status;
        status.ParseFromString(ops.call("$broker", "status", "", {.timeout = 3s}).payload);
        return status.calls_in_flight() == 1;
      },
      5s));

  SECTION("a rules file that does not validate changes nothing") {
    s.write_rules(
        "[[principal]]\nname = \"svc\"\nkey-files = [\"svc.key\"]\nallow.frobnicate = [\"x\"]\n");
    REQUIRE(s.reload("reload failed, the running configuration and auth rules are unchanged"));
    CHECK_THAT(s.broker().log(), Catch::Contains("frobnicate"));
    CHECK(call_echo(caller) == "hi");
    gated.open();
    CHECK(in_flight.get().payload == "held");
  }
  SECTION("taking register and subscribe away revokes them; the call in flight ends once") {
    std::string rules = kRules;
    const std::string reg = R"(allow.register = ["echo", "gated"])";
    rules.replace(rules.find(reg), reg.size(), R"(allow.register = ["echo"])");
    const std::string subscribe = R"(allow.subscribe = ["jobs.>"])";
    rules.replace(rules.find(subscribe), subscribe.size(), "");
    s.write_rules(rules);
    REQUIRE(s.reload());
    CHECK(s.broker().process().wait_for_log(
        "unregistered: principal 'svc' may no longer register 'gated'", 5s));
    CHECK(s.broker().process().wait_for_log("subscription", 5s));
    CHECK_THAT(s.broker().log(), Catch::Contains("may no longer subscribe"));
    gated.open();
    CHECK(in_flight.get().payload == "held");
    CHECK(status_of([&] { caller.call("gated", "wait", "x", {.timeout = 2s}); }) ==
          Status::no_responders);
    CHECK(call_echo(caller) == "hi");  // what is still allowed still works
    // A new subscription is refused now.
    Subscription again = caller.subscribe("jobs.b", inbox.handler());
    CHECK(status_of([&] { again.wait_subscribed(5s); }) == Status::permission_denied);
  }
  SECTION("taking a key away closes its connections; the client is told UNAUTHENTICATED") {
    std::string rules = kRules;
    const std::string keys = R"(keys = ["@CALLER2@"]
key-files = ["caller.key"])";
    rules.replace(rules.find(keys), keys.size(), R"(keys = ["@CALLER2@"])");
    s.write_rules(rules);
    REQUIRE(s.reload());
    CHECK(s.broker().process().wait_for_log("reload: connection 'caller-1' closed", 5s));
    CHECK(eventually(
        [&] {
          const auto error = caller.connection_error();
          return error && error->status() == Status::unauthenticated;
        },
        5s));
    gated.open();
  }
}

TEST_CASE(
    "auth: without auth the broker binds loopback and ipc:// only, unless told to "
    "allow anonymous clients",
    "[auth]") {
  TempDir dir;
  const std::string wide = "tcp://0.0.0.0:" + std::to_string(free_port());
  const auto refused = run({busd_path(), "--endpoint", wide, "--http", "off"}, {}, 10s);
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("reachable from other hosts"));
  CHECK_THAT(refused.err, Catch::Contains("allow-anonymous"));
  Process allowed({busd_path(), "--endpoint", wide, "--http", "off", "--allow-anonymous"},
                  dir.path() + "/busd.log");
  CHECK(allowed.wait_for_log("allow-anonymous: anyone who reaches an endpoint", 10s));
  CHECK(allowed.stop() == 0);
}

TEST_CASE("auth: busctl takes keys from flags or the environment, drain and reload need admin",
          "[auth][busctl]") {
  Secured s;
  auto busctl = [&](const std::string& who, std::vector<std::string> args) {
    args.insert(args.begin(),
                {busctl_path(), "--endpoint", s.broker().endpoint(), "--key",
                 s.dir() + "/" + who + ".key_secret", "--server-key", s.dir() + "/broker.key"});
    return run(args);
  };
  auto refused = busctl("caller", {"drain"});
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Catch::Contains("PERMISSION_DENIED"));
  CHECK_THAT(refused.err, Catch::Contains("may not admin 'drain'"));
  refused = busctl("evil", {"status"});
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Catch::Contains("UNAUTHENTICATED"));

  const auto reloaded = busctl("ops", {"reload"});
  CHECK(reloaded.exit_code == 0);
  CHECK_THAT(reloaded.out, Catch::Contains("reload requested"));
  CHECK(s.broker().process().wait_for_log("reload: auth rules re-read", 5s));
  // The same keys from the environment.
  const std::string env = "SAGEBUS_KEY=" + s.dir() + "/ops.key_secret";
  const std::string server_env = "SAGEBUS_SERVER_KEY=" + s.keys("broker").public_key;
  const auto status = run({"/usr/bin/env", env, server_env, busctl_path(), "--endpoint",
                           s.broker().endpoint(), "status"});
  CHECK(status.exit_code == 0);
  CHECK_THAT(status.out, Catch::Contains("clients"));

  const auto drained = busctl("ops", {"drain"});
  INFO("busctl drain said: " << drained.out << drained.err);
  CHECK(drained.exit_code == 0);
  CHECK(s.broker().process().wait_exit(10s) == 0);
}

TEST_CASE(
    "auth: endpoint-keys serves an endpoint its own broker key, so clients move to a new "
    "key one endpoint at a time, and a reload changes it only at a restart",
    "[auth]") {
  const std::string old_endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const std::string table =
      "[broker.endpoint-keys]\n\"" + old_endpoint + "\" = \"broker-old.key_secret\"\n";
  Secured s(table + kRules, {"--endpoint", old_endpoint});
  const std::string& new_endpoint = s.broker().endpoint();
  REQUIRE(s.broker().process().wait_for_log("listening on " + old_endpoint +
                                                " (CURVE, broker key " +
                                                s.keys("broker-old").public_key + ")",
                                            5s));
  CHECK_THAT(s.broker().log(),
             Catch::Contains("listening on " + new_endpoint + " (CURVE, broker key " +
                             s.keys("broker").public_key + ")"));
  EchoInstance echo(s.as("svc", "echo-1"), "echo");
  // `endpoint` with the broker key in `server_key_file`.
  const auto caller = [&](const std::string& name, const std::string& endpoint,
                          const std::string& server_key_file) {
    ClientOptions o = s.as("caller", name);
    o.endpoint = endpoint;
    o.server_key = s.dir() + "/" + server_key_file;
    return o;
  };

  Client old_on_old(caller("old-on-old", old_endpoint, "broker-old.key"));
  CHECK(call_echo(old_on_old) == "hi");
  Client new_on_new(caller("new-on-new", new_endpoint, "broker.key"));
  CHECK(call_echo(new_on_new) == "hi");

  Client new_on_old(caller("new-on-old", old_endpoint, "broker.key"));
  Error e = error_of([&] { call_echo(new_on_old); });
  CHECK(e.status() == Status::unauthenticated);
  CHECK_THAT(e.message(), Catch::Contains(old_endpoint));
  Client old_on_new(caller("old-on-new", new_endpoint, "broker-old.key"));
  e = error_of([&] { call_echo(old_on_new); });
  CHECK(e.status() == Status::unauthenticated);
  CHECK_THAT(e.message(), Catch::Contains(new_endpoint));

  // A broker that does not bind the endpoint the table names does not start.
  const std::string elsewhere = "tcp://127.0.0.1:" + std::to_string(free_port());
  const auto refused = run(
      {busd_path(), "--endpoint", elsewhere, "--http", "off", "--auth", s.rules_path()}, {}, 10s);
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("[broker.endpoint-keys] gives a key to " + old_endpoint +
                                          ", which is not an endpoint"));

  // The rotation's end: the table is gone from the rules, but the old endpoint keeps its
  // key until a restart, and says so.
  s.write_rules(kRules);
  REQUIRE(s.reload());
  CHECK_THAT(s.broker().log(),
             Catch::Contains("reload: the broker key of endpoint " + old_endpoint + " in " +
                             s.rules_path() + " changed"));
  Client again(caller("old-again", old_endpoint, "broker-old.key"));
  CHECK(call_echo(again) == "hi");
}
