// busctl: inspect sage-busd and call services from the command line.
//
//   busctl [--endpoint E] [--json] [--timeout MS] status
//   busctl [--endpoint E] [--json] [--timeout MS] services
//   busctl [--endpoint E] [--json] [--timeout MS] call SERVICE METHOD [PAYLOAD|-]
//
// The global options may also follow the subcommand. Exit status: 0 on success, 1 when
// the bus answered an error (printed to stderr as "STATUS_NAME: message"), 2 for usage
// errors.
#include <iostream>
#include <iterator>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "sagebus/status.hpp"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

std::string read_all(std::istream& in) {
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  busctl::Options options;
  int timeout_ms = 5000;
  std::string service, method, payload;

  CLI::App app{"busctl: inspect sage-busd and call services"};
  app.fallthrough();  // the options below also work after the subcommand
  app.require_subcommand(1);
  app.add_option("-e,--endpoint", options.endpoint, "sage-busd endpoint")
      ->envname("SAGEBUS_ENDPOINT")
      ->capture_default_str();
  app.add_flag("--json", options.json, "print JSON instead of tables or raw bytes");
  app.add_option("-t,--timeout", timeout_ms,
                 "milliseconds to wait for the broker and its answer, in all")
      ->check(CLI::Range(1, 24 * 3600 * 1000))
      ->capture_default_str();

  CLI::App* status_cmd =
      app.add_subcommand("status", "the broker's version, uptime, endpoints and counters");
  CLI::App* services_cmd = app.add_subcommand("services", "services and their instances");
  CLI::App* call_cmd =
      app.add_subcommand("call", "call SERVICE METHOD and print the reply's payload");
  call_cmd->add_option("SERVICE", service, "service name")->required();
  call_cmd->add_option("METHOD", method, "method name")->required();
  call_cmd->add_option("PAYLOAD", payload,
                       "request payload; '-' reads it from stdin; default empty");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  options.timeout = std::chrono::milliseconds(timeout_ms);

  try {
    if (status_cmd->parsed()) busctl::status(options, std::cout);
    if (services_cmd->parsed()) busctl::services(options, std::cout);
    if (call_cmd->parsed()) {
      if (payload == "-") payload = read_all(std::cin);
      busctl::call(options, service, method, payload, std::cout);
    }
  } catch (const std::exception& e) {  // sagebus::Error: "STATUS_NAME: message"
    std::cout.flush();
    std::cerr << e.what() << "\n";
    return kExitFailure;
  }
  std::cout.flush();
  return std::cout ? 0 : kExitFailure;
}
