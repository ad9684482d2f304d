// Status codes and the one error type of the sage-bus SDK.
//
// Every call ends in exactly one outcome: a reply, or a sagebus::Error whose status()
// says which of these happened and whose what() says it in words. The numeric values
// equal the wire protocol's Status enum.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace sagebus {

enum class Status : int {
  ok = 0,
  no_responders = 1,      // the service has no live instance
  unavailable = 2,        // the instance was lost mid-call, or the broker is unreachable
  deadline_exceeded = 3,  // the call's timeout passed before its reply
  overloaded = 4,         // a bounded queue (in the broker or this client) is full
  undeliverable = 5,      // point-to-point: no connected peer took the message
  invalid_argument = 6,   // a bad name, payload or option
  not_found = 7,          // the service has no such method
  handler_error = 8,      // the service's handler threw; what() carries its text
  permission_denied = 9,  // e.g. registering a name reserved for the broker
  cancelled = 10,         // the client or service was closed while the call waited
  internal = 11,          // a bug in sage-bus: please report it
  unauthenticated = 12,  // the broker refused this client's key, or its own is not the one expected
};

// "NO_RESPONDERS", "DEADLINE_EXCEEDED", ... as the wire and busctl spell them.
std::string_view status_name(Status status) noexcept;

// The error every SDK call throws. what() is "STATUS_NAME: message".
class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message);

  Status status() const noexcept { return status_; }
  // The message without the status prefix.
  const std::string& message() const noexcept { return message_; }

 private:
  Status status_;
  std::string message_;
};

}  // namespace sagebus
