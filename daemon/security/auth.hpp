// Auth: the broker's rules file, which says who may connect and what each may do.
//
// With auth on, a connection proves a CURVE public key; the principal holding that key
// (AuthConfig::by_key) is who the connection is, and its Rules decide every action:
// a verb on a subject, denied unless an allow pattern of that verb matches it and no
// deny pattern of that verb does. Subjects per verb:
//
//   register            the service name                 "retrieval"
//   call                SERVICE.METHOD                   "memory.retrieve"
//   publish             the topic                        "events.user.login"
//   subscribe           the pattern (allows_pattern)     "events.>"
//   name                the connection name of HELLO     "retriever-1"
//   send                the peer's connection name       "node-7"
//   queue-put/get       the queue name                   "jobs"
//   inspect, admin      the `$broker` method             "status", "drain"
//
// Patterns are dot-separated tokens as subscription patterns are (wire/topic.hpp): '*'
// matches exactly one token, '>' as the last token one or more. A subject is matched
// token by token, so "*" allows "node-7" but not "node.7".
//
// The broker's key pair is [broker] key-file's; [broker.endpoint-keys] may give some of
// its endpoints (spelt as in the broker's `endpoint` configuration) a key pair of their
// own, so that its key can be rotated one endpoint at a time (broker_keys_for()).
//
// read_auth_config() reads and validates the whole file (TOML; deploy/sage-busd-auth.toml
// is a commented example) at start-up or on a reload, and refuses it at the first problem
// with "FILE:LINE: problem; what to do": a typo must not silently grant or deny nothing.
// The result is immutable: its const functions are safe from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sagebus/wire/curve_keys.hpp"

namespace sagebus::broker {

using wire::CurveKeys;

enum class Verb : std::uint8_t {
  register_service,
  call,
  publish,
  subscribe,
  name,
  send,
  queue_put,
  queue_get,
  inspect,
  admin
};
inline constexpr std::size_t kVerbCount = 10;

// The verb as the rules file spells it: "register", "call", "publish", "subscribe",
// "name", "send", "queue-put", "queue-get", "inspect", "admin".
std::string_view verb_name(Verb verb) noexcept;
// The verb the rules file spells `name`, or nothing.
std::optional<Verb> verb_from_name(std::string_view name) noexcept;

// Whether `outer` matches every topic that `inner` matches; both are valid patterns.
bool pattern_covers(std::string_view outer, std::string_view inner);
// Whether some topic is matched by both `a` and `b`; both are valid patterns.
bool patterns_overlap(std::string_view a, std::string_view b);

// One principal's rules: allow and deny patterns per verb. Empty rules deny everything.
class Rules {
 public:
  // Add a pattern for `verb`. Throw std::invalid_argument when `pattern` is not valid
  // (wire::check_pattern's text).
  void allow(Verb verb, std::string pattern);
  void deny(Verb verb, std::string pattern);
  const std::vector<std::string>& allowed(Verb verb) const noexcept;
  const std::vector<std::string>& denied(Verb verb) const noexcept;

  // Whether `verb` on `subject` is allowed: some allow pattern of that verb matches it
  // and no deny pattern of that verb does (an explicit deny wins over an allow). A
  // subject that is not a valid topic (wire::check_topic), such as a pattern, is denied.
  bool allows(Verb verb, std::string_view subject) const;
  // Whether `verb` on every topic `pattern` matches is allowed, for subscribe: some allow
  // pattern covers `pattern` and no deny pattern overlaps it. An invalid pattern is
  // denied.
  bool allows_pattern(Verb verb, std::string_view pattern) const;

 private:
  std::array<std::vector<std::string>, kVerbCount> allow_;
  std::array<std::vector<std::string>, kVerbCount> deny_;
};

struct Principal {
  std::string name;
  std::vector<std::string> keys;  // Z85 CURVE public keys, at least one
  Rules rules;
};

// Endpoints, as the broker's configuration spells them, and the key pair each serves.
using EndpointKeys = std::map<std::string, CurveKeys, std::less<>>;

// The whole rules file: the broker's key pairs and the principals. Default-constructed, it
// has no keys and no principals.
class AuthConfig {
 public:
  AuthConfig() = default;
  // Throws std::invalid_argument when two principals share a name or a key.
  AuthConfig(std::string file, CurveKeys broker_keys, std::vector<Principal> principals,
             EndpointKeys endpoint_keys = {});

  // The broker's CURVE key pair, both keys set: the one of every endpoint that
  // endpoint_keys() does not name.
  const CurveKeys& broker_keys() const noexcept { return broker_keys_; }
  // The key pair the broker serves on `endpoint` (as the broker's configuration spells
  // it): its entry in endpoint_keys(), else broker_keys().
  const CurveKeys& broker_keys_for(std::string_view endpoint) const noexcept;
  // The endpoints given a key pair of their own, both keys of each set.
  const EndpointKeys& endpoint_keys() const noexcept { return endpoint_keys_; }
  // The first endpoint of endpoint_keys() that is not among `endpoints`, or nothing.
  std::optional<std::string> unknown_endpoint(const std::vector<std::string>& endpoints) const;
  // The principal holding this public key, or nullptr: such a key may not connect.
  const Principal* by_key(std::string_view z85_public_key) const noexcept;
  const Principal* by_name(std::string_view name) const noexcept;
  const std::vector<Principal>& principals() const noexcept { return principals_; }

  std::string path;  // the file it was read from

 private:
  CurveKeys broker_keys_;
  EndpointKeys endpoint_keys_;
  std::vector<Principal> principals_;
  std::map<std::string, std::size_t, std::less<>> by_key_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
};

// A rules file that cannot be used. what() is "FILE:LINE: problem; what to do", without
// ":LINE" when the problem is not about a line.
class AuthConfigError : public std::runtime_error {
 public:
  using runtime_error::runtime_error;
};

// Reads and validates the whole rules file at `path`. Key files named in it are read
// (wire::read_key_file), relative paths from the file's directory. Throws AuthConfigError
// for the first problem: TOML syntax; a missing [broker] or key-file; a key file that
// cannot be read or, for the broker (key-file and each of endpoint-keys), holds no secret
// key; an endpoint-keys entry that is not a string; a principal without a valid,
// unique name, without keys, with an invalid key or a key of another principal; an
// unknown verb; an invalid pattern; a key of the wrong type; an unknown key anywhere.
// No principals is valid: everything is denied.
AuthConfig read_auth_config(const std::string& path);

}  // namespace sagebus::broker
