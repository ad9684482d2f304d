// sagebus-chaos-instance: one instance of the chaos test's service "chaos", as a process
// of its own so that the test can SIGKILL and SIGSTOP it.
//
//   sagebus-chaos-instance ENDPOINT NAME LOG
//
// Method "work", payload "TOKEN WORK_MS": appends TOKEN and a newline to LOG, sleeps
// WORK_MS, and replies "TOKEN@NAME" (the caller checks that the reply is its own).
//
// "Executed" means logged, and the line is written before the work and the reply, with
// one write(2) to a file opened O_APPEND: once the handler has started, the line is in
// the file, and a SIGKILL at any later moment cannot take it back. A call this instance
// was killed in the middle of therefore counts as executed even if it had no effect yet,
// which can only make the test's "never executed twice" check stricter. (Logging after
// the reply would let a kill between the two hide an execution.)
//
// Runs until SIGTERM or SIGINT, then stops the service gracefully.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include "sagebus/sagebus.hpp"

namespace {

void append_line(int fd, std::string_view token) {
  std::string line(token);
  line += '\n';
  // A regular file: one write() of a short line is not split by a signal.
  while (::write(fd, line.data(), line.size()) < 0 && errno == EINTR) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc != 4) {
    std::cerr << "usage: sagebus-chaos-instance ENDPOINT NAME LOG\n";
    return 2;
  }
  const std::string name = argv[2];
  const int log_fd = ::open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    std::cerr << "cannot open " << argv[3] << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  // Blocked here, before any thread starts, so that every thread inherits the mask and
  // sigwait() below is the one place the signals arrive.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  try {
    sagebus::Client client({.endpoint = argv[1], .name = name});
    sagebus::Service service(client, "chaos", {.max_inflight = 8});
    service.handle("work", [&](const sagebus::Request& request) {
      const auto space = request.payload.find(' ');
      const std::string_view token = request.payload.substr(0, space);
      append_line(log_fd, token);
      unsigned work_ms = 0;
      if (space != std::string_view::npos) {
        const auto digits = request.payload.substr(space + 1);
        std::from_chars(digits.data(), digits.data() + digits.size(), work_ms);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(work_ms));
      return std::string(token) + "@" + name;
    });
    service.start();
    std::cout << name << " started" << std::endl;
    int sig = 0;
    sigwait(&stop_signals, &sig);
    service.stop(1s);
    return 0;
  } catch (const sagebus::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
