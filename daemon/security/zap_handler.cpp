#include "security/zap_handler.hpp"

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "sagebus/wire/socket.hpp"

namespace sagebus::broker {

namespace {

// ZMQ_ZAP_ENFORCE_DOMAIN: in libzmq's draft API (zmq.h defines it only for builds with
// ZMQ_BUILD_DRAFT_API), which Debian's libzmq5 is built with; secure() checks that it took.
constexpr int kZapEnforceDomain = 93;

constexpr std::size_t kCurveKeyBytes = 32;

// A ZAP reply's metadata: one property, as ZMTP encodes them (a 1-byte name length, the
// name, a 4-byte big-endian value length, the value).
std::string metadata(std::string_view name, std::string_view value) {
  std::string out;
  out += static_cast<char>(name.size());
  out += name;
  const std::uint32_t length = htonl(static_cast<std::uint32_t>(value.size()));
  out.append(reinterpret_cast<const char*>(&length), sizeof length);
  out += value;
  return out;
}

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& context) : socket_(context, zmq::socket_type::router) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
  fd_ = socket_.get(zmq::sockopt::fd);
}

void ZapHandler::secure(zmq::socket_t& socket, const AuthConfig& auth) {
  if (!zmq_has("curve"))
    throw std::runtime_error(
        "auth needs CURVE, and this libzmq was built without it; install Debian's libzmq5");
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, auth.broker_keys().secret_key);
  socket.set(zmq::sockopt::zap_domain, std::string(kDomain));
  const int on = 1;
  if (zmq_setsockopt(socket.handle(), kZapEnforceDomain, &on, sizeof on) != 0)
    throw std::runtime_error(
        "this libzmq cannot enforce the ZAP domain (ZMQ_ZAP_ENFORCE_DOMAIN), so a client "
        "could be let in without its key being checked; install Debian's libzmq5 (4.3.4, "
        "built with it)");
}

std::size_t ZapHandler::serve(const AuthConfig& auth, TimePoint now) {
  std::size_t refused = 0;
  std::vector<zmq::message_t> request;
  for (;;) {
    request.clear();
    if (!wire::receive_message(socket_, request, zmq::recv_flags::dontwait, 16)) return refused;
    // routing id, empty delimiter, version, request id, domain, address, routing id of
    // the client, mechanism, credentials (for CURVE: the client's 32-byte public key).
    if (request.size() < 9) continue;  // libzmq sends nothing shorter
    const auto text = [&](std::size_t i) { return request[i].to_string_view(); };
    std::string_view status = "400";
    std::string_view why = "key not accepted";
    std::string principal;
    std::string key;
    if (text(2) != "1.0" || text(4) != kDomain || text(7) != "CURVE" ||
        request[8].size() != kCurveKeyBytes) {
      why = "not a CURVE request for this broker";
    } else {
      std::array<char, 41> z85{};
      zmq_z85_encode(z85.data(), static_cast<const std::uint8_t*>(request[8].data()),
                     kCurveKeyBytes);
      key = z85.data();
      if (const Principal* p = auth.by_key(key)) {
        status = "200";
        why = "OK";
        principal = p->name;
      }
    }
    if (status != "200") {
      ++refused;
      if (const auto unlogged = log_throttle_.take(now))
        spdlog::warn(
            "refused a connection from {}: its CURVE key {} is not a key of any principal in "
            "{}{}",
            text(5), key.empty() ? "(none)" : key, auth.path,
            *unlogged > 0 ? " (" + std::to_string(*unlogged) + " more refused since the last line)"
                          : std::string());
    }
    const std::string properties = principal.empty() ? std::string() : metadata(kKeyProperty, key);
    const auto more = zmq::send_flags::sndmore;
    zmq::message_t reply[] = {std::move(request[0]),
                              std::move(request[1]),
                              zmq::message_t(std::string_view("1.0")),
                              std::move(request[3]),
                              zmq::message_t(status),
                              zmq::message_t(why),
                              zmq::message_t(principal),
                              zmq::message_t(properties)};
    for (std::size_t i = 0; i < std::size(reply); ++i)
      (void)wire::send(socket_, reply[i], i + 1 < std::size(reply) ? more : zmq::send_flags::none);
  }
}

}  // namespace sagebus::broker
