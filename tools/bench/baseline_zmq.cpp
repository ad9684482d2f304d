// The raw ZeroMQ baseline: the floor of any ZeroMQ broker.
//
// The forwarder is this executable started again as a child (--zmq-forwarder), so that it
// is a process of its own like sage-busd and nats-server, with its own CPU and RSS.
// - Request-reply: one ROUTER that parses nothing. Clients and workers are DEALERs with
//   explicit routing ids; a message is [target id][payload...]; the ROUTER receives
//   [sender id][target id][payload...], swaps the first two frames and sends it on, so the
//   target gets [sender id][payload...] and answers the same way. No balancing in the
//   middle: for lb_w4_c8 each caller picks its worker round robin itself.
// - Streams (stream_*): the same ROUTER; a stream worker answers each request with its
//   chunks, each a message [caller][chunk], then an empty one, the end. No flow control
//   but the high-water marks and TCP's.
// - Pub-sub: an XSUB/XPUB zmq_proxy; the publisher is a PUB, each subscriber a SUB,
//   messages are [topic][payload]. High-water marks are 0 (unbounded) on every hop, so
//   the floor neither drops nor pushes back: it shows the cost of moving frames alone.
// Secured ("zmq+curve"): the ROUTER, XSUB and XPUB are CURVE servers (no ZAP handler: any
// client key gets in) and every client socket a CURVE client, with the keys of curve.hpp.
#include <csignal>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "child.hpp"
#include "curve.hpp"
#include "idle_dealers.hpp"
#include "system.hpp"

namespace sagebus::bench {

using namespace std::chrono_literals;

namespace {

constexpr std::string_view kTopic = "bench.pubsub";
constexpr int kPeerQueue = 10000;  // as sage-busd's default --peer-queue

std::string tcp(int port) {
  return "tcp://127.0.0.1:" + std::to_string(port);
}

zmq::message_t frame(std::string_view bytes) {
  return zmq::message_t(bytes.data(), bytes.size());
}

}  // namespace

void run_zmq_forwarder(int router_port, int xsub_port, int xpub_port,
                       const std::string& curve_dir) {
  std::optional<CurveSet> curve;
  if (!curve_dir.empty()) curve = read_curve_set(curve_dir);
  zmq::context_t context(1);
  std::thread proxy([&] {
    zmq::socket_t xsub(context, zmq::socket_type::xsub);
    zmq::socket_t xpub(context, zmq::socket_type::xpub);
    for (auto* s : {&xsub, &xpub}) {
      s->set(zmq::sockopt::sndhwm, 0);
      s->set(zmq::sockopt::rcvhwm, 0);
      if (curve) curve_server(*s, *curve);
    }
    xsub.bind(tcp(xsub_port));
    xpub.bind(tcp(xpub_port));
    zmq::proxy(xsub, xpub);
  });
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::router_mandatory, 1);
  router.set(zmq::sockopt::sndhwm, kPeerQueue);
  router.set(zmq::sockopt::rcvhwm, kPeerQueue);
  if (curve) curve_server(router, *curve);
  router.bind(tcp(router_port));
  std::fprintf(stderr, "zmq forwarder ready\n");
  std::vector<zmq::message_t> frames;
  for (;;) {
    frames.clear();
    if (!zmq::recv_multipart(router, std::back_inserter(frames)) || frames.size() < 2) continue;
    std::swap(frames[0], frames[1]);
    try {
      zmq::send_multipart(router, frames);
    } catch (const zmq::error_t& e) {
      if (e.num() != EHOSTUNREACH) throw;  // an unknown target: drop, as a forwarder may
    }
  }
}

namespace {

// [target][payload] out, [from][payload] in.
bool exchange(zmq::socket_t& s, const std::string& target, std::string_view request,
              std::string& reply) {
  s.send(frame(target), zmq::send_flags::sndmore);
  s.send(frame(request), zmq::send_flags::none);
  zmq::message_t from, body;
  if (!s.recv(from)) return false;
  if (!from.more() || !s.recv(body)) return false;
  reply.assign(static_cast<const char*>(body.data()), body.size());
  return true;
}

zmq::socket_t dealer(zmq::context_t& context, const std::string& id, const std::string& endpoint,
                     const std::optional<CurveSet>& curve) {
  zmq::socket_t s(context, zmq::socket_type::dealer);
  if (curve) curve_client(s, *curve);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::routing_id, id);
  s.set(zmq::sockopt::rcvtimeo, 10000);
  s.set(zmq::sockopt::sndhwm, kPeerQueue);
  s.set(zmq::sockopt::rcvhwm, kPeerQueue);
  s.connect(endpoint);
  return s;
}

struct Workers : Handle {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  ~Workers() override {
    stop = true;
    for (auto& t : threads)
      t.join();
  }
};

// One stream: [target][request] out, then [from][chunk] in until an empty chunk (the end),
// counted into `run`. False when a message did not come within the receive timeout.
bool read_stream(zmq::socket_t& s, const std::string& target, StreamRun& run) {
  run = {};
  s.send(frame(target), zmq::send_flags::sndmore);
  s.send(frame("stream"), zmq::send_flags::none);
  for (;;) {
    zmq::message_t from, body;
    if (!s.recv(from) || !from.more() || !s.recv(body)) return false;
    if (body.size() == 0) return true;
    ++run.chunks;
    run.bytes += body.size();
  }
}

constexpr const char* kStreamWorker = "s0";

class ZmqStreamCaller : public StreamCaller {
 public:
  explicit ZmqStreamCaller(zmq::socket_t socket) : socket_(std::move(socket)) {}
  bool stream(StreamRun& run, std::string& error) override {
    if (read_stream(socket_, kStreamWorker, run)) return true;
    error = "the stream stopped for 10 s after " + std::to_string(run.chunks) + " chunks";
    return false;
  }

 private:
  zmq::socket_t socket_;
};

class ZmqCaller : public Caller {
 public:
  ZmqCaller(zmq::socket_t socket, std::size_t workers)
      : socket_(std::move(socket)), workers_(workers) {}
  bool call(std::string_view request, std::string& reply, std::string& error) override {
    const std::string target = "w" + std::to_string(next_++ % workers_);
    if (exchange(socket_, target, request, reply)) return true;
    error = "no echo within 10 s";
    return false;
  }

 private:
  zmq::socket_t socket_;
  std::size_t workers_;
  std::size_t next_ = 0;
};

struct ZmqSubscription : Handle {
  std::atomic<bool> stop{false};
  std::thread thread;
  ~ZmqSubscription() override {
    stop = true;
    thread.join();
  }
};

class ZmqPublisher : public Publisher {
 public:
  ZmqPublisher(zmq::context_t& context, const std::string& endpoint,
               const std::optional<CurveSet>& curve)
      : socket_(context, zmq::socket_type::pub) {
    if (curve) curve_client(socket_, *curve);
    socket_.set(zmq::sockopt::sndhwm, 0);
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  void publish(std::string_view payload) override {
    socket_.send(frame(kTopic), zmq::send_flags::sndmore);
    socket_.send(frame(payload), zmq::send_flags::none);
  }
  void flush() override {}

 private:
  zmq::socket_t socket_;
};

class ZmqSystem : public System {
 public:
  ZmqSystem(const Paths& paths, bool secure)
      : self_(paths.self),
        router_port_(free_port()),
        xsub_port_(free_port()),
        xpub_port_(free_port()) {
    std::vector<std::string> argv{paths.forwarder, "--zmq-forwarder",
                                  std::to_string(router_port_) + "," + std::to_string(xsub_port_) +
                                      "," + std::to_string(xpub_port_)};
    if (secure) {
      curve_ = make_curve_set(dir_.path());
      argv.push_back("--curve");
      argv.push_back(dir_.path());
    }
    forwarder_ = std::make_unique<Child>(std::move(argv), dir_.path() + "/forwarder.log");
    if (!forwarder_->wait_for_log("zmq forwarder ready", 30s))
      throw std::runtime_error("the ZeroMQ forwarder did not start; its log:\n" +
                               forwarder_->log());
  }
  ~ZmqSystem() override {
    forwarder_.reset();  // before the context: nothing here may still wait on it
  }

  std::string_view name() const override { return curve_ ? "zmq+curve" : "zmq"; }
  pid_t server_pid() const override { return forwarder_->pid(); }

  std::unique_ptr<Handle> echo(std::size_t instances) override {
    auto workers = std::make_unique<Workers>();
    auto* stop = &workers->stop;
    for (std::size_t i = 0; i < instances; ++i) {
      workers->threads.emplace_back([this, stop, i] {
        zmq::socket_t s = dealer(context_, "w" + std::to_string(i), tcp(router_port_), curve_);
        s.set(zmq::sockopt::rcvtimeo, 100);
        std::vector<zmq::message_t> frames;
        while (!stop->load()) {
          frames.clear();
          if (!zmq::recv_multipart(s, std::back_inserter(frames))) continue;
          zmq::send_multipart(s, frames);  // [caller][payload] back to the caller
        }
      });
    }
    // The ROUTER knows a worker only once its connection is up: probe each until it answers.
    zmq::socket_t probe =
        dealer(context_, "probe-" + std::to_string(++names_), tcp(router_port_), curve_);
    probe.set(zmq::sockopt::rcvtimeo, 100);
    const auto until = Clock::now() + 10s;
    for (std::size_t i = 0; i < instances; ++i) {
      std::string reply;
      while (!exchange(probe, "w" + std::to_string(i), "probe", reply)) {
        if (Clock::now() >= until)
          throw std::runtime_error("the ZeroMQ echo workers did not answer within 10 s");
      }
    }
    workers_ = instances;
    return workers;
  }

  std::unique_ptr<Handle> streamer(std::size_t chunks, std::size_t bytes) override {
    auto workers = std::make_unique<Workers>();
    std::string chunk(bytes, 'x');
    if (!chunk.empty()) chunk.front() = kDataMark;
    workers->threads.emplace_back([this, stop = &workers->stop, chunks, chunk] {
      zmq::socket_t s = dealer(context_, kStreamWorker, tcp(router_port_), curve_);
      s.set(zmq::sockopt::rcvtimeo, 100);
      while (!stop->load()) {
        zmq::message_t from, request;
        if (!s.recv(from)) continue;
        if (from.more()) (void)s.recv(request);
        for (std::size_t i = 0; i < chunks; ++i) {
          s.send(zmq::message_t(from.data(), from.size()), zmq::send_flags::sndmore);
          s.send(frame(chunk), zmq::send_flags::none);
        }
        s.send(zmq::message_t(from.data(), from.size()), zmq::send_flags::sndmore);
        s.send(zmq::message_t(), zmq::send_flags::none);
      }
    });
    // The ROUTER knows the worker only once its connection is up: probe until a stream
    // comes back.
    zmq::socket_t probe =
        dealer(context_, "probe-" + std::to_string(++names_), tcp(router_port_), curve_);
    probe.set(zmq::sockopt::rcvtimeo, 100);
    const auto until = Clock::now() + 10s;
    StreamRun run;
    while (!read_stream(probe, kStreamWorker, run)) {
      if (Clock::now() >= until)
        throw std::runtime_error("the ZeroMQ stream worker did not answer within 10 s");
    }
    return workers;
  }

  std::unique_ptr<StreamCaller> stream_caller(std::uint32_t /*window*/) override {
    return std::make_unique<ZmqStreamCaller>(
        dealer(context_, "sc" + std::to_string(++names_), tcp(router_port_), curve_));
  }

  std::unique_ptr<Caller> caller() override {
    return std::make_unique<ZmqCaller>(
        dealer(context_, "c" + std::to_string(++names_), tcp(router_port_), curve_), workers_);
  }

  PipelineRun pipelined(std::size_t calls, std::size_t depth, std::string_view payload) override {
    zmq::socket_t s = dealer(context_, "p" + std::to_string(++names_), tcp(router_port_), curve_);
    PipelineRun run;
    run.latencies_ns.reserve(calls);
    // The request carries its send time; the echo brings it back.
    std::string request(payload);
    request.resize(std::max<std::size_t>(request.size(), 1 + sizeof(std::int64_t)));
    auto send_one = [&] {
      const std::int64_t t0 = now_ns();
      std::memcpy(request.data() + 1, &t0, sizeof t0);
      s.send(frame("w0"), zmq::send_flags::sndmore);
      s.send(frame(request), zmq::send_flags::none);
    };
    std::size_t issued = 0;
    for (; issued < std::min(depth, calls); ++issued)
      send_one();
    for (std::size_t done = 0; done < calls; ++done) {
      zmq::message_t from, body;
      if (!s.recv(from) || !s.recv(body)) {
        run.errors += calls - done;
        run.first_error = "no echo within 10 s";
        break;
      }
      std::int64_t t0 = 0;
      if (body.size() == request.size()) {
        std::memcpy(&t0, static_cast<const char*>(body.data()) + 1, sizeof t0);
        run.latencies_ns.push_back(now_ns() - t0);
      } else if (!run.errors++) {
        run.first_error = "an echo came back different";
      }
      if (issued < calls) {
        send_one();
        ++issued;
      }
    }
    return run;
  }

  std::unique_ptr<Handle> subscribe(Tally& tally, std::uint64_t /*expected*/) override {
    auto subscription = std::make_unique<ZmqSubscription>();
    std::atomic<bool> ready{false};
    subscription->thread = std::thread([this, &tally, &ready, stop = &subscription->stop] {
      zmq::socket_t s(context_, zmq::socket_type::sub);
      if (curve_) curve_client(s, *curve_);
      s.set(zmq::sockopt::rcvhwm, 0);
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::rcvtimeo, 100);
      s.set(zmq::sockopt::subscribe, kTopic);
      s.connect(tcp(xpub_port_));
      ready = true;
      zmq::message_t topic, body;
      while (!stop->load()) {
        if (!s.recv(topic)) continue;
        if (topic.more() && s.recv(body))
          tally.count({static_cast<const char*>(body.data()), body.size()});
      }
    });
    while (!ready)
      std::this_thread::sleep_for(1ms);
    return subscription;
  }

  std::unique_ptr<Publisher> publisher() override {
    return std::make_unique<ZmqPublisher>(context_, tcp(xsub_port_), curve_);
  }

  std::unique_ptr<Handle> idle_clients(std::size_t count) override {
    return spawn_idle_dealers(self_, "zmq", tcp(router_port_), count,
                              curve_ ? dir_.path() : std::string());
  }

 private:
  TempDir dir_;
  std::string self_;
  int router_port_, xsub_port_, xpub_port_;
  std::optional<CurveSet> curve_;
  zmq::context_t context_{1};
  std::unique_ptr<Child> forwarder_;
  std::size_t workers_ = 1;
  std::size_t names_ = 0;
};

}  // namespace

// Each connection sends a message to itself through the forwarder; no keep-alive.
IdleDealerProtocol zmq_idle_protocol() {
  IdleDealerProtocol protocol;
  protocol.routing_id = [](std::size_t i) { return "i" + std::to_string(i); };
  protocol.hello = [](std::size_t i) {
    std::vector<zmq::message_t> message;
    message.push_back(frame("i" + std::to_string(i)));
    message.push_back(frame("hello"));
    return message;
  };
  return protocol;
}

std::unique_ptr<System> start_zmq(const Paths& paths, bool secure) {
  return std::make_unique<ZmqSystem>(paths, secure);
}

}  // namespace sagebus::bench
