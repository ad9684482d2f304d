// The driver of a detail::Connection: the DEALER socket, the socket monitor, the I/O
// thread and the protocol's sans-I/O session (session/session.hpp), under one mutex held
// by the thread that runs it (driver.cpp says who that is, and when).
#pragma once

#include <future>

#include "connection.hpp"

namespace sagebus::detail {

// Sets up the socket, fulfils `started` (or fails it with an Error for a bad endpoint),
// then runs the I/O loop until `connection` is stopping. On the way out it ends every
// request still pending with CANCELLED and says GOODBYE.
void run_io_thread(Connection& connection, std::promise<void>& started);

// Connection::call: sends `spec` from this thread and returns its outcome, or CANCELLED
// when `interrupt` (if any) says so first.
Outcome call(Driver& driver, RequestSpec&& spec, const Interrupt* interrupt);
// Connection::start: starts `start` from this thread if no other thread runs the driver
// now; false, and `start` untouched, if one does. `from_callback`: the I/O thread runs
// callbacks (in_callbacks), and sends the requests they make together when they are done.
bool try_start(Driver& driver, command::Start& start, bool from_callback);
// Connection::start: true on the I/O thread while it runs callbacks
// (ClientOptions::inline_callbacks) without holding the driver.
bool in_callbacks(const Driver& driver);
// Connection::post_: has the I/O thread take the sockets back if it naps while no caller
// waits on them, so that what was posted is not left until its nap ends.
void wake_if_napping(Driver& driver);

}  // namespace sagebus::detail
