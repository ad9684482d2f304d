// The fuzz target's input format: a script of messages to the broker, one step per line.
// Every byte string is a valid script (what cannot be read is skipped), so libFuzzer may
// mutate freely, and a script stays readable enough to write seeds by hand.
//
//   # a comment                  (also any line this list does not describe)
//   A> kind: HELLO id: 1 hello { name: "svc" }
//   B> kind: REQUEST id: 7 service: "svc" method: "m" timeout_ms: 500 | payload | more
//   A> kind: REPLY id: $id | result
//   C= \x08\x01\x10\x04            the header frame as raw bytes
//   C.                            a message without a header frame (only the routing id)
//   ~3                            sleep 3 ms, then let the broker run its timers
//   ?events.user.login|events.*.login|events.>   check topic rules and subscription
//                                 matching, without the broker (harness.hpp)
//
// A message line is <peer><mode><frames>. The peer is 'A', 'B' or 'C' (connections the
// harness keeps connected) or 'X' (a routing id with no connection: every send to it
// fails); any other byte picks one of the four by its value. The frames are separated by
// '|'; surrounding spaces are trimmed. Mode '>': the first frame is a
// sagebus.wire.Header in protobuf text format (version 1 unless it says otherwise; what
// parses before an error is kept; field numbers allowed), where "$id" becomes the id of
// the oldest REQUEST or DELIVER the peer received and has not used yet, "$last" the id
// "$id" became last (a stream's CHUNKs, then its REPLY), and "$tag" the oldest delivery
// tag it was given. Mode '=': the first frame is raw bytes. Every frame
// but a text header takes escapes: \xNN, \n, \0, and \c for any other c (\| \\ \ ).
//
// Pure functions on values; thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sagebus::fuzz {

inline constexpr std::size_t kPeers = 4;  // A, B, C, X
inline constexpr std::size_t kUnconnected = 3;

struct Step {
  enum class Kind { message, sleep, topic_check };
  Kind kind = Kind::message;
  std::size_t peer = 0;  // message: 0..kPeers-1
  enum class Header { text, raw, none };
  Header header = Header::none;
  // message: the header (text or raw) and then the payload frames; topic_check: the
  // topic, then patterns; sleep: nothing.
  std::vector<std::string> frames;
  unsigned sleep_ms = 0;
};

// Reads a script; never fails.
std::vector<Step> parse_script(std::string_view input);

// Decodes the escapes described above.
std::string unescape(std::string_view text);

}  // namespace sagebus::fuzz
