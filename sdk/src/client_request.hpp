// Synchronous requests to the broker over a Client's connection, for the SDK's own
// classes (Client, LegacyQueue). Thread safe.
#pragma once

#include "connection.hpp"

namespace sagebus::detail {

// Starts `spec` and waits for its outcome, whatever its status (CANCELLED when
// `interrupt` says so first).
Outcome ask(Client& client, RequestSpec&& spec, const Interrupt* interrupt = nullptr);
// As ask(), but throws Error unless the status is OK.
Outcome wait(Client& client, RequestSpec&& spec, const Interrupt* interrupt = nullptr);

}  // namespace sagebus::detail
