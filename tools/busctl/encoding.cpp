#include "encoding.hpp"

#include <cstdint>

namespace busctl {

std::string json_quote(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (byte < 0x20) {
          out += "\\u00";
          out += kHex[byte >> 4];
          out += kHex[byte & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

bool is_valid_utf8(std::string_view bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xe0) == 0xc0) {
      length = 2;
      code = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      length = 3;
      code = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      length = 4;
      code = lead & 0x07;
    } else {
      return false;
    }
    if (bytes.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(bytes[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    static constexpr std::uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[length]) return false;           // overlong
    if (code >= 0xd800 && code <= 0xdfff) return false;  // surrogate
    if (code > 0x10ffff) return false;
    i += length;
  }
  return true;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto byte = [&](std::size_t k) -> std::uint32_t {
    return k < bytes.size() ? static_cast<unsigned char>(bytes[k]) : 0;
  };
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::uint32_t group = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    const std::size_t present = bytes.size() - i;  // 3 or more: a full group
    out += kAlphabet[(group >> 18) & 0x3f];
    out += kAlphabet[(group >> 12) & 0x3f];
    out += present > 1 ? kAlphabet[(group >> 6) & 0x3f] : '=';
    out += present > 2 ? kAlphabet[group & 0x3f] : '=';
  }
  return out;
}

std::string one_line_text(std::string_view bytes) {
  static constexpr std::string_view kPrefix = "base64:";
  bool plain = bytes.substr(0, kPrefix.size()) != kPrefix && is_valid_utf8(bytes);
  for (std::size_t i = 0; plain && i < bytes.size(); ++i) {
    const auto byte = static_cast<unsigned char>(bytes[i]);
    plain = (byte >= 0x20 && byte != 0x7f) || byte == '\t';
  }
  return plain ? std::string(bytes) : std::string(kPrefix) + base64_encode(bytes);
}

std::string payload_json_member(std::string_view bytes) {
  if (is_valid_utf8(bytes)) return "\"payload\":" + json_quote(bytes);
  return "\"payload_base64\":" + json_quote(base64_encode(bytes));
}

}  // namespace busctl
