#include "operations/http.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace sagebus::broker {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kAnswerWaitMs = 1000;
// A client has this long from connecting to reading the whole answer.
constexpr std::chrono::seconds kConnectionDeadline{5};
// Requests are a line and a few headers; anything longer is not one of ours.
constexpr std::size_t kMaxRequestBytes = 8192;

std::string_view reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Service Unavailable";
  }
}

std::string response(int status, std::string_view content_type, const std::string& body,
                     bool head) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason(status)) +
                    "\r\nContent-Type: " + std::string(content_type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n\r\n";
  if (!head) out += body;
  return out;
}

std::string text(int status, const std::string& body) {
  return response(status, "text/plain; charset=utf-8", body + "\n", false);
}

// Binds a non-blocking listening TCP socket to HOST:PORT; throws naming the address.
int listen_on(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos)
    throw std::runtime_error("cannot serve HTTP on '" + address + "': expected HOST:PORT");
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int r = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); r != 0)
    throw std::runtime_error("cannot serve HTTP on " + address + ": " + ::gai_strerror(r));
  std::string why = "no address";
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int on = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) throw std::runtime_error("cannot serve HTTP on " + address + ": " + why);
  return fd;
}

}  // namespace

HttpControl::HttpControl(zmq::context_t& context, const std::string& endpoint)
    : socket_(context, zmq::socket_type::router) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind(endpoint);
}

struct HttpEndpoint::Connection {
  int fd = -1;
  Clock::time_point deadline;
  std::string in;
  std::string out;  // the answer, once the request is whole
  std::size_t sent = 0;
};

HttpEndpoint::HttpEndpoint(zmq::context_t& context, const std::string& control_endpoint,
                           const std::string& address)
    : dealer_(context, zmq::socket_type::dealer) {
  dealer_.set(zmq::sockopt::linger, 0);
  dealer_.connect(control_endpoint);
  listen_fd_ = listen_on(address);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    ::close(listen_fd_);
    throw std::runtime_error(std::string("cannot serve HTTP: eventfd: ") + std::strerror(errno));
  }
  thread_ = std::thread([this] {
    wire::block_signals();  // they are the loop's (SIGHUP, SIGTERM)
    run_();
  });
}

HttpEndpoint::~HttpEndpoint() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  ::close(wake_fd_);
  ::close(listen_fd_);
  dealer_.close();
}

void HttpEndpoint::run_() {
  std::vector<Connection> connections;
  std::vector<pollfd> fds;
  for (;;) {
    const auto now = Clock::now();
    // Drop the finished and the late; a connection is only ever closed here.
    std::erase_if(connections, [&](const Connection& c) {
      const bool over = (!c.out.empty() && c.sent == c.out.size()) || now >= c.deadline;
      if (over) ::close(c.fd);
      return over;
    });
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    // Beyond kMaxConnections new clients wait in the listen backlog.
    fds.push_back({listen_fd_, static_cast<short>(
                                   connections.size() < kMaxConnections ? POLLIN : 0), 0});
    auto next = now + kConnectionDeadline;
    for (const Connection& c : connections) {
      fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
      next = std::min(next, c.deadline);
    }
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
    if (::poll(fds.data(), fds.size(), static_cast<int>(std::max<long>(wait, 0))) < 0) {
      if (errno == EINTR) continue;
      return;  // cannot happen with valid descriptors
    }
    if (fds[0].revents != 0) {
      for (const Connection& c : connections)
        ::close(c.fd);
      return;
    }
    for (std::size_t i = 0; i < connections.size(); ++i) {
      Connection& c = connections[i];
      const short revents = fds[i + 2].revents;
      if (revents == 0) continue;
      if (c.out.empty()) {
        read_(c);
      } else {
        const ssize_t n =
            ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) c.sent += static_cast<std::size_t>(n);
        else if (errno != EAGAIN && errno != EINTR) c.deadline = Clock::now();  // gone
      }
    }
    if ((fds[1].revents & POLLIN) != 0) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) connections.push_back({fd, Clock::now() + kConnectionDeadline, {}, {}, 0});
    }
  }
}

void HttpEndpoint::read_(Connection& c) {
  char buffer[2048];
  const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    c.deadline = Clock::now();  // closed before asking anything whole
    return;
  }
  if (n < 0) return;
  c.in.append(buffer, static_cast<std::size_t>(n));
  const auto end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (c.in.size() > kMaxRequestBytes)
      c.out = text(431, "the request is longer than " + std::to_string(kMaxRequestBytes) +
                            " bytes; ask for GET /metrics or GET /healthz");
    return;
  }
  c.out = respond_(std::string_view(c.in).substr(0, c.in.find("\r\n")));
}

std::string HttpEndpoint::respond_(std::string_view request) {
  // "METHOD TARGET VERSION"
  const auto sp1 = request.find(' ');
  const auto sp2 = request.find(' ', sp1 == std::string_view::npos ? sp1 : sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
      !request.substr(sp2 + 1).starts_with("HTTP/1."))
    return text(400, "not an HTTP/1.x request line");
  const std::string_view method = request.substr(0, sp1);
  std::string_view target = request.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  const bool head = method == "HEAD";
  if (method != "GET" && !head) return text(405, "only GET and HEAD are served");
  if (target == "/metrics") {
    auto [status, body] = ask_("metrics");
    return response(status,
                    status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                  : "text/plain; charset=utf-8",
                    body, head);
  }
  if (target == "/healthz") {
    auto [status, body] = ask_("healthz");
    return response(status, "text/plain; charset=utf-8", body + "\n", head);
  }
  return text(404, "no such page: " + std::string(target) + "; try /metrics or /healthz");
}

std::pair<int, std::string> HttpEndpoint::ask_(const std::string& what) {
  const std::string seq = std::to_string(++seq_);
  std::array<zmq::const_buffer, 2> question{zmq::buffer(seq), zmq::buffer(what)};
  if (!zmq::send_multipart(dealer_, question, zmq::send_flags::dontwait))
    return {503, "the broker loop is not reading its HTTP questions"};
  const auto until = Clock::now() + std::chrono::milliseconds(kAnswerWaitMs);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
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
