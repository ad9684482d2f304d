#include "idle_dealers.hpp"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "child.hpp"

namespace sagebus::bench {

using namespace std::chrono_literals;

IdleDealers::IdleDealers(std::string endpoint, std::size_t first, std::size_t count,
                         IdleDealerProtocol protocol)
    : endpoint_(std::move(endpoint)), first_(first), count_(count), protocol_(std::move(protocol)) {
  // A socket costs this process two descriptors (TCP and its mailbox).
  const std::uint64_t limit = raise_nofile(2 * count_ + 1024);
  if (limit < 2 * count_ + 256)
    throw std::runtime_error("RLIMIT_NOFILE is " + std::to_string(limit) + ", too low for " +
                             std::to_string(count_) + " idle connections");
  thread_ = std::thread([this] { run_(); });
  while (state_.load() == 0)
    std::this_thread::sleep_for(5ms);
  if (state_.load() == 2) {
    thread_.join();
    throw std::runtime_error(error_);
  }
}

IdleDealers::~IdleDealers() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void IdleDealers::run_() {
  zmq::context_t context(1);
  context.set(zmq::ctxopt::max_sockets, static_cast<int>(count_ + 64));
  std::vector<zmq::socket_t> sockets;
  sockets.reserve(count_);
  try {
    // Connect in batches, so that the server's listen backlog never overflows.
    constexpr std::size_t kBatch = 250;
    for (std::size_t first = 0; first < count_ && !stop_; first += kBatch) {
      const std::size_t last = std::min(count_, first + kBatch);
      for (std::size_t i = first; i < last; ++i) {
        zmq::socket_t& s = sockets.emplace_back(context, zmq::socket_type::dealer);
        s.set(zmq::sockopt::linger, 0);
        if (protocol_.routing_id) s.set(zmq::sockopt::routing_id, protocol_.routing_id(first_ + i));
        s.connect(endpoint_);
        auto hello = protocol_.hello(first_ + i);
        zmq::send_multipart(s, hello);
      }
      const auto until = Clock::now() + 20s;
      for (std::size_t i = first; i < last; ++i) {
        std::vector<zmq::message_t> answer;
        while (!zmq::recv_multipart(sockets[i], std::back_inserter(answer),
                                    zmq::recv_flags::dontwait)) {
          if (Clock::now() >= until || stop_)
            throw std::runtime_error("idle connection " + std::to_string(i) +
                                     " got no answer within 20 s");
          std::this_thread::sleep_for(1ms);
        }
      }
    }
  } catch (const std::exception& e) {
    error_ = std::string("cannot open the idle connections: ") + e.what();
    state_ = 2;
    return;
  }
  state_ = 1;
  // Keep-alive: every connection once per interval, spread over the interval in slices;
  // what the server answers is read and dropped on the next visit.
  constexpr int kSlices = 100;
  std::size_t next = 0;
  while (!stop_) {
    const auto slice_end = Clock::now() + protocol_.keepalive_interval / kSlices;
    const std::size_t per_slice = count_ / kSlices + 1;
    for (std::size_t k = 0; k < per_slice && !sockets.empty(); ++k, ++next) {
      zmq::socket_t& s = sockets[next % sockets.size()];
      zmq::message_t drop;
      while (s.recv(drop, zmq::recv_flags::dontwait)) {
      }
      if (protocol_.keepalive) {
        auto keepalive = protocol_.keepalive();
        zmq::send_multipart(s, keepalive, zmq::send_flags::dontwait);
      }
    }
    std::this_thread::sleep_until(slice_end);
  }
}

IdleDealerProtocol idle_protocol(std::string_view system) {
  if (system == "sagebus") return sagebus_idle_protocol();
  if (system == "zmq") return zmq_idle_protocol();
  throw std::invalid_argument("no idle-client protocol for " + std::string(system));
}

namespace {

// Children holding idle connections; stopped (SIGTERM) by destruction.
struct IdleChildren : Handle {
  TempDir dir;
  std::vector<std::unique_ptr<Child>> children;
};

}  // namespace

std::unique_ptr<Handle> spawn_idle_dealers(const std::string& self, std::string_view system,
                                           const std::string& endpoint, std::size_t count) {
  auto held = std::make_unique<IdleChildren>();
  for (std::size_t first = 0; first < count; first += kPerChild) {
    const std::size_t n = std::min(kPerChild, count - first);
    held->children.push_back(std::make_unique<Child>(
        std::vector<std::string>{self, "--idle-child",
                                 std::string(system) + "," + endpoint + "," +
                                     std::to_string(first) + "," + std::to_string(n)},
        held->dir.path() + "/idle-" + std::to_string(first) + ".log"));
  }
  for (auto& child : held->children) {
    if (!child->wait_for_log("idle clients ready", 120s))
      throw std::runtime_error("a child holding idle connections failed: " + child->log());
  }
  return held;
}

void run_idle_child(std::string_view system, const std::string& endpoint, std::size_t first,
                    std::size_t count) {
  try {
    IdleDealers dealers(endpoint, first, count, idle_protocol(system));
    std::fprintf(stderr, "idle clients ready\n");
    for (;;)
      std::this_thread::sleep_for(1h);  // until SIGTERM
  } catch (const std::exception& e) {
    std::fprintf(stderr, "idle clients failed: %s\n", e.what());
    std::exit(1);
  }
}

}  // namespace sagebus::bench
