#include "loop/idle_spin.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <memory>
#include <utility>

namespace sagebus::broker {

namespace {

// Reads /proc/loadavg through one descriptor kept open; nullopt when it cannot.
class LoadavgProbe {
 public:
  LoadavgProbe() : fd_(::open("/proc/loadavg", O_RDONLY | O_CLOEXEC)) {}
  LoadavgProbe(const LoadavgProbe&) = delete;
  LoadavgProbe& operator=(const LoadavgProbe&) = delete;
  ~LoadavgProbe() {
    if (fd_ >= 0) ::close(fd_);
  }

  std::optional<long> operator()() const {
    if (fd_ < 0) return std::nullopt;
    char text[128];
    const ssize_t n = ::pread(fd_, text, sizeof text, 0);
    if (n <= 0) return std::nullopt;
    return IdleSpin::runnable_of(std::string_view(text, static_cast<std::size_t>(n)));
  }

 private:
  int fd_;
};

}  // namespace

IdleSpin::IdleSpin()
    : IdleSpin([probe = std::make_shared<LoadavgProbe>()] { return (*probe)(); },
               ::sysconf(_SC_NPROCESSORS_ONLN)) {}

IdleSpin::IdleSpin(RunnableProbe probe, long cpus)
    : probe_(std::move(probe)), cpus_(cpus), knows_load_(probe_().has_value()) {}

bool IdleSpin::may_spin(Clock::time_point now, std::chrono::microseconds window) {
  if (window.count() <= 0 || now - last_received_ >= window) return false;
  if (now >= next_check_) {
    const std::optional<long> runnable = probe_();
    cpu_idle_ = runnable && cpus_ > 0 && *runnable <= cpus_;
    next_check_ = now + kRecheck;
  }
  return cpu_idle_;
}

std::optional<long> IdleSpin::runnable_of(std::string_view loadavg) {
  // Three load averages, then "RUNNABLE/TOTAL".
  const std::size_t slash = loadavg.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::size_t space = loadavg.rfind(' ', slash);
  if (space == std::string_view::npos) return std::nullopt;
  long runnable = 0;
  const char* first = loadavg.data() + space + 1;
  const char* last = loadavg.data() + slash;
  const auto [end, error] = std::from_chars(first, last, runnable);
  if (error != std::errc() || end != last || first == last) return std::nullopt;
  return runnable;
}

}  // namespace sagebus::broker
