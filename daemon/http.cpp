#include "http.hpp"

#include <httplib.h>

#include <stdexcept>

namespace sagebus::broker {

namespace {
constexpr int kAnswerWaitMs = 1000;
}

HttpControl::HttpControl(zmq::context_t& context, const std::string& endpoint)
    : socket_(context, zmq::socket_type::router) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind(endpoint);
}

HttpEndpoint::HttpEndpoint(zmq::context_t& context, const std::string& control_endpoint,
                           const std::string& address)
    : dealer_(context, zmq::socket_type::dealer), server_(std::make_unique<httplib::Server>()) {
  dealer_.set(zmq::sockopt::linger, 0);
  dealer_.connect(control_endpoint);
  const auto colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const int port = std::stoi(address.substr(colon + 1));
  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    auto [status, body] = ask_("metrics");
    res.status = status;
    res.set_content(body, status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                        : "text/plain; charset=utf-8");
  });
  server_->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    auto [status, body] = ask_("healthz");
    res.status = status;
    res.set_content(body + "\n", "text/plain; charset=utf-8");
  });
  if (!server_->bind_to_port(host, port))
    throw std::runtime_error("cannot serve HTTP on " + address +
                             ": the address is in use or not on this host");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

HttpEndpoint::~HttpEndpoint() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mutex_);
  dealer_.close();
}

std::pair<int, std::string> HttpEndpoint::ask_(const std::string& what) {
  std::lock_guard lock(mutex_);
  const std::string seq = std::to_string(++seq_);
  std::array<zmq::const_buffer, 2> question{zmq::buffer(seq), zmq::buffer(what)};
  if (!zmq::send_multipart(dealer_, question, zmq::send_flags::dontwait))
    return {503, "the broker loop is not reading its HTTP questions"};
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kAnswerWaitMs);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLIN, 0};
    if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0)
      return {503,
              "the broker loop did not answer within " + std::to_string(kAnswerWaitMs) + " ms"};
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(dealer_, std::back_inserter(parts), zmq::recv_flags::dontwait))
      continue;
    if (parts.size() != 3 || parts[0].to_string() != seq) continue;  // a late answer
    return {std::stoi(parts[1].to_string()), parts[2].to_string()};
  }
}

}  // namespace sagebus::broker
