// sagebus-echo-caller: calls method "echo" of a service --count times and prints each
// reply. On the first failure it prints the error ("STATUS_NAME: message") and exits 1.
#include <chrono>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "sagebus/sagebus.hpp"

int main(int argc, char** argv) {
  sagebus::ClientOptions client_options;  // endpoint tcp://127.0.0.1:5555
  std::string service = "echo", payload = "hello";
  int count = 1, timeout_ms = 5000;
  CLI::App app{"sage-bus example caller: calls <service>.echo"};
  app.add_option("--endpoint", client_options.endpoint, "sage-busd endpoint")
      ->capture_default_str();
  app.add_option("--service", service, "service to call")->capture_default_str();
  app.add_option("--count", count, "calls to make, one after another")->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "timeout of each call")->capture_default_str();
  app.add_option("payload", payload, "what to send")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  sagebus::CallOptions call_options;
  call_options.timeout = std::chrono::milliseconds(timeout_ms);
  try {
    sagebus::Client client(client_options);
    // The client connects in the background: wait for it, so that a broker that is down
    // is reported as such rather than by the first call.
    if (!client.wait_connected(call_options.timeout)) {
      std::cerr << "UNAVAILABLE: cannot reach sage-busd at " << client_options.endpoint << "\n";
      return 1;
    }
    for (int i = 0; i < count; ++i) {
      sagebus::Reply reply = client.call(service, "echo", payload, call_options);
      std::cout << reply.payload << "\n";
    }
  } catch (const sagebus::Error& e) {
    std::cerr << e.what() << "\n";  // e.g. "NO_RESPONDERS: ..."
    return 1;
  }
  return 0;
}
