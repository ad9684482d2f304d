// sagebus-echo-service: a sage-bus service with five methods.
//   echo    returns its payload (after --delay-ms)
//   fail    throws, so the caller gets HANDLER_ERROR "fail requested"
//   whoami  returns this process's id, to see which instance served a call
//   count   streams its payload's number of chunks, "1".."N" (busctl call --stream); not
//           with --on-io-thread
//   metrics the latency histogram of each method, in the Prometheus text format
// Every call goes through two interceptors: the metrics one, and with --log-calls one that
// logs a line per call to standard error.
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

#include "sagebus/logging_interceptor.hpp"
#include "sagebus/metrics_interceptor.hpp"
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
  bool log_calls = false;
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
  app.add_flag("--log-calls", log_calls, "log a line per call to standard error");
  CLI11_PARSE(app, argc, argv);
  options.strategy = strategies.at(strategy);
  auto metrics = std::make_shared<sagebus::MetricsInterceptor>();
  options.interceptors.push_back(metrics);
  if (log_calls)
    options.interceptors.push_back(std::make_shared<sagebus::LoggingInterceptor>(name));

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
    if (!options.on_io_thread)  // a stream's writer waits for its caller: not there
      svc.handle_stream("count", [](const sagebus::Request& req, sagebus::StreamWriter& out) {
        const int n = std::stoi(std::string(req.payload.empty() ? "10" : req.payload));
        for (int i = 1; i <= n; ++i)
          out.write(std::to_string(i) + "\n");
      });
    svc.handle("metrics", metrics->handler());
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
