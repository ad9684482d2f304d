// HttpEndpoint: sage-busd's HTTP endpoint, serving
//   /metrics  the Prometheus text of "$broker" method "metrics"
//   /healthz  200 "ok" while the loop answers and is not draining; 503 otherwise
//
// Its thread never touches the broker's tables. Each request is asked of the loop over
// an inproc socket pair in the broker's ZeroMQ context (HttpControl on the loop's side,
// polled with the ROUTER): the loop builds the answer between ticks and sends it back.
// A loop that does not answer within a second is reported 503.
//
// The server is ours, not a library's: GET and HEAD of two paths, one request per
// connection (Connection: close), at most kMaxConnections at once, each with a deadline
// to send its request and read its answer, all on one thread that poll()s non-blocking
// sockets, so a slow or silent client cannot hold the endpoint. A general HTTP library
// would bring TLS and compression libraries into the broker's memory for none of this.
//
// HttpEndpoint binds in its constructor (throws std::runtime_error naming the address)
// and serves on its own thread until destroyed. Thread safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "sagebus/wire/socket.hpp"

namespace sagebus::broker {

// The loop's side: an inproc ROUTER. Questions are [peer][seq][what]; answers are
// [peer][seq][http status][body]. Used by the loop thread only.
class HttpControl {
 public:
  HttpControl(zmq::context_t& context, const std::string& endpoint);
  zmq::socket_t& socket() { return socket_; }
  // Answers every waiting question with `answer(what, status)`; never blocks.
  template <class F>
  void serve(F&& answer) {
    for (;;) {
      std::vector<zmq::message_t> parts;
      if (!wire::receive_message(socket_, parts)) return;
      if (parts.size() != 3) continue;
      int status = 200;
      std::string body = answer(parts[2].to_string(), status);
      const std::string code = std::to_string(status);
      std::array<zmq::const_buffer, 4> out{zmq::buffer(parts[0].data(), parts[0].size()),
                                           zmq::buffer(parts[1].data(), parts[1].size()),
                                           zmq::buffer(code), zmq::buffer(body)};
      for (std::size_t i = 0; i < out.size(); ++i) {
        const auto more = i + 1 < out.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        if (!wire::send(socket_, out[i], more | zmq::send_flags::dontwait)) break;
      }
    }
  }

 private:
  zmq::socket_t socket_;
};

class HttpEndpoint {
 public:
  static constexpr std::size_t kMaxConnections = 16;

  // Serves on `address` (HOST:PORT), asking the loop through `control_endpoint`.
  HttpEndpoint(zmq::context_t& context, const std::string& control_endpoint,
               const std::string& address);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

 private:
  struct Connection;
  void run_();
  // Reads what `c` sent; once its request is whole, prepares the answer.
  void read_(Connection& c);
  // The response to one request (its request line), ready to send.
  std::string respond_(std::string_view request);
  // Asks the loop `what`; returns the HTTP status and body.
  std::pair<int, std::string> ask_(const std::string& what);

  zmq::socket_t dealer_;  // the HTTP thread's only
  std::uint64_t seq_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd: the destructor wakes the thread to stop
  std::thread thread_;
};

}  // namespace sagebus::broker
