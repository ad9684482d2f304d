// sage-busd: the sage-bus broker daemon. Parses options, sets up logging and signals,
// binds, tells systemd it is ready, and runs the Broker loop on the main thread until
// SIGINT or SIGTERM (drain, then stop). SIGHUP reloads the configuration.
#include <malloc.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "operations/config.hpp"
#include "operations/notify.hpp"

namespace {

// Set by the signal handlers, acted on by the loop (between ticks).
sagebus::broker::Requests g_requests;

extern "C" void on_stop_signal(int signum) {
  g_requests.stop_signal.store(signum, std::memory_order_relaxed);
  g_requests.stop.fetch_add(1, std::memory_order_relaxed);
}

extern "C" void on_reload_signal(int /*signum*/) {
  g_requests.reload.store(true, std::memory_order_relaxed);
}

void set_signal_mask(int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(how, &set, nullptr);
}

// The loop frees what libzmq's I/O thread allocated (each message received) and the other
// way round (each message sent), in bursts as large as the peers' windows. glibc gives the
// top of a heap back to the system once 128 KiB of it is free, and the next burst faults
// it in again: streams of 4 KiB chunks cost the broker most of a page fault a chunk. It
// starts instead where glibc's own thresholds end up once a program frees a large block
// (blocks up to 32 MiB from the heap, trimmed past twice that): at most 64 MiB of freed
// memory per heap is kept for reuse.
void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

const char* bind_advice(int code) {
  switch (code) {
    case EADDRINUSE:
      return "Another program (perhaps another sage-busd) is using it: stop it, or choose "
             "another --endpoint.";
    case EPROTONOSUPPORT:
      return "Use tcp://HOST:PORT or ipc://PATH.";
    case EADDRNOTAVAIL:
    case ENODEV:
      return "No interface of this host has that address: use one it has, e.g. 127.0.0.1.";
    case ENOENT:
      return "The directory of the ipc:// path does not exist: create it or choose another.";
    case EACCES:
      return "Permission denied: use a port above 1023 or a writable ipc:// path.";
    default:
      return "Check the address, or choose another --endpoint.";
  }
}

}  // namespace

int main(int argc, char** argv) {
  sagebus::broker::ConfigRead read = sagebus::broker::read_config(argc, argv);
  std::fputs(read.out.c_str(), stdout);
  std::fputs(read.err.c_str(), stderr);
  if (read.action == sagebus::broker::ConfigRead::Action::exit) return read.exit_code;
  const sagebus::broker::BrokerConfig& config = read.config;

  auto logger = spdlog::stderr_color_mt("sage-busd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  // A store that reaches the file-size limit (RLIMIT_FSIZE) gets an error from write(),
  // which the store reports (its puts fail UNAVAILABLE), instead of a SIGXFSZ that would
  // kill the broker.
  std::signal(SIGXFSZ, SIG_IGN);
  keep_freed_memory();
  // ZeroMQ's I/O threads inherit the signal mask of the thread that creates them: with
  // SIGINT/SIGTERM/SIGHUP blocked while the Broker is built, only the main thread receives them,
  // and its poll returns at once (EINTR) instead of at the next timeout.
  set_signal_mask(SIG_BLOCK);
  std::unique_ptr<sagebus::broker::Broker> broker;
  try {
    broker = std::make_unique<sagebus::broker::Broker>(config);
  } catch (const sagebus::broker::BindError& e) {
    spdlog::error("cannot listen on {}: {}. {}", e.endpoint(), e.what(), bind_advice(e.code()));
    return EXIT_FAILURE;
  } catch (const std::exception& e) {
    spdlog::error("cannot start: {}", e.what());
    return EXIT_FAILURE;
  }
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  action.sa_handler = on_reload_signal;
  sigaction(SIGHUP, &action, nullptr);
  set_signal_mask(SIG_UNBLOCK);
  sagebus::broker::notify_ready("running");

  try {
    broker->run(g_requests, [argc, argv] { return sagebus::broker::read_config(argc, argv); });
  } catch (const std::exception& e) {
    spdlog::error("the broker loop failed: {}", e.what());
    return EXIT_FAILURE;
  }
  broker.reset();
  spdlog::info("stopped cleanly");
  return EXIT_SUCCESS;
}
