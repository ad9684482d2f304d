#include "loop/monitor.hpp"

#include <atomic>
#include <cstring>

#include "sagebus/wire/socket.hpp"

namespace sagebus::broker {

namespace {
std::string unique_address() {
  // Unique per monitor, so that several brokers (in tests) can share a process.
  static std::atomic<unsigned> counter{0};
  return "inproc://sagebusd-monitor-" + std::to_string(counter.fetch_add(1));
}
}  // namespace

ConnectionMonitor::ConnectionMonitor(zmq::context_t& context, zmq::socket_t& router)
    : router_(router), pair_(context, zmq::socket_type::pair) {
  const std::string address = unique_address();
  if (zmq_socket_monitor(router_.handle(), address.c_str(),
                         ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
    throw zmq::error_t();
  pair_.set(zmq::sockopt::linger, 0);
  pair_.connect(address);
}

ConnectionMonitor::~ConnectionMonitor() {
  // Stopping the monitor first keeps libzmq from writing to a PAIR that is closing.
  zmq_socket_monitor(router_.handle(), nullptr, 0);
}

std::vector<ConnectionEvent> ConnectionMonitor::drain() {
  std::vector<ConnectionEvent> events;
  for (;;) {
    // Each event is two frames: [uint16 event, uint32 value (the fd)] [endpoint].
    // (Should a later libzmq add frames, they are read and ignored.)
    std::vector<zmq::message_t> frames;
    if (!wire::receive_message(pair_, frames)) break;
    const zmq::message_t& head = frames[0];
    if (head.size() < 6) continue;
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    std::memcpy(&event, head.data(), sizeof event);
    std::memcpy(&value, static_cast<const char*>(head.data()) + 2, sizeof value);
    ConnectionEvent e{ConnectionEvent::Kind::accepted, static_cast<int>(value),
                      frames.size() > 1 ? frames[1].to_string() : std::string()};
    if (event == ZMQ_EVENT_DISCONNECTED)
      e.kind = ConnectionEvent::Kind::disconnected;
    else if (event != ZMQ_EVENT_ACCEPTED)
      continue;
    events.push_back(std::move(e));
  }
  return events;
}

}  // namespace sagebus::broker
