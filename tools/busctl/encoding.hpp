// Byte encodings busctl prints: JSON string literals, UTF-8 validation, base64, and
// payloads as one line of text or as a JSON member.
//
// Pure functions over bytes; thread safe; they never throw except std::bad_alloc.
#pragma once

#include <string>
#include <string_view>

namespace busctl {

// `text` as a JSON string literal, quotes included. `text` must be valid UTF-8: control
// characters, '"' and '\\' are escaped, every other byte is copied.
std::string json_quote(std::string_view text);

// True when `bytes` is well-formed UTF-8 (no overlong forms, surrogates or values above
// U+10FFFF), so that it can be printed as a JSON string.
bool is_valid_utf8(std::string_view bytes);

// Standard base64 (RFC 4648, with '=' padding).
std::string base64_encode(std::string_view bytes);

// `bytes` as they can stand on one line of text: as is when they are valid UTF-8 without
// control characters (tab allowed) and do not begin with "base64:"; otherwise "base64:"
// followed by their base64. So a reader can always tell text from encoded bytes.
std::string one_line_text(std::string_view bytes);

// The JSON member for a payload: "payload":"..." when `bytes` is valid UTF-8, otherwise
// "payload_base64":"...". No braces, no leading comma.
std::string payload_json_member(std::string_view bytes);

}  // namespace busctl
