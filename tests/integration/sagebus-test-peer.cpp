// sagebus-test-peer: a client the integration tests run as a separate process, for the
// cases that need one to die at a chosen moment.
//
//   sagebus-test-peer ENDPOINT queue-get QUEUE
//     takes one item from legacy queue QUEUE, prints "got <item>" and then holds it,
//     unacknowledged, until killed (or for at most 60 s).
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include "sagebus/sagebus.hpp"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc != 4 || std::string(argv[2]) != "queue-get") {
    std::cerr << "usage: sagebus-test-peer ENDPOINT queue-get QUEUE\n";
    return 2;
  }
  try {
    sagebus::Client client({.endpoint = argv[1], .name = "test-peer"});
    if (!client.wait_connected(10s)) {
      std::cerr << "not connected to " << argv[1] << "\n";
      return 1;
    }
    sagebus::LegacyQueue queue(client, argv[3]);
    const auto item = queue.get(10s);
    if (!item) {
      std::cerr << "no item in queue " << argv[3] << " within 10 s\n";
      return 1;
    }
    std::cout << "got " << *item << std::endl;
    std::this_thread::sleep_for(60s);  // the scenario: die holding the item
    return 0;
  } catch (const sagebus::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
