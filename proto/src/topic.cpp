#include "sagebus/wire/topic.hpp"

namespace sagebus::wire {

namespace {

bool token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == ':' || c == '/' || c == '-';
}

// Splits at '.' and calls `check(token, is_last)` on each; stops at the first error.
template <typename Check>
std::optional<std::string> each_token(std::string_view text, std::string_view what, Check check) {
  if (text.empty()) return std::string(what) + " is empty";
  if (text.size() > kMaxTopicBytes)
    return std::string(what) + " is " + std::to_string(text.size()) + " bytes long; the limit is " +
           std::to_string(kMaxTopicBytes);
  std::size_t tokens = 0;
  for (std::size_t start = 0;;) {
    const auto dot = text.find('.', start);
    const auto token = text.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (++tokens > kMaxTopicTokens)
      return std::string(what) + " '" + std::string(text) + "' has more than " +
             std::to_string(kMaxTopicTokens) + " tokens";
    if (token.empty()) return std::string(what) + " '" + std::string(text) + "' has an empty token";
    if (auto error = check(token, dot == std::string_view::npos)) return error;
    if (dot == std::string_view::npos) return std::nullopt;
    start = dot + 1;
  }
}

std::optional<std::string> plain_token(std::string_view token, std::string_view what,
                                       std::string_view text) {
  for (char c : token)
    if (!token_char(c))
      return std::string(what) + " '" + std::string(text) + "' has a character outside " +
             "[A-Za-z0-9_:/-] in token '" + std::string(token) + "'" +
             (c == '*' || c == '>' ? " (wildcards belong in subscription patterns only)" : "");
  return std::nullopt;
}

}  // namespace

std::optional<std::string> check_topic(std::string_view topic, std::string_view what) {
  return each_token(topic, what,
                    [&](std::string_view token, bool) { return plain_token(token, what, topic); });
}

std::optional<std::string> check_pattern(std::string_view pattern) {
  return each_token(
      pattern, "pattern", [&](std::string_view token, bool last) -> std::optional<std::string> {
        if (token == "*") return std::nullopt;
        if (token == ">") {
          if (last) return std::nullopt;
          return "pattern '" + std::string(pattern) + "' has '>' before its last token";
        }
        return plain_token(token, "pattern", pattern);
      });
}

bool topic_matches(std::string_view pattern, std::string_view topic) {
  for (;;) {
    const auto pdot = pattern.find('.');
    const auto tdot = topic.find('.');
    const auto ptoken = pattern.substr(0, pdot);
    const auto ttoken = topic.substr(0, tdot);
    if (ptoken == ">") return true;  // one or more tokens: `topic` has at least this one
    if (ptoken != "*" && ptoken != ttoken) return false;
    const bool pattern_ends = pdot == std::string_view::npos;
    const bool topic_ends = tdot == std::string_view::npos;
    if (pattern_ends || topic_ends) return pattern_ends && topic_ends;
    pattern.remove_prefix(pdot + 1);
    topic.remove_prefix(tdot + 1);
  }
}

}  // namespace sagebus::wire
