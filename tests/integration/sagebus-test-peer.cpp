// sagebus-test-peer: a client the integration tests run as a separate process, for the
// cases that need one to die, or to freeze (SIGSTOP), at a chosen moment. Each mode says
// what it holds on stdout, one line per fact, so a test can wait for the line.
//
//   sagebus-test-peer ENDPOINT queue-get QUEUE
//     takes one item from legacy queue QUEUE, prints "got <item>" and then holds it,
//     unacknowledged, until killed (or for at most 60 s).
//
//   sagebus-test-peer ENDPOINT hold-all NAME SERVICE TOPIC QUEUE
//     connects as NAME and holds one of everything the broker keeps for a connection:
//     an instance of SERVICE (its one method, "hold", prints "holding <payload>" and never
//     answers), a subscription to TOPIC (prints "event <payload>" per message), an item
//     of legacy queue QUEUE taken and never acknowledged (prints "got <item>"), and an
//     inbox for point-to-point messages (prints "mail <payload>" per message). Prints
//     "ready" once it holds them all, then keeps them until killed (or for at most 60 s).
//
//   sagebus-test-peer ENDPOINT call NAME SERVICE METHOD COUNT TIMEOUT_MS
//     connects as NAME, starts COUNT calls of SERVICE.METHOD at once (payloads "call-<i>"),
//     prints "called <COUNT>", then one line per outcome ("outcome <STATUS>"), and stays
//     until killed (or for at most 60 s).
//
//   sagebus-test-peer ENDPOINT hang NAME SERVICE METHOD
//     connects as NAME and serves SERVICE, whose METHOD prints "holding <payload>" and never
//     answers, until killed (or for at most 60 s). Prints "ready" once registered.
//
//   sagebus-test-peer ENDPOINT stream-then-hang NAME SERVICE COUNT
//     connects as NAME and serves SERVICE, whose streaming method "stream" writes COUNT
//     chunks ("chunk-<i>"), prints "wrote <COUNT>" and then holds the stream open, never
//     ending it, until killed (or for at most 60 s). Prints "ready" once registered.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sagebus/sagebus.hpp"

namespace {

using namespace std::chrono_literals;

// One whole line at a time, flushed: the tests read this output while the peer runs.
void say(const std::string& line) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  std::cout << line << std::endl;
}

bool connect(sagebus::Client& client, const std::string& endpoint) {
  if (client.wait_connected(10s)) return true;
  std::cerr << "not connected to " << endpoint << "\n";
  return false;
}

// Gets one item from `queue` and says so; false (said on stderr) if none came in 10 s.
bool take_one(sagebus::LegacyQueue& queue, const std::string& queue_name) {
  const auto item = queue.get(10s);
  if (!item) {
    std::cerr << "no item in queue " << queue_name << " within 10 s\n";
    return false;
  }
  say("got " + *item);
  return true;
}

// Starts `service`, says "ready" once it is registered (1 if not within 10 s), then waits
// to be killed. Its handlers are still holding their calls: the exit does not wait for
// them.
int serve_until_killed(sagebus::Service& service) {
  service.start();
  if (!service.wait_registered(10s)) {
    std::cerr << "not registered within 10 s\n";
    return 1;
  }
  say("ready");
  std::this_thread::sleep_for(60s);
  std::_Exit(0);
}

int queue_get(const std::string& endpoint, const std::string& queue_name) {
  sagebus::Client client({.endpoint = endpoint, .name = "test-peer"});
  if (!connect(client, endpoint)) return 1;
  sagebus::LegacyQueue queue(client, queue_name);
  if (!take_one(queue, queue_name)) return 1;
  std::this_thread::sleep_for(60s);  // the scenario: die holding the item
  return 0;
}

int hold_all(const std::string& endpoint, const std::string& name, const std::string& service_name,
             const std::string& topic, const std::string& queue_name) {
  sagebus::Client client({.endpoint = endpoint, .name = name});
  if (!connect(client, endpoint)) return 1;

  sagebus::Service service(client, service_name, {.max_inflight = 16});
  service.handle("hold", [](const sagebus::Request& r) -> std::string {
    say("holding " + std::string(r.payload));
    std::this_thread::sleep_for(60s);  // never answers while the test runs
    return "held";
  });
  service.start();
  auto subscription =
      client.subscribe(topic, [](const sagebus::Message& m) { say("event " + m.payload); });
  if (!service.wait_registered(10s) || !subscription.wait_subscribed(10s)) {
    std::cerr << "not registered or not subscribed within 10 s\n";
    return 1;
  }
  sagebus::LegacyQueue queue(client, queue_name);
  if (!take_one(queue, queue_name)) return 1;

  std::atomic<bool> done{false};
  std::thread inbox([&] {
    while (!done)
      if (auto m = client.receive(100ms)) say("mail " + m->payload);
  });
  say("ready");
  std::this_thread::sleep_for(60s);
  done = true;
  inbox.join();
  // The Service's destructor would wait for the "hold" handlers; the test is over anyway.
  std::_Exit(0);
}

int call(const std::string& endpoint, const std::string& name, const std::string& service,
         const std::string& method, int count, std::chrono::milliseconds timeout) {
  sagebus::Client client({.endpoint = endpoint, .name = name});
  if (!connect(client, endpoint)) return 1;
  for (int i = 0; i < count; ++i)
    client.call_async(
        service, method, "call-" + std::to_string(i), {.timeout = timeout},
        [](sagebus::Reply r) { say("outcome " + std::string(sagebus::status_name(r.status))); });
  say("called " + std::to_string(count));
  std::this_thread::sleep_for(60s);
  return 0;
}

int hang(const std::string& endpoint, const std::string& name, const std::string& service_name,
         const std::string& method) {
  sagebus::Client client({.endpoint = endpoint, .name = name});
  if (!connect(client, endpoint)) return 1;
  sagebus::Service service(client, service_name, {.max_inflight = 4});
  service.handle(method, [](const sagebus::Request& r) -> std::string {
    say("holding " + std::string(r.payload));
    std::this_thread::sleep_for(60s);  // the scenario: die holding the call
    return "held";
  });
  return serve_until_killed(service);
}

int stream_then_hang(const std::string& endpoint, const std::string& name,
                     const std::string& service_name, int count) {
  sagebus::Client client({.endpoint = endpoint, .name = name});
  if (!connect(client, endpoint)) return 1;
  sagebus::Service service(client, service_name, {.max_inflight = 4});
  service.handle_stream("stream", [count](const sagebus::Request&, sagebus::StreamWriter& out) {
    for (int i = 0; i < count; ++i)
      out.write("chunk-" + std::to_string(i));
    say("wrote " + std::to_string(count));
    std::this_thread::sleep_for(60s);  // the scenario: die mid-stream
  });
  return serve_until_killed(service);
}

int usage() {
  std::cerr << "usage: sagebus-test-peer ENDPOINT queue-get QUEUE\n"
               "       sagebus-test-peer ENDPOINT hold-all NAME SERVICE TOPIC QUEUE\n"
               "       sagebus-test-peer ENDPOINT call NAME SERVICE METHOD COUNT TIMEOUT_MS\n"
               "       sagebus-test-peer ENDPOINT hang NAME SERVICE METHOD\n"
               "       sagebus-test-peer ENDPOINT stream-then-hang NAME SERVICE COUNT\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv, argv + argc);
  if (args.size() < 3) return usage();
  const std::string& endpoint = args[1];
  const std::string& mode = args[2];
  try {
    if (mode == "queue-get" && args.size() == 4) return queue_get(endpoint, args[3]);
    if (mode == "hold-all" && args.size() == 7)
      return hold_all(endpoint, args[3], args[4], args[5], args[6]);
    if (mode == "call" && args.size() == 8)
      return call(endpoint, args[3], args[4], args[5], std::stoi(args[6]),
                  std::chrono::milliseconds(std::stoi(args[7])));
    if (mode == "hang" && args.size() == 6) return hang(endpoint, args[3], args[4], args[5]);
    if (mode == "stream-then-hang" && args.size() == 6)
      return stream_then_hang(endpoint, args[3], args[4], std::stoi(args[5]));
    return usage();
  } catch (const std::exception& e) {  // sagebus::Error, or a COUNT that is not a number
    std::cerr << e.what() << "\n";
    return 1;
  }
}
