#include "security/auth.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include <toml++/toml.h>

#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/topic.hpp"

namespace sagebus::broker {

namespace {

constexpr std::array<std::string_view, kVerbCount> kVerbNames = {
    "register", "call",      "publish",   "subscribe", "name",
    "send",     "queue-put", "queue-get", "inspect",   "admin"};
static_assert(static_cast<std::size_t>(Verb::admin) + 1 == kVerbCount);

constexpr std::string_view kVerbList =
    "register, call, publish, subscribe, name, send, queue-put, queue-get, inspect, admin";

std::size_t index_of(Verb verb) {
  return static_cast<std::size_t>(verb);
}

// The tokens of a pattern, one at a time.
class Tokens {
 public:
  explicit Tokens(std::string_view text) : rest_(text), done_(text.empty()) {}
  bool done() const { return done_; }
  std::string_view take() {
    const auto dot = rest_.find('.');
    const auto token = rest_.substr(0, dot);
    if (dot == std::string_view::npos) {
      done_ = true;
      rest_ = {};
    } else {
      rest_.remove_prefix(dot + 1);
    }
    return token;
  }

 private:
  std::string_view rest_;
  bool done_;
};

}  // namespace

std::string_view verb_name(Verb verb) noexcept {
  return index_of(verb) < kVerbCount ? kVerbNames[index_of(verb)] : std::string_view("?");
}

std::optional<Verb> verb_from_name(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kVerbCount; ++i)
    if (kVerbNames[i] == name) return static_cast<Verb>(i);
  return std::nullopt;
}

bool pattern_covers(std::string_view outer, std::string_view inner) {
  Tokens a(outer);
  Tokens b(inner);
  for (;;) {
    if (a.done()) return b.done();
    const auto a_token = a.take();
    // '>' takes one or more tokens, whatever they are; `inner` has at least one more.
    if (a_token == ">") return !b.done();
    if (b.done()) return false;
    const auto b_token = b.take();
    // `inner` goes on for any number of tokens; `outer`, without a '>' here, cannot.
    if (b_token == ">") return false;
    if (a_token != "*" && a_token != b_token) return false;
  }
}

bool patterns_overlap(std::string_view a_text, std::string_view b_text) {
  Tokens a(a_text);
  Tokens b(b_text);
  for (;;) {
    if (a.done() || b.done()) return a.done() && b.done();
    const auto a_token = a.take();
    const auto b_token = b.take();
    // Both have a token here, which '>' takes with whatever the other needs after it.
    if (a_token == ">" || b_token == ">") return true;
    if (a_token != "*" && b_token != "*" && a_token != b_token) return false;
  }
}

// --- Rules -------------------------------------------------------------------------

namespace {

const std::vector<std::string> kNoPatterns;

void add_pattern(std::array<std::vector<std::string>, kVerbCount>& table, Verb verb,
                 std::string pattern) {
  if (index_of(verb) >= kVerbCount) throw std::invalid_argument("not a verb");
  if (auto error = wire::check_pattern(pattern)) throw std::invalid_argument(*error);
  table[index_of(verb)].push_back(std::move(pattern));
}

}  // namespace

void Rules::allow(Verb verb, std::string pattern) {
  add_pattern(allow_, verb, std::move(pattern));
}

void Rules::deny(Verb verb, std::string pattern) {
  add_pattern(deny_, verb, std::move(pattern));
}

const std::vector<std::string>& Rules::allowed(Verb verb) const noexcept {
  return index_of(verb) < kVerbCount ? allow_[index_of(verb)] : kNoPatterns;
}

const std::vector<std::string>& Rules::denied(Verb verb) const noexcept {
  return index_of(verb) < kVerbCount ? deny_[index_of(verb)] : kNoPatterns;
}

bool Rules::allows(Verb verb, std::string_view subject) const {
  if (wire::check_topic(subject)) return false;
  const auto matches = [&](const std::string& pattern) {
    return wire::topic_matches(pattern, subject);
  };
  return std::any_of(allowed(verb).begin(), allowed(verb).end(), matches) &&
         std::none_of(denied(verb).begin(), denied(verb).end(), matches);
}

bool Rules::allows_pattern(Verb verb, std::string_view pattern) const {
  if (wire::check_pattern(pattern)) return false;
  const auto covers = [&](const std::string& allow) { return pattern_covers(allow, pattern); };
  const auto overlaps = [&](const std::string& deny) { return patterns_overlap(deny, pattern); };
  return std::any_of(allowed(verb).begin(), allowed(verb).end(), covers) &&
         std::none_of(denied(verb).begin(), denied(verb).end(), overlaps);
}

// --- AuthConfig --------------------------------------------------------------------

AuthConfig::AuthConfig(std::string file, CurveKeys broker_keys, std::vector<Principal> principals,
                       EndpointKeys endpoint_keys)
    : path(std::move(file)),
      broker_keys_(std::move(broker_keys)),
      endpoint_keys_(std::move(endpoint_keys)),
      principals_(std::move(principals)) {
  for (std::size_t i = 0; i < principals_.size(); ++i) {
    if (!by_name_.emplace(principals_[i].name, i).second)
      throw std::invalid_argument("two principals are named '" + principals_[i].name + "'");
    for (const auto& key : principals_[i].keys)
      if (!by_key_.emplace(key, i).second && by_key_.at(key) != i)
        throw std::invalid_argument("key " + key + " belongs to two principals");
  }
}

const CurveKeys& AuthConfig::broker_keys_for(std::string_view endpoint) const noexcept {
  const auto it = endpoint_keys_.find(endpoint);
  return it == endpoint_keys_.end() ? broker_keys_ : it->second;
}

std::optional<std::string> AuthConfig::unknown_endpoint(
    const std::vector<std::string>& endpoints) const {
  for (const auto& [endpoint, keys] : endpoint_keys_)
    if (std::find(endpoints.begin(), endpoints.end(), endpoint) == endpoints.end()) return endpoint;
  return std::nullopt;
}

const Principal* AuthConfig::by_key(std::string_view z85_public_key) const noexcept {
  const auto it = by_key_.find(z85_public_key);
  return it == by_key_.end() ? nullptr : &principals_[it->second];
}

const Principal* AuthConfig::by_name(std::string_view name) const noexcept {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &principals_[it->second];
}

// --- Reading the file --------------------------------------------------------------

namespace {

std::string type_of(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date or time";
  }
}

std::string join(std::initializer_list<std::string_view> words) {
  std::string text;
  for (const auto word : words)
    text += (text.empty() ? "" : ", ") + std::string(word);
  return text;
}

// Reads one file; every problem is an AuthConfigError naming the file and the line.
class Reader {
 public:
  explicit Reader(std::string path)
      : path_(std::move(path)), directory_(std::filesystem::path(path_).parent_path()) {}

  AuthConfig read() {
    const toml::table root = parse();
    check_keys(root, {"broker", "principal"}, "the file's top level");
    EndpointKeys endpoint_keys;
    CurveKeys broker_keys = read_broker(root, endpoint_keys);
    std::vector<Principal> principals;
    if (const toml::node* list = root.get("principal")) {
      const toml::array* array = list->as_array();
      if (!array)
        fail(*list,
             "principal is " + type_of(*list) + "; write each principal as a [[principal]] table");
      for (const toml::node& item : *array) {
        const toml::table* table = item.as_table();
        if (!table)
          fail(item, "principal holds " + type_of(item) +
                         "; write each principal as a [[principal]] table");
        principals.push_back(read_principal(*table));
      }
    }
    return AuthConfig(path_, std::move(broker_keys), std::move(principals),
                      std::move(endpoint_keys));
  }

 private:
  [[noreturn]] void fail(const toml::source_region& where, const std::string& problem) const {
    const auto line = where.begin.line;
    throw AuthConfigError(path_ + (line > 0 ? ":" + std::to_string(line) : "") + ": " + problem);
  }
  [[noreturn]] void fail(const toml::node& node, const std::string& problem) const {
    fail(node.source(), problem);
  }
  [[noreturn]] void fail(const std::string& problem) const {
    throw AuthConfigError(path_ + ": " + problem);
  }

  toml::table parse() const {
    if (std::error_code error; std::filesystem::is_directory(path_, error))
      fail("is a directory; give the path of the rules file");
    std::ifstream in(path_);
    if (!in)
      fail("cannot read it: " + std::string(std::strerror(errno)) +
           "; check the path and its permissions");
    std::stringstream text;
    text << in.rdbuf();
    try {
      return toml::parse(text.str(), path_);
    } catch (const toml::parse_error& e) {
      fail(e.source(), "TOML syntax: " + std::string(e.description()) + "; fix the syntax");
    }
  }

  // Refuses keys of `table` not in `known`: a misspelt key would otherwise be ignored.
  void check_keys(const toml::table& table, std::initializer_list<std::string_view> known,
                  std::string_view where) const {
    for (auto&& [key, node] : table)
      if (std::find(known.begin(), known.end(), key.str()) == known.end())
        fail(key.source(), "unknown key '" + std::string(key.str()) + "' in " + std::string(where) +
                               "; the keys there are " + join(known));
  }

  const std::string& string_of(const toml::node& node, std::string_view what,
                               std::string_view hint) const {
    if (const auto* text = node.as_string()) return text->get();
    fail(node,
         std::string(what) + " must be a string (" + std::string(hint) + "), not " + type_of(node));
  }

  // Calls fn(text, element) for each element of `node`, an array of strings.
  template <typename Fn>
  void each_string(const toml::node& node, std::string_view what, std::string_view hint,
                   Fn fn) const {
    const toml::array* array = node.as_array();
    if (!array)
      fail(node, std::string(what) + " must be an array of " + std::string(hint) + ", not " +
                     type_of(node));
    for (const toml::node& element : *array)
      fn(string_of(element, std::string(what) + "'s elements", hint), element);
  }

  // The certificate `file` names, relative to the rules file's directory.
  wire::CurveKeys read_keys(const toml::node& node, const std::string& file) const {
    const std::filesystem::path given(file);
    const std::string resolved = given.is_relative() ? (directory_ / given).string() : file;
    try {
      return wire::read_key_file(resolved);
    } catch (const wire::KeyFileError& e) {
      fail(node, "key file '" + file + "': " + e.what());
    }
  }

  // A key pair of the broker's, from the secret certificate `file` that `node` names.
  CurveKeys read_broker_keys(const toml::node& node, const std::string& file) const {
    CurveKeys keys = read_keys(node, file);
    if (keys.secret_key.empty())
      fail(node, "key file '" + file +
                     "' holds no secret key; give the broker's secret certificate "
                     "(NAME.key_secret), not its public one");
    return keys;
  }

  // [broker]: its key pair, and into `endpoint_keys` the pairs of [broker.endpoint-keys].
  CurveKeys read_broker(const toml::table& root, EndpointKeys& endpoint_keys) const {
    const toml::node* broker = root.get("broker");
    if (!broker)
      fail(
          "no [broker] table; add one with key-file = \"broker.key_secret\", the broker's "
          "secret certificate (`busctl keygen broker` writes it)");
    const toml::table* table = broker->as_table();
    if (!table)
      fail(*broker,
           "broker is " + type_of(*broker) + "; write it as a [broker] table with key-file");
    check_keys(*table, {"key-file", "endpoint-keys"}, "[broker]");
    const toml::node* key_file = table->get("key-file");
    if (!key_file)
      fail(*table,
           "[broker] has no key-file; add key-file = \"broker.key_secret\", the broker's "
           "secret certificate (`busctl keygen broker` writes it)");
    CurveKeys keys =
        read_broker_keys(*key_file, string_of(*key_file, "key-file", "a certificate's path"));
    if (const toml::node* node = table->get("endpoint-keys")) {
      const toml::table* endpoints = node->as_table();
      if (!endpoints)
        fail(*node, "endpoint-keys is " + type_of(*node) +
                        "; write it as a [broker.endpoint-keys] table of \"ENDPOINT\" = "
                        "\"NAME.key_secret\"");
      for (auto&& [endpoint, file] : *endpoints) {
        const std::string name(endpoint.str());
        const std::string what = "endpoint-keys' value for '" + name + "'";
        endpoint_keys.emplace(
            name, read_broker_keys(file, string_of(file, what, "a secret certificate's path")));
      }
    }
    return keys;
  }

  Principal read_principal(const toml::table& table) {
    check_keys(table, {"name", "keys", "key-files", "allow", "deny"}, "[[principal]]");
    Principal principal;
    const toml::node* name = table.get("name");
    if (!name) fail(table, "a principal without a name; add name = \"...\"");
    principal.name = string_of(*name, "name", "the principal's name");
    if (auto error = wire::check_name("principal name", principal.name))
      fail(*name, *error + "; use letters, digits and _.:/-");
    if (principal.name.front() == '$')
      fail(*name, "principal name '" + principal.name +
                      "' starts with '$', which is reserved for the broker; choose another");
    if (const auto first = name_lines_.find(principal.name); first != name_lines_.end())
      fail(*name, "principal name '" + principal.name + "' is already used on line " +
                      std::to_string(first->second) + "; give each principal its own name");
    name_lines_.emplace(principal.name, name->source().begin.line);

    const auto add_key = [&](const std::string& key, const toml::node& where) {
      if (std::find(principal.keys.begin(), principal.keys.end(), key) != principal.keys.end())
        return;
      if (const auto owner = key_owners_.find(key); owner != key_owners_.end())
        fail(where, "key " + key + " is already principal '" + owner->second.first + "''s (line " +
                        std::to_string(owner->second.second) +
                        "); a key identifies one principal: give each its own (busctl keygen)");
      key_owners_.emplace(key, std::pair(principal.name, where.source().begin.line));
      principal.keys.push_back(key);
    };
    if (const toml::node* keys = table.get("keys"))
      each_string(*keys, "keys", "Z85 public keys", [&](const std::string& key, const auto& at) {
        if (!wire::valid_curve_key(key))
          fail(at, "'" + key +
                       "' is not a CURVE public key (40 characters of Z85); copy the "
                       "public-key of the principal's .key file");
        add_key(key, at);
      });
    if (const toml::node* files = table.get("key-files"))
      each_string(*files, "key-files", "certificate paths",
                  [&](const std::string& file, const auto& at) {
                    add_key(read_keys(at, file).public_key, at);
                  });
    if (principal.keys.empty())
      fail(table, "principal '" + principal.name +
                      "' has no keys; give it keys = [\"<Z85 public key>\"] or key-files = "
                      "[\"NAME.key\"]");

    for (const std::string_view which : {"allow", "deny"}) {
      const toml::node* node = table.get(which);
      if (!node) continue;
      const toml::table* verbs = node->as_table();
      if (!verbs)
        fail(*node, std::string(which) + " must be a table of verbs, e.g. " + std::string(which) +
                        ".call = [\"memory.*\"]");
      for (auto&& [key, patterns] : *verbs) {
        const auto verb = verb_from_name(key.str());
        if (!verb)
          fail(key.source(), "unknown verb '" + std::string(key.str()) + "' in " +
                                 std::string(which) + "; the verbs are " + std::string(kVerbList));
        const std::string what = std::string(which) + "." + std::string(key.str());
        each_string(patterns, what, "patterns", [&](const std::string& pattern, const auto& at) {
          if (auto error = wire::check_pattern(pattern))
            fail(at, what + ": " + *error +
                         "; '*' matches one token, '>' as the last token one or more");
          if (which == "allow")
            principal.rules.allow(*verb, pattern);
          else
            principal.rules.deny(*verb, pattern);
        });
      }
    }
    return principal;
  }

  std::string path_;
  std::filesystem::path directory_;
  // Where each principal name and each key was first given, to say so when repeated.
  std::map<std::string, std::uint32_t, std::less<>> name_lines_;
  std::map<std::string, std::pair<std::string, std::uint32_t>, std::less<>> key_owners_;
};

}  // namespace

AuthConfig read_auth_config(const std::string& path) {
  return Reader(path).read();
}

}  // namespace sagebus::broker
