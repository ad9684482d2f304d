// sagebus-echo-service: a sage-bus service with three methods.
//   echo   returns its payload (after --delay-ms)
//   fail   throws, so the caller gets HANDLER_ERROR "fail requested"
//   whoami returns this process's id, to see which instance served a call
// Prints "ready" once the broker has confirmed the registration; stops gracefully on
// SIGINT or SIGTERM.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "sagebus/sagebus.hpp"

namespace {
std::atomic<bool> stop_requested{false};
void on_signal(int) {
  stop_requested = true;
}
}  // namespace

int main(int argc, char** argv) {
  sagebus::ClientOptions client_options;  // endpoint tcp://127.0.0.1:5555
  sagebus::ServiceOptions options;        // max_inflight 16
  std::string name = "echo", strategy = "least_outstanding";
  int delay_ms = 0;
  const std::map<std::string, sagebus::Strategy> strategies{
      {"least_outstanding", sagebus::Strategy::least_outstanding},
      {"round_robin", sagebus::Strategy::round_robin},
      {"consistent_hash", sagebus::Strategy::consistent_hash}};
  CLI::App app{"sage-bus example service: echo, fail, whoami"};
  app.add_option("--endpoint", client_options.endpoint, "sage-busd endpoint")
      ->capture_default_str();
  app.add_option("--name", name, "service name")->capture_default_str();
  app.add_option("--delay-ms", delay_ms, "sleep this long in echo")->capture_default_str();
  app.add_option("--max-inflight", options.max_inflight, "calls at once")->capture_default_str();
  app.add_flag("--on-io-thread", options.on_io_thread,
               "run the handlers on the client's I/O thread (no hand-off; --delay-ms blocks it)");
  app.add_option("--strategy", strategy, "load balancing among instances")
      ->check(CLI::IsMember(strategies))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.strategy = strategies.at(strategy);

  try {
    sagebus::Client client(client_options);
    sagebus::Service svc(client, name, options);
    svc.handle("echo", [&](const sagebus::Request& req) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      return std::string(req.payload);
    });
    svc.handle("fail", [](const sagebus::Request&) -> std::string {
      throw std::runtime_error("fail requested");
    });
    svc.handle("whoami", [](const sagebus::Request&) { return std::to_string(::getpid()); });
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    svc.start();  // registers now, or as soon as the broker is reachable

    while (!svc.wait_registered(std::chrono::milliseconds(200)))
      if (stop_requested) return 0;
    std::cout << "ready" << std::endl;
    while (!stop_requested)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    svc.stop();  // unregisters, then finishes the calls it holds
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
