// The I/O thread of a detail::Connection. It alone owns the DEALER socket, the socket
// monitor and every table of requests, registrations and subscriptions (engine.cpp).
#pragma once

#include <future>

#include "connection.hpp"

namespace sagebus::detail {

// Sets up the socket, fulfils `started` (or fails it with an Error for a bad endpoint),
// then runs the I/O loop until `connection` is stopping. On the way out it ends every
// request still pending with CANCELLED and says GOODBYE.
void run_io_thread(Connection& connection, std::promise<void>& started);

}  // namespace sagebus::detail
