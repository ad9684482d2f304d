// Framing for the sage-bus wire: turning a Header into a ZeroMQ frame and back, the
// protocol's constants, and the name rules every side checks the same way.
//
// Everything here is stateless and thread safe. decode() never throws: a frame from the
// network is untrusted input, and its failure is a value the caller answers or counts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "sagebus/wire.pb.h"

namespace sagebus::wire {

inline constexpr std::uint32_t kProtocolVersion = 1;
// The default largest header frame (the broker's max-header can change it): headers
// carry names, not data.
inline constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
// Payload frames one message may carry; the broker keeps no more of a message than these
// (the SDK sends one). Beyond them the message is refused like a payload over max-payload.
inline constexpr std::size_t kMaxPayloadFrames = 64;
// Names of services, methods and connections.
inline constexpr std::size_t kMaxNameBytes = 128;
// A stream's flow control counts bytes. Each chunk costs its payload's bytes plus
// kChunkOverhead, about what holding one more chunk costs its reader, so that a window
// also bounds how many empty or tiny chunks are outstanding. An instance may send a
// chunk while the stream's credit is above zero; the chunk's cost comes off it, which may
// take it below zero: the reader then holds at most its window plus one chunk.
inline constexpr std::uint32_t kChunkOverhead = 64;
inline constexpr std::int64_t chunk_cost(std::size_t payload_bytes) {
  return static_cast<std::int64_t>(payload_bytes) + kChunkOverhead;
}
// The largest window, in bytes, a stream's caller may grant (REQUEST.credit with stream,
// and the credit outstanding after CREDITs): the broker refuses a larger initial window
// and clamps what CREDIT adds beyond it.
inline constexpr std::uint32_t kMaxStreamWindow = 64 * 1024 * 1024;
// The service the broker answers itself (busctl's admin API). Names starting with '$'
// are reserved for the broker.
inline constexpr std::string_view kBrokerService = "$broker";

// Serializes `header` into a new frame, stamping the protocol version.
zmq::message_t encode(Header& header);

enum class DecodeResult { ok, too_large, malformed, bad_version };

// Parses `frame` into `out` (reusing its storage). Returns why it failed, if it did: a
// frame larger than `max_bytes` is too_large and is not parsed; on bad_version `out`
// holds the parsed header so that the caller can answer its id. The result is always
// what protobuf's ParseFromArray makes of the frame; most headers are read by a parser
// written for them (detail::parse_common), the rest by protobuf.
DecodeResult decode(const zmq::message_t& frame, Header& out,
                    std::size_t max_bytes = kMaxHeaderBytes);
// The same for a header's bytes held elsewhere (a BATCH record).
DecodeResult decode(const void* data, std::size_t size, Header& out,
                    std::size_t max_bytes = kMaxHeaderBytes);

// The kind and id of a header decode() would not parse (too_large), so that its sender
// can still be answered: read from the header's first fields when they are version, kind
// and id, in that order, as every encoder writes them (protobuf writes fields in number
// order). Nothing when they are not, or the id is 0. Reads at most the first 33 bytes.
struct KindAndId {
  Kind kind;
  std::uint64_t id;
};
std::optional<KindAndId> peek_kind_and_id(const zmq::message_t& frame);

namespace detail {
// decode()'s own parser, here so that the unit tests and the fuzz target can hold it to
// protobuf's. Takes only the scalar and string fields of Header (all but headers, hello,
// welcome and registration), in their own wire types, in well-formed input: then it
// parses `data` into `out` and returns true, `out` being exactly what ParseFromArray
// makes of the same bytes. Returns false for everything else (those four fields, unknown
// fields, other wire types, anything protobuf might refuse, such as invalid UTF-8 or a
// truncated field), with `out` left half-filled for protobuf to parse again.
bool parse_common(const void* data, std::size_t size, Header& out);
}  // namespace detail

// "NO_RESPONDERS", "REQUEST", ... for logs and error text.
std::string_view status_name(Status status);
std::string_view kind_name(Kind kind);
std::string_view strategy_name(Strategy strategy);

// Checks a service, method or connection name: 1..kMaxNameBytes bytes of
// [A-Za-z0-9_.:/-]. `what` names the thing in the returned error text
// ("service name", ...). Returns the error text, or nothing when the name is valid.
// Reserved names (leading '$') are valid here; the broker refuses to register them.
std::optional<std::string> check_name(std::string_view what, std::string_view name);

}  // namespace sagebus::wire
