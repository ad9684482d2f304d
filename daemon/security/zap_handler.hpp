// ZapHandler: the broker's authenticator, the ZAP handler (ZeroMQ RFC 27) of its context.
// libzmq asks it about every connection that completes a CURVE handshake with the broker's
// ROUTER, before any message of that connection is read; the broker's loop answers (serve())
// when the handler's fd says a request waits.
//
// A key is accepted only if it is a key of a principal of the rules file (auth.hpp), for
// the domain the broker sets on its socket (kDomain) and the CURVE mechanism; everything
// else is refused (status 400), and the client sees its handshake fail
// (UNAUTHENTICATED in the SDK). An accepted connection's messages carry two properties
// that libzmq stamps on every frame read from it: User-Id, the principal's name, and
// X-Curve-Key, the client's public key in Z85 (kKeyProperty), by which the broker checks
// the principal again after a reload.
//
// The ROUTER must set ZMQ_ZAP_ENFORCE_DOMAIN (enforce_domain()): without it libzmq lets
// every key in when no handler answers. Owned and used by the broker's loop thread only.
#pragma once

#include <cstddef>
#include <string_view>

#include <zmq.hpp>

#include "loop/token_bucket.hpp"
#include "routing/pending.hpp"
#include "security/auth.hpp"

namespace sagebus::broker {

class ZapHandler {
 public:
  static constexpr std::string_view kDomain = "sage-bus";
  static constexpr const char* kKeyProperty = "X-Curve-Key";

  // Binds inproc://zeromq.zap.01 in `context`; throws zmq::error_t if another handler has.
  explicit ZapHandler(zmq::context_t& context);

  // Makes `socket` a CURVE server with `auth`'s broker key, asking this handler about
  // every client, and refusing everyone if it cannot (ZMQ_ZAP_ENFORCE_DOMAIN). Throws
  // std::runtime_error if libzmq lacks CURVE or the option.
  static void secure(zmq::socket_t& socket, const AuthConfig& auth);

  int fd() const { return fd_; }

  // Answers every request waiting under `auth`'s principals; returns how many keys it
  // refused. Each refusal is logged, rate-limited, at `now`.
  std::size_t serve(const AuthConfig& auth, TimePoint now);

 private:
  zmq::socket_t socket_;
  int fd_ = -1;
  LogThrottle log_throttle_{1.0, 5.0};
};

}  // namespace sagebus::broker
