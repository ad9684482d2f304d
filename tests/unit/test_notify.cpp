// sd_notify (daemon/operations/notify.hpp): what systemd's socket receives, for a path and for an
// abstract socket name, and nothing at all outside systemd.
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <catch2/catch.hpp>

#include "operations/notify.hpp"

namespace {

// A datagram socket standing in for systemd's, bound to `name` ('@' first: abstract).
class FakeSystemd {
 public:
  explicit FakeSystemd(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name[0] == '@') address.sun_path[0] = '\0';
    const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&address), size) == 0);
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  }
  ~FakeSystemd() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
    if (name_[0] == '/') ::unlink(name_.c_str());
  }
  // The next datagram, or "" after 2 s.
  std::string receive() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) return {};
    char buffer[512];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  std::string name_;
  int fd_ = -1;
};

}  // namespace

TEST_CASE("notify sends systemd the state on the socket NOTIFY_SOCKET names", "[notify]") {
  SECTION("a path") {
    const std::string path = "/tmp/sagebus-notify-test-" + std::to_string(::getpid());
    FakeSystemd systemd(path);
    sagebus::broker::notify_ready("serving tcp://127.0.0.1:5555");
    CHECK(systemd.receive() == "READY=1\nSTATUS=serving tcp://127.0.0.1:5555");
    sagebus::broker::notify_reloading();
    CHECK(systemd.receive() == "RELOADING=1\nSTATUS=reloading the configuration");
  }
  SECTION("an abstract name") {
    FakeSystemd systemd("@sagebus-notify-test-" + std::to_string(::getpid()));
    sagebus::broker::notify_stopping("draining");
    CHECK(systemd.receive() == "STOPPING=1\nSTATUS=draining");
  }
}

TEST_CASE("outside systemd notify does nothing", "[notify]") {
  ::unsetenv("NOTIFY_SOCKET");
  sagebus::broker::notify_ready("no one listens");  // must neither fail nor block
  SUCCEED();
}
