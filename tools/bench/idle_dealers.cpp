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
  // One loop of slices, from the first HELLO on: the connections answered so far keep
  // alive while the next ones connect. (Connecting 10,000 takes longer than a sage-busd
  // lease, so keep-alives that waited for the last answer came too late for the first.)
  // Connections open in batches of kBatch, each batch answered before the next opens, and
  // each is visited about once per interval, spread over the interval in slices; what the
  // server answered is read and dropped on the next visit.
  constexpr std::size_t kBatch = 250;
  constexpr int kSlices = 100;
  constexpr auto kAnswerWithin = 20s;
  std::size_t answered = 0;  // sockets[0, answered) got their first answer
  std::size_t next = 0;      // the next of them to keep alive
  auto batch_deadline = Clock::now();
  auto next_slice = Clock::now();
  while (!stop_) {
    try {
      while (answered < sockets.size()) {
        std::vector<zmq::message_t> answer;
        if (!zmq::recv_multipart(sockets[answered], std::back_inserter(answer),
                                 zmq::recv_flags::dontwait))
          break;
        ++answered;
      }
      if (answered < sockets.size() && Clock::now() >= batch_deadline)
        throw std::runtime_error("idle connection " + std::to_string(answered) +
                                 " got no answer within 20 s");
      if (answered == sockets.size() && sockets.size() < count_) {
        const std::size_t last = std::min(count_, sockets.size() + kBatch);
        for (std::size_t i = sockets.size(); i < last; ++i) {
          zmq::socket_t& s = sockets.emplace_back(context, zmq::socket_type::dealer);
          s.set(zmq::sockopt::linger, 0);
          if (protocol_.routing_id)
            s.set(zmq::sockopt::routing_id, protocol_.routing_id(first_ + i));
          if (protocol_.curve) curve_client(s, *protocol_.curve);
          s.connect(endpoint_);
          auto hello = protocol_.hello(first_ + i);
          zmq::send_multipart(s, hello);
          // Its next visit may be a whole interval away.
          if (protocol_.keepalive) zmq::send_multipart(s, protocol_.keepalive(true));
        }
        batch_deadline = Clock::now() + kAnswerWithin;
      }
    } catch (const std::exception& e) {
      error_ = std::string("cannot open the idle connections: ") + e.what();
      state_ = 2;
      return;
    }
    if (answered == count_) state_ = 1;
    const auto now = Clock::now();
    if (now < next_slice || answered == 0) {
      std::this_thread::sleep_for(1ms);  // connections are still to be answered
      continue;
    }
    next_slice = now + protocol_.keepalive_interval / kSlices;
    const std::size_t per_slice = answered / kSlices + 1;
    for (std::size_t k = 0; k < per_slice; ++k, ++next) {
      zmq::socket_t& s = sockets[next % answered];
      zmq::message_t drop;
      bool heard = false;
      while (s.recv(drop, zmq::recv_flags::dontwait))
        heard = true;
      if (protocol_.keepalive) {
        auto keepalive = protocol_.keepalive(heard);
        zmq::send_multipart(s, keepalive, zmq::send_flags::dontwait);
      }
    }
    if (answered == count_) std::this_thread::sleep_until(next_slice);
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
                                           const std::string& endpoint, std::size_t count,
                                           const std::string& curve_dir) {
  auto held = std::make_unique<IdleChildren>();
  for (std::size_t first = 0; first < count; first += kPerChild) {
    const std::size_t n = std::min(kPerChild, count - first);
    std::vector<std::string> argv{self, "--idle-child",
                                  std::string(system) + "," + endpoint + "," +
                                      std::to_string(first) + "," + std::to_string(n)};
    if (!curve_dir.empty()) {
      argv.push_back("--curve");
      argv.push_back(curve_dir);
    }
    held->children.push_back(std::make_unique<Child>(
        std::move(argv), held->dir.path() + "/idle-" + std::to_string(first) + ".log"));
  }
  for (auto& child : held->children) {
    if (!child->wait_for_log("idle clients ready", 120s))
      throw std::runtime_error("a child holding idle connections failed: " + child->log());
  }
  return held;
}

void run_idle_child(std::string_view system, const std::string& endpoint, std::size_t first,
                    std::size_t count, const std::string& curve_dir) {
  try {
    IdleDealerProtocol protocol = idle_protocol(system);
    if (!curve_dir.empty()) protocol.curve = read_curve_set(curve_dir);
    IdleDealers dealers(endpoint, first, count, std::move(protocol));
    std::fprintf(stderr, "idle clients ready\n");
    for (;;)
      std::this_thread::sleep_for(1h);  // until SIGTERM
  } catch (const std::exception& e) {
    std::fprintf(stderr, "idle clients failed: %s\n", e.what());
    std::exit(1);
  }
}

}  // namespace sagebus::bench
