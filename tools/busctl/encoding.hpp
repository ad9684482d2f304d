// Byte encodings busctl prints: JSON string literals, UTF-8 validation and base64.
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

}  // namespace busctl
