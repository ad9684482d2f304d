// CURVE keys of a secured run (--auth): one server key pair, which sage-busd or the ZeroMQ
// forwarder holds, and one client key pair, which every bench client of that server uses.
// They live in a run's directory as server.key, server.key_secret, client.key and
// client.key_secret (wire/curve_keys.hpp's certificates), so that child processes (the
// forwarder, the holders of idle connections) read the same keys from there.
//
// Plain functions; the socket helpers are for sockets of the calling thread.
#pragma once

#include <string>

#include <zmq.hpp>

#include "sagebus/wire/curve_keys.hpp"

namespace sagebus::bench {

struct CurveSet {
  wire::CurveKeys server;
  wire::CurveKeys client;
};

// Generates both key pairs and writes them into `dir`. Throws what write_key_pair throws.
CurveSet make_curve_set(const std::string& dir);
// Reads the key pairs make_curve_set wrote into `dir`. Throws wire::KeyFileError.
CurveSet read_curve_set(const std::string& dir);

// Makes `socket` a CURVE server with the server key pair (before it binds). Without a
// ZAP handler, libzmq lets in any client key: the forwarder checks no principal.
void curve_server(zmq::socket_t& socket, const CurveSet& keys);
// Makes `socket` a CURVE client of the server key (before it connects).
void curve_client(zmq::socket_t& socket, const CurveSet& keys);

}  // namespace sagebus::bench
