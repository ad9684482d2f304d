// Synchronous requests to the broker over a Client's connection, for the SDK's own
// classes (Client, LegacyQueue). Thread safe.
#pragma once

#include "connection.hpp"

namespace sagebus::detail {

// Starts `spec` and waits for its outcome, whatever its status (CANCELLED when
// `interrupt` says so first).
Outcome ask(Client& client, RequestSpec&& spec, const Interrupt* interrupt = nullptr);
// The spec of a call of `method` of `service` (its names checked, its traceparent and,
// within a context, its deadline set). Throws Error for bad names, a bad traceparent, or
// a context whose deadline has passed.
RequestSpec call_spec(std::string_view service, std::string_view method, std::string_view payload,
                      const CallOptions& options);
// As ask(), but throws Error unless the status is OK.
Outcome wait(Client& client, RequestSpec&& spec, const Interrupt* interrupt = nullptr);

}  // namespace sagebus::detail
