// The engine of a detail::Connection: the DEALER socket, the socket monitor and every
// table of requests, registrations and subscriptions (engine.cpp), under one mutex held by
// the thread that runs it.
//
// Its I/O thread runs it: waits on the sockets, reads them, runs timers and the commands
// other threads post. A user thread in a synchronous call (call()) sends its request
// itself, and, if no other thread waits on the sockets, waits on them itself until its
// request ends (leader/follower): a call then crosses no thread of ours, as with a raw
// DEALER. An asynchronous request, too, is started and sent by its caller's thread when
// no other thread runs the engine at that moment. Meanwhile the I/O thread naps, and takes over
// again once no caller has waited on the sockets for a millisecond. Callers never run the engine of
// a client that serves or subscribes: handlers and events stay on the I/O thread. With
// ClientOptions::inline_callbacks the I/O thread also runs call_async callbacks, between
// turns and without the engine's lock, so that the calls they make are sent from there at
// once; callers that read such a reply hand its callback to the I/O thread.
#pragma once

#include <future>

#include "connection.hpp"

namespace sagebus::detail {

// Sets up the socket, fulfils `started` (or fails it with an Error for a bad endpoint),
// then runs the I/O loop until `connection` is stopping. On the way out it ends every
// request still pending with CANCELLED and says GOODBYE.
void run_io_thread(Connection& connection, std::promise<void>& started);

// Connection::call: sends `spec` from this thread and returns its outcome.
Outcome call(Engine& engine, RequestSpec&& spec);
// Connection::start: starts `start` from this thread if no other thread runs the engine
// now; false, and `start` untouched, if one does.
bool try_start(Engine& engine, Connection::Start& start);
// Connection::start: true on the I/O thread while it runs callbacks
// (ClientOptions::inline_callbacks) without holding the engine.
bool in_callbacks(const Engine& engine);
// Connection::post_: has the I/O thread take the sockets back if it naps while no caller
// waits on them, so that what was posted is not left until its nap ends.
void wake_if_napping(Engine& engine);

}  // namespace sagebus::detail
