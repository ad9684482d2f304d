// Topics and subscription patterns, as the broker and the SDK both check and match them.
//
// A topic is 1..kMaxTopicTokens tokens joined by '.', each token 1+ bytes of
// [A-Za-z0-9_:/-], the whole at most kMaxTopicBytes: "events.user.login". A pattern is a
// topic whose tokens may also be '*' (exactly one token) or, as the last token only, '>'
// (one or more tokens): "events.*.login", "events.>". Publish topics take no wildcards.
// Stateless and thread safe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sagebus::wire {

inline constexpr std::size_t kMaxTopicBytes = 256;
inline constexpr std::size_t kMaxTopicTokens = 32;

// The error text for an invalid publish topic (`what` names it: "topic", "queue name"),
// or nothing when it is valid.
std::optional<std::string> check_topic(std::string_view topic, std::string_view what = "topic");
// The error text for an invalid subscription pattern, or nothing when it is valid.
std::optional<std::string> check_pattern(std::string_view pattern);
// Whether `topic` matches `pattern`; both must be valid.
bool topic_matches(std::string_view pattern, std::string_view topic);

}  // namespace sagebus::wire
