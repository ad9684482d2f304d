#include "script.hpp"

#include <algorithm>

namespace sagebus::fuzz {

namespace {

constexpr unsigned kMaxSleepMs = 10;

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ')
    s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ')
    s.remove_suffix(1);
  return s;
}

// Splits at each '|' that is not escaped; the pieces keep their escapes.
std::vector<std::string_view> split_frames(std::string_view text) {
  std::vector<std::string_view> pieces;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;  // the escaped byte is never a separator
    } else if (text[i] == '|') {
      pieces.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  pieces.push_back(text.substr(std::min(start, text.size())));
  return pieces;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::size_t peer_of(char c) {
  switch (c) {
    case 'A':
      return 0;
    case 'B':
      return 1;
    case 'C':
      return 2;
    case 'X':
      return kUnconnected;
    default:
      return static_cast<unsigned char>(c) % kPeers;
  }
}

}  // namespace

std::string unescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char c = text[++i];
    if (c == 'n') {
      out += '\n';
    } else if (c == '0') {
      out += '\0';
    } else if (c == 'x' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
               hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

std::vector<Step> parse_script(std::string_view input) {
  std::vector<Step> steps;
  while (!input.empty()) {
    const auto end = input.find('\n');
    const std::string_view line = input.substr(0, end);
    input.remove_prefix(end == std::string_view::npos ? input.size() : end + 1);
    if (line.empty() || line.front() == '#') continue;

    Step step;
    if (line.front() == '~') {
      step.kind = Step::Kind::sleep;
      for (const char c : line.substr(1)) {
        if (c < '0' || c > '9') break;
        step.sleep_ms = std::min(step.sleep_ms * 10 + static_cast<unsigned>(c - '0'), kMaxSleepMs);
      }
      steps.push_back(std::move(step));
      continue;
    }
    if (line.front() == '?') {
      step.kind = Step::Kind::topic_check;
      for (const auto piece : split_frames(line.substr(1)))
        step.frames.push_back(unescape(trim(piece)));
      steps.push_back(std::move(step));
      continue;
    }
    if (line.size() < 2) continue;
    const char mode = line[1];
    if (mode == '>') {
      step.header = Step::Header::text;
    } else if (mode == '=') {
      step.header = Step::Header::raw;
    } else if (mode == '.') {
      step.header = Step::Header::none;
    } else {
      continue;
    }
    step.peer = peer_of(line.front());
    if (step.header != Step::Header::none) {
      const auto pieces = split_frames(line.substr(2));
      for (std::size_t i = 0; i < pieces.size(); ++i) {
        const auto piece = trim(pieces[i]);
        const bool text_header = i == 0 && step.header == Step::Header::text;
        step.frames.push_back(text_header ? std::string(piece) : unescape(piece));
      }
    }
    steps.push_back(std::move(step));
  }
  return steps;
}

}  // namespace sagebus::fuzz
