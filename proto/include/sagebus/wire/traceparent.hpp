// W3C trace context (https://www.w3.org/TR/trace-context/), as sage-bus carries it in
// Header.traceparent: "00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>". A
// call's trace id names the whole chain of calls it starts; each call made within it
// carries the same trace id under a parent id of its own.
//
// Stateless but for the generator's per-thread state; thread safe. check() never throws:
// a traceparent from the network is untrusted input.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sagebus::wire {

inline constexpr std::size_t kTraceparentBytes = 55;

// Why `traceparent` is not one sage-bus carries, or nothing when it is: empty (no trace)
// or a valid W3C traceparent. Versions above 00 are taken by their first 55 characters,
// as the recommendation asks; "ff" is invalid, as are an all-zero trace or parent id and
// upper-case hex.
std::optional<std::string> check_traceparent(std::string_view traceparent);

// The trace id (32 hex) of a traceparent that passed check_traceparent; empty for "".
std::string_view trace_id_of(std::string_view traceparent);

// A traceparent that starts a new trace: random trace and parent ids, flags 01 (sampled).
std::string new_traceparent();
// The traceparent of a call made within `parent`'s: the same trace id and flags, a new
// parent id. A new trace when `parent` is empty.
std::string child_traceparent(std::string_view parent);

}  // namespace sagebus::wire
