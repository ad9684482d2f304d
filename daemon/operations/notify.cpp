#include "operations/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

namespace sagebus::broker {

namespace {

// The sd_notify protocol (systemd's sd_notify(3)): one datagram of "KEY=VALUE" lines to
// the AF_UNIX socket that $NOTIFY_SOCKET names, a path, or with a leading '@' an
// abstract name. Written here rather than linking libsystemd, which would bring its
// compression and crypto libraries into the broker's memory for these few lines.
void notify(const std::string& state) {
  const char* socket_name = std::getenv("NOTIFY_SOCKET");
  if (socket_name == nullptr || *socket_name == '\0') return;  // not run by systemd
  const std::size_t length = std::strlen(socket_name);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if ((socket_name[0] != '/' && socket_name[0] != '@') || length >= sizeof address.sun_path) {
    spdlog::warn("cannot tell systemd '{}': NOTIFY_SOCKET '{}' is not a socket path", state,
                 socket_name);
    return;
  }
  std::memcpy(address.sun_path, socket_name, length);
  if (address.sun_path[0] == '@') address.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    spdlog::warn("cannot tell systemd '{}': socket: {}", state, std::strerror(errno));
    return;
  }
  const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  if (::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&address), size) < 0)
    spdlog::warn("cannot tell systemd '{}' on {}: {}", state, socket_name, std::strerror(errno));
  ::close(fd);
}

}  // namespace

void notify_ready(std::string_view status) {
  notify("READY=1\nSTATUS=" + std::string(status));
}

void notify_reloading() {
  notify("RELOADING=1\nSTATUS=reloading the configuration");
}

void notify_stopping(std::string_view status) {
  notify("STOPPING=1\nSTATUS=" + std::string(status));
}

}  // namespace sagebus::broker
