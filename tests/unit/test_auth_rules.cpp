// The auth rules (daemon/security/auth.hpp): what a principal's allow and deny patterns
// let it do, how subscription patterns are judged as a whole, and the rules file, whose
// every problem is refused naming the file and the line.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "sagebus/wire/curve_keys.hpp"
#include "security/auth.hpp"

using namespace sagebus::broker;
using sagebus::wire::generate_curve_keys;
using sagebus::wire::write_key_pair;

namespace {

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sagebus-auth-XXXXXX");
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

Rules rules_of(std::initializer_list<std::pair<Verb, const char*>> allow,
               std::initializer_list<std::pair<Verb, const char*>> deny = {}) {
  Rules rules;
  for (const auto& [verb, pattern] : allow)
    rules.allow(verb, pattern);
  for (const auto& [verb, pattern] : deny)
    rules.deny(verb, pattern);
  return rules;
}

// A directory with the broker's key pair (broker.key, broker.key_secret) and the
// clients' (a.key, b.key and their secrets), and a rules file to write there.
class RulesDir {
 public:
  RulesDir() {
    write_key_pair(dir_ / "broker", generate_curve_keys());
    write_key_pair(dir_ / "a", generate_curve_keys());
    write_key_pair(dir_ / "b", generate_curve_keys());
  }
  std::string path() const { return dir_ / "auth.toml"; }
  std::string operator/(const std::string& name) const { return dir_ / name; }

  AuthConfig read(const std::string& text) const {
    std::ofstream(path()) << text;
    return read_auth_config(path());
  }
  // The AuthConfigError that reading `text` throws.
  std::string error(const std::string& text) const {
    try {
      read(text);
    } catch (const AuthConfigError& e) {
      return e.what();
    }
    FAIL("no AuthConfigError");
    return {};
  }
  // What error() starts with for a problem on `line`.
  std::string at(int line) const { return path() + ":" + std::to_string(line) + ": "; }

 private:
  TempDir dir_;
};

const std::string kBroker = "[broker]\nkey-file = \"broker.key_secret\"\n";

}  // namespace

// --- Verbs and patterns ------------------------------------------------------------

TEST_CASE("verbs are spelt as in the rules file", "[auth]") {
  CHECK(verb_name(Verb::register_service) == "register");
  CHECK(verb_name(Verb::queue_put) == "queue-put");
  CHECK(verb_name(Verb::queue_get) == "queue-get");
  for (std::size_t i = 0; i < kVerbCount; ++i) {
    const auto verb = static_cast<Verb>(i);
    CHECK(verb_from_name(verb_name(verb)) == verb);
  }
  CHECK_FALSE(verb_from_name("register_service"));
  CHECK_FALSE(verb_from_name("Call"));
  CHECK_FALSE(verb_from_name(""));
}

TEST_CASE("one pattern covers another when it matches every topic the other matches", "[auth]") {
  struct Row {
    const char* outer;
    const char* inner;
    bool covers;
  };
  const Row rows[] = {
      {"jobs.>", "jobs.*", true},  {"jobs.>", "jobs.a.>", true}, {"jobs.>", "jobs.>", true},
      {"jobs.>", "jobs.a", true},  {"jobs.>", "jobs", false},    {"jobs.*", "jobs.>", false},
      {"jobs.*", "jobs.a", true},  {"jobs.*", "jobs.*", true},   {"jobs.*", "jobs.a.b", false},
      {"jobs.a", "jobs.*", false}, {"jobs.a", "jobs.a", true},   {"*.a", "jobs.a", true},
      {"*.a", "*.b", false},       {">", "a.b.>", true},         {">", "*", true},
      {"*", ">", false},           {"a.b", "a", false},          {"a", "a.b", false},
  };
  for (const auto& row : rows) {
    INFO("outer '" << row.outer << "', inner '" << row.inner << "'");
    CHECK(pattern_covers(row.outer, row.inner) == row.covers);
  }
}

TEST_CASE("two patterns overlap when some topic matches both", "[auth]") {
  struct Row {
    const char* a;
    const char* b;
    bool overlap;
  };
  const Row rows[] = {
      {"jobs.secret", "jobs.*", true},
      {"jobs.secret", "jobs.>", true},
      {"jobs.secret", "jobs.public", false},
      {"jobs.secret", "jobs.secret.x", false},
      {"jobs.secret.>", "jobs.*", false},
      {"jobs.secret.>", "jobs.*.x", true},
      {"jobs.>", "*", false},
      {"jobs.>", "*.*.*", true},
      {"*.a", "b.*", true},
      {"a.*", "b.*", false},
      {">", "a", true},
      {"a", "a", true},
      {"a.b", "a", false},
  };
  for (const auto& row : rows) {
    INFO("'" << row.a << "' and '" << row.b << "'");
    CHECK(patterns_overlap(row.a, row.b) == row.overlap);
    CHECK(patterns_overlap(row.b, row.a) == row.overlap);
  }
}

// --- Rules -------------------------------------------------------------------------

TEST_CASE("an allow pattern allows what it matches: '*' one token, '>' one or more", "[auth]") {
  const Rules rules = rules_of({{Verb::call, "memory.*"},
                                {Verb::call, "translate.>"},
                                {Verb::register_service, "retrieval"}});
  CHECK(rules.allows(Verb::call, "memory.retrieve"));
  CHECK(rules.allows(Verb::call, "memory.store"));
  CHECK_FALSE(rules.allows(Verb::call, "memory"));
  CHECK_FALSE(rules.allows(Verb::call, "memory.a.b"));
  CHECK(rules.allows(Verb::call, "translate.text"));
  CHECK(rules.allows(Verb::call, "translate.v2.text"));
  CHECK_FALSE(rules.allows(Verb::call, "translate"));
  CHECK(rules.allows(Verb::register_service, "retrieval"));
  CHECK_FALSE(rules.allows(Verb::register_service, "retrieval2"));
}

TEST_CASE("an explicit deny wins over an allow", "[auth]") {
  const Rules rules =
      rules_of({{Verb::call, "memory.*"}, {Verb::call, ">"}}, {{Verb::call, "memory.drop"}});
  CHECK(rules.allows(Verb::call, "memory.retrieve"));
  CHECK_FALSE(rules.allows(Verb::call, "memory.drop"));
  CHECK(rules.allows(Verb::call, "memory.drop.later"));
}

TEST_CASE("what no allow pattern of its verb matches is denied", "[auth]") {
  const Rules rules =
      rules_of({{Verb::call, "memory.*"}, {Verb::name, "*"}}, {{Verb::publish, ">"}});
  CHECK_FALSE(rules.allows(Verb::publish, "memory.retrieve"));  // another verb's allow
  CHECK_FALSE(rules.allows(Verb::send, "memory"));
  CHECK_FALSE(rules.allows(Verb::admin, "drain"));
  CHECK(rules.allows(Verb::name, "retriever-1"));
  CHECK_FALSE(rules.allows(Verb::name, "retriever.1"));  // '*' is one token
}

TEST_CASE("empty rules deny everything", "[auth]") {
  const Rules rules;
  for (std::size_t i = 0; i < kVerbCount; ++i) {
    INFO(verb_name(static_cast<Verb>(i)));
    CHECK_FALSE(rules.allows(static_cast<Verb>(i), "anything"));
    CHECK_FALSE(rules.allows_pattern(static_cast<Verb>(i), "anything.>"));
  }
}

TEST_CASE("a subject that is not a valid topic is denied, even by '>'", "[auth]") {
  const Rules rules = rules_of({{Verb::call, ">"}, {Verb::queue_put, ">"}});
  CHECK(rules.allows(Verb::call, "a.b"));
  CHECK_FALSE(rules.allows(Verb::call, ""));
  CHECK_FALSE(rules.allows(Verb::call, "a..b"));
  CHECK_FALSE(rules.allows(Verb::call, "a.*"));
  CHECK_FALSE(rules.allows(Verb::queue_put, "a b"));
}

TEST_CASE("a subscription is allowed when an allow pattern covers it and no deny touches it",
          "[auth]") {
  SECTION("allow jobs.>") {
    const Rules rules = rules_of({{Verb::subscribe, "jobs.>"}});
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.*"));
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.a.>"));
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.>"));
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.a"));
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, ">"));
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, "*.a"));
  }
  SECTION("allow jobs.* does not cover jobs.>") {
    const Rules rules = rules_of({{Verb::subscribe, "jobs.*"}});
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.*"));
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, "jobs.>"));
  }
  SECTION("deny jobs.secret overlaps jobs.* but not jobs.public") {
    const Rules rules = rules_of({{Verb::subscribe, "jobs.>"}}, {{Verb::subscribe, "jobs.secret"}});
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, "jobs.*"));
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, "jobs.>"));
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, "jobs.secret"));
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.public"));
    CHECK(rules.allows_pattern(Verb::subscribe, "jobs.*.>"));
  }
  SECTION("an invalid pattern") {
    const Rules rules = rules_of({{Verb::subscribe, ">"}});
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, "jobs.>.a"));
    CHECK_FALSE(rules.allows_pattern(Verb::subscribe, ""));
  }
}

TEST_CASE("rules refuse an invalid pattern", "[auth]") {
  Rules rules;
  CHECK_THROWS_AS(rules.allow(Verb::call, "a.>.b"), std::invalid_argument);
  CHECK_THROWS_AS(rules.deny(Verb::call, ""), std::invalid_argument);
  CHECK(rules.allowed(Verb::call).empty());
  CHECK(rules.denied(Verb::call).empty());
}

// --- The rules file ----------------------------------------------------------------

TEST_CASE("a rules file gives the broker's keys and each principal's keys and rules", "[auth]") {
  RulesDir dir;
  const auto a = sagebus::wire::read_key_file(dir / "a.key");
  const auto b = sagebus::wire::read_key_file(dir / "b.key_secret");
  const AuthConfig config = dir.read(kBroker +
                                     "\n"
                                     "[[principal]]\n"
                                     "name = \"retriever\"\n"
                                     "keys = [\"" +
                                     a.public_key +
                                     "\"]\n"
                                     "key-files = [\"b.key_secret\"]\n"
                                     "allow.call = [\"memory.*\", \"translate.>\"]\n"
                                     "allow.register = [\"retrieval\"]\n"
                                     "allow.name = [\"*\"]\n"
                                     "deny.call = [\"memory.drop\"]\n");
  CHECK(config.path == dir.path());
  const auto broker = sagebus::wire::read_key_file(dir / "broker.key_secret");
  CHECK(config.broker_keys().public_key == broker.public_key);
  CHECK(config.broker_keys().secret_key == broker.secret_key);
  REQUIRE(config.principals().size() == 1);
  const Principal* retriever = config.by_key(a.public_key);
  REQUIRE(retriever);
  CHECK(retriever->name == "retriever");
  CHECK(config.by_key(b.public_key) == retriever);
  CHECK(config.by_name("retriever") == retriever);
  CHECK(retriever->keys == std::vector<std::string>{a.public_key, b.public_key});
  CHECK(config.by_key(config.broker_keys().public_key) == nullptr);
  CHECK(config.by_name("nobody") == nullptr);
  CHECK(retriever->rules.allows(Verb::call, "memory.retrieve"));
  CHECK_FALSE(retriever->rules.allows(Verb::call, "memory.drop"));
  CHECK(retriever->rules.allows(Verb::register_service, "retrieval"));
  CHECK_FALSE(retriever->rules.allows(Verb::publish, "memory.retrieve"));
}

TEST_CASE(
    "endpoint-keys gives the endpoints it names key pairs of their own, and the others "
    "serve key-file's",
    "[auth]") {
  RulesDir dir;
  const auto broker = sagebus::wire::read_key_file(dir / "broker.key_secret");
  const auto old = sagebus::wire::read_key_file(dir / "b.key_secret");

  SECTION("without the table every endpoint serves key-file's pair") {
    const AuthConfig config = dir.read(kBroker);
    CHECK(config.endpoint_keys().empty());
    CHECK(config.broker_keys_for("tcp://0.0.0.0:5556").secret_key == broker.secret_key);
    CHECK_FALSE(config.unknown_endpoint({}));
  }
  SECTION("an endpoint named in the table serves its own pair") {
    const AuthConfig config = dir.read(kBroker +
                                       "[broker.endpoint-keys]\n"
                                       "\"tcp://0.0.0.0:5556\" = \"b.key_secret\"\n");
    REQUIRE(config.endpoint_keys().size() == 1);
    CHECK(config.broker_keys().public_key == broker.public_key);
    CHECK(config.broker_keys_for("tcp://0.0.0.0:5556").public_key == old.public_key);
    CHECK(config.broker_keys_for("tcp://0.0.0.0:5556").secret_key == old.secret_key);
    // Spelt exactly as the endpoint is configured: another spelling is another endpoint.
    CHECK(config.broker_keys_for("tcp://*:5556").public_key == broker.public_key);
    CHECK(config.broker_keys_for("tcp://0.0.0.0:5555").secret_key == broker.secret_key);
    CHECK_FALSE(config.unknown_endpoint({"tcp://0.0.0.0:5555", "tcp://0.0.0.0:5556"}));
    CHECK(config.unknown_endpoint({"tcp://0.0.0.0:5555"}) == "tcp://0.0.0.0:5556");
  }
  SECTION("the inline spelling of the table reads the same") {
    const AuthConfig config = dir.read(
        "[broker]\nkey-file = \"broker.key_secret\"\n"
        "endpoint-keys = { \"ipc:///run/sage-bus/bus.sock\" = \"b.key_secret\" }\n");
    CHECK(config.broker_keys_for("ipc:///run/sage-bus/bus.sock").public_key == old.public_key);
  }
}

TEST_CASE("a rules file without principals is valid and lets no one in", "[auth]") {
  RulesDir dir;
  const AuthConfig config = dir.read("# nobody yet\n" + kBroker);
  CHECK(config.principals().empty());
  CHECK(config.by_key(config.broker_keys().public_key) == nullptr);
}

TEST_CASE("the example rules file in deploy/ reads", "[auth]") {
  TempDir dir;
  std::filesystem::copy_file(SAGEBUS_DEPLOY_DIR "/sage-busd-auth.toml", dir / "auth.toml");
  write_key_pair(dir / "broker", generate_curve_keys());
  std::filesystem::create_directory(dir / "clients");
  for (const char* name : {"memory", "retrieval", "translate", "pipeline", "operator"})
    write_key_pair(dir / "clients/" + name, generate_curve_keys());

  const AuthConfig config = read_auth_config(dir / "auth.toml");
  REQUIRE(config.principals().size() == 5);
  for (const char* name : {"memory", "retrieval", "translate", "pipeline", "operator"}) {
    INFO(name);
    const Principal* principal = config.by_name(name);
    REQUIRE(principal);
    const auto key = sagebus::wire::read_key_file(dir / "clients/" + name + ".key");
    CHECK(config.by_key(key.public_key) == principal);
  }
  const Rules& retrieval = config.by_name("retrieval")->rules;
  CHECK(retrieval.allows(Verb::call, "memory.retrieve"));
  CHECK_FALSE(retrieval.allows(Verb::call, "memory.drop"));
  const Rules& pipeline = config.by_name("pipeline")->rules;
  CHECK(pipeline.allows_pattern(Verb::subscribe, "memory.events.*"));
  CHECK_FALSE(pipeline.allows_pattern(Verb::subscribe, "memory.>"));
  CHECK(pipeline.allows(Verb::queue_put, "translate.jobs"));
  CHECK_FALSE(pipeline.allows(Verb::queue_get, "translate.jobs"));
  const Rules& operator_rules = config.by_name("operator")->rules;
  CHECK(operator_rules.allows(Verb::inspect, "status"));
  CHECK(operator_rules.allows(Verb::admin, "drain"));
  CHECK_FALSE(operator_rules.allows(Verb::register_service, "memory"));
}

TEST_CASE("rules file problems are refused naming the file and the line", "[auth]") {
  RulesDir dir;
  const std::string a_key = sagebus::wire::read_key_file(dir / "a.key").public_key;
  const std::string principal_a = "[[principal]]\nname = \"a\"\nkeys = [\"" + a_key + "\"]\n";

  SECTION("TOML syntax") {
    const auto message = dir.error(kBroker + "\n[[principal]]\nname = \"a\n");
    CHECK_THAT(message, Catch::StartsWith(dir.at(5) + "TOML syntax: "));
  }
  SECTION("an unreadable file") {
    CHECK_THROWS_WITH(
        read_auth_config(dir / "missing.toml"),
        Catch::StartsWith(dir / "missing.toml: cannot read it: No such file or directory"));
    std::filesystem::create_directory(dir / "rules");
    CHECK_THROWS_WITH(read_auth_config(dir / "rules"),
                      Catch::StartsWith(dir / "rules: is a directory"));
  }
  SECTION("no [broker]") {
    CHECK_THAT(dir.error(principal_a), Catch::StartsWith(dir.path() + ": no [broker] table"));
  }
  SECTION("[broker] without key-file") {
    CHECK_THAT(dir.error("# the broker\n[broker]\n"),
               Catch::StartsWith(dir.at(2) + "[broker] has no key-file"));
  }
  SECTION("a broker key file that cannot be read") {
    const auto message = dir.error("[broker]\n\nkey-file = \"nowhere.key_secret\"\n");
    CHECK_THAT(message, Catch::StartsWith(dir.at(3) + "key file 'nowhere.key_secret': " +
                                          dir / "nowhere.key_secret: cannot open it"));
  }
  SECTION("a broker key file without the secret key") {
    CHECK_THAT(dir.error("[broker]\nkey-file = \"broker.key\"\n"),
               Catch::StartsWith(dir.at(2) + "key file 'broker.key' holds no secret key"));
  }
  SECTION("a broker key file readable by others") {
    std::filesystem::permissions(dir / "broker.key_secret", std::filesystem::perms::others_read,
                                 std::filesystem::perm_options::add);
    CHECK_THAT(dir.error(kBroker), Catch::StartsWith(dir.at(2) + "key file 'broker.key_secret': "));
    CHECK_THAT(dir.error(kBroker), Catch::Contains("chmod 600"));
  }
  SECTION("endpoint-keys that cannot be used") {
    const std::string table = kBroker + "[broker.endpoint-keys]\n";
    CHECK_THAT(dir.error(table + "\"tcp://0.0.0.0:5556\" = \"b.key\"\n"),
               Catch::StartsWith(dir.at(4) + "key file 'b.key' holds no secret key"));
    CHECK_THAT(dir.error(table + "\"tcp://0.0.0.0:5556\" = \"nowhere.key_secret\"\n"),
               Catch::StartsWith(dir.at(4) + "key file 'nowhere.key_secret': " +
                                 dir / "nowhere.key_secret: cannot open it"));
    CHECK_THAT(dir.error(table + "\"tcp://0.0.0.0:5556\" = 5556\n"),
               Catch::StartsWith(dir.at(4) +
                                 "endpoint-keys' value for 'tcp://0.0.0.0:5556' must be a string"));
    CHECK_THAT(dir.error(kBroker + "endpoint-keys = \"b.key_secret\"\n"),
               Catch::StartsWith(dir.at(3) + "endpoint-keys is a string; write it as a "
                                             "[broker.endpoint-keys] table"));
  }
  SECTION("a principal without a name") {
    CHECK_THAT(dir.error(kBroker + "\n[[principal]]\nkeys = [\"" + a_key + "\"]\n"),
               Catch::StartsWith(dir.at(4) + "a principal without a name"));
  }
  SECTION("an invalid principal name") {
    CHECK_THAT(dir.error(kBroker + "[[principal]]\nname = \"a b\"\n"),
               Catch::StartsWith(dir.at(4) + "principal name 'a b' has a character outside"));
    CHECK_THAT(dir.error(kBroker + "[[principal]]\nname = \"$broker\"\n"),
               Catch::StartsWith(dir.at(4) + "principal name '$broker' starts with '$'"));
    CHECK_THAT(dir.error(kBroker + "[[principal]]\nname = 7\n"),
               Catch::StartsWith(dir.at(4) + "name must be a string"));
  }
  SECTION("two principals of one name") {
    const auto message = dir.error(kBroker + principal_a + "[[principal]]\nname = \"a\"\n");
    CHECK_THAT(message,
               Catch::StartsWith(dir.at(7) + "principal name 'a' is already used on line 4"));
  }
  SECTION("one key in two principals") {
    const auto message = dir.error(kBroker + principal_a +
                                   "[[principal]]\n"
                                   "name = \"b\"\n"
                                   "key-files = [\"b.key\",\n"
                                   "             \"a.key_secret\"]\n");
    CHECK_THAT(message, Catch::StartsWith(dir.at(9) + "key " + a_key +
                                          " is already principal 'a''s (line 5)"));
  }
  SECTION("a principal without keys") {
    CHECK_THAT(dir.error(kBroker + "[[principal]]\nname = \"a\"\nkeys = []\n"),
               Catch::StartsWith(dir.at(3) + "principal 'a' has no keys"));
  }
  SECTION("a key that is not Z85") {
    CHECK_THAT(dir.error(kBroker + "[[principal]]\nname = \"a\"\nkeys = [\n  \"" + a_key +
                         "\",\n  \"not-a-key\",\n]\n"),
               Catch::StartsWith(dir.at(7) + "'not-a-key' is not a CURVE public key"));
  }
  SECTION("a principal's key file that cannot be read") {
    CHECK_THAT(dir.error(kBroker + "[[principal]]\nname = \"a\"\nkey-files = [\"c.key\"]\n"),
               Catch::StartsWith(dir.at(5) + "key file 'c.key': " + dir / "c.key: cannot open"));
  }
  SECTION("an unknown verb") {
    const auto message = dir.error(kBroker + principal_a + "allow.cal = [\"memory.*\"]\n");
    CHECK_THAT(message,
               Catch::StartsWith(dir.at(6) + "unknown verb 'cal' in allow; the verbs are "
                                             "register, call, publish, subscribe, name, "
                                             "send, queue-put, queue-get, inspect, admin"));
    CHECK_THAT(dir.error(kBroker + principal_a + "\n[principal.deny]\nqueue_put = [\"a\"]\n"),
               Catch::StartsWith(dir.at(8) + "unknown verb 'queue_put' in deny"));
  }
  SECTION("an invalid pattern") {
    const auto message = dir.error(kBroker + principal_a + "deny.call = [\"a\", \"memory.>.x\"]\n");
    CHECK_THAT(message, Catch::StartsWith(dir.at(6) + "deny.call: pattern 'memory.>.x' has '>' "
                                                      "before its last token"));
    CHECK_THAT(dir.error(kBroker + principal_a + "allow.call = \"memory.*\"\n"),
               Catch::StartsWith(dir.at(6) + "allow.call must be an array of patterns"));
    CHECK_THAT(dir.error(kBroker + principal_a + "allow.call = [\"memory.*\", 3]\n"),
               Catch::StartsWith(dir.at(6) + "allow.call's elements must be a string"));
  }
  SECTION("unknown keys") {
    CHECK_THAT(dir.error("brokers = 1\n" + kBroker),
               Catch::StartsWith(dir.at(1) + "unknown key 'brokers' in the file's top level"));
    CHECK_THAT(dir.error(kBroker + "keyfile = \"x\"\n"),
               Catch::StartsWith(dir.at(3) + "unknown key 'keyfile' in [broker]; the keys there "
                                             "are key-file, endpoint-keys"));
    CHECK_THAT(dir.error(kBroker + principal_a + "alow.call = [\"memory.*\"]\n"),
               Catch::StartsWith(dir.at(6) + "unknown key 'alow' in [[principal]]"));
    CHECK_THAT(dir.error(kBroker + principal_a + "allow = [\"memory.*\"]\n"),
               Catch::StartsWith(dir.at(6) + "allow must be a table of verbs"));
    CHECK_THAT(dir.error(kBroker + "[principal]\nname = \"a\"\n"),
               Catch::StartsWith(dir.at(3) + "principal is a table; write each principal as a "
                                             "[[principal]] table"));
  }
}
