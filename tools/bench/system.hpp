// The interface every measured system implements — sage-bus, the raw ZeroMQ forwarder and
// NATS — so that one set of scenario drivers (scenarios.hpp) measures all three alike.
//
// Durable queues (the durable_* scenarios and restart_1m) are sage-bus's legacy queues on
// a broker with a store and NATS JetStream's file streams; a factory asked for them
// (Setup::durable) starts the server with its store. The forwarder keeps nothing: its
// durable methods are System's defaults, which throw.
//
// Streamed replies (stream_64, stream_4k) are sage-bus's streams (Service::handle_stream,
// Client::stream, with end-to-end credit), a NATS request answered by many messages on
// the requester's inbox and then an empty one, and on the forwarder a worker sending
// many frames back to the caller and then an empty one. Cancellation (cancel_latency) is
// sage-bus's alone: the others' canceller() is System's default, which throws.
//
// Each runs plain or secured (--auth): sage-bus with CURVE and an auth rules file
// ("sagebus+curve"), the forwarder with CURVE ("zmq+curve"), NATS with TLS ("nats+tls").
//
// A System owns its server (a child process on free 127.0.0.1 ports), started by its
// factory and stopped by its destructor. Everything it hands out (echo instances, callers,
// subscriptions, idle connections) is a separate connection of its own and must be
// destroyed before the System. A Caller or Publisher is used by one thread at a time;
// a Tally is updated from the system's delivery threads and read from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sagebus::bench {

using Clock = std::chrono::steady_clock;

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Payloads starting with this byte are measured data; any other first byte is a probe
// (pub-sub: the "are you subscribed yet" messages sent before measuring).
inline constexpr char kDataMark = 'D';

// Whatever a system keeps alive for a scenario; released by destruction.
class Handle {
 public:
  virtual ~Handle() = default;
};

// One connection making synchronous echo calls.
class Caller {
 public:
  virtual ~Caller() = default;
  // Sends `request` to the echo service and waits (5 s at most) for its answer.
  // Returns false, with the reason in `error`, when the call failed.
  virtual bool call(std::string_view request, std::string& reply, std::string& error) = 0;
};

// What one subscriber received.
struct Tally {
  std::atomic<std::uint64_t> data{0};
  std::atomic<std::uint64_t> probes{0};
  std::atomic<std::int64_t> last_data_ns{0};
  void count(std::string_view payload) {
    if (!payload.empty() && payload.front() == kDataMark) {
      data.fetch_add(1, std::memory_order_relaxed);
      last_data_ns.store(now_ns(), std::memory_order_relaxed);
    } else {
      probes.fetch_add(1, std::memory_order_relaxed);
    }
  }
};

class Publisher {
 public:
  virtual ~Publisher() = default;
  virtual void publish(std::string_view payload) = 0;
  // Pushes out what the client library buffered (no-op where it buffers nothing).
  virtual void flush() = 0;
};

// Outcome of a pipelined run: one latency per answered call, and the failures.
struct PipelineRun {
  std::vector<std::int64_t> latencies_ns;
  std::uint64_t errors = 0;
  std::string first_error;
};

// One connection putting items on the benchmark's durable queue.
class DurableProducer {
 public:
  virtual ~DurableProducer() = default;
  // Appends `item` and returns once the server confirmed it (stored, as far as the
  // server's store promises). Returns false, with the reason in `error`, when it failed.
  virtual bool put(std::string_view item, std::string& error) = 0;
};

// One connection taking items from the benchmark's durable queue, one at a time.
class DurableConsumer {
 public:
  virtual ~DurableConsumer() = default;
  // Takes the head of the queue, waiting up to `timeout` for one (and for the server to
  // be reachable); nothing when none came in time. Throws std::runtime_error on other
  // failures.
  virtual std::optional<std::string> get(std::chrono::milliseconds timeout) = 0;
  // Acknowledges the item the last get() returned and waits for the server to confirm
  // it. Throws std::runtime_error when it failed.
  virtual void ack() = 0;
  // Items in the queue now, not counting the one taken and not acknowledged, where the
  // system says (sage-bus: LegacyQueue::size()); throws std::runtime_error where not.
  virtual std::uint64_t queued() { throw std::runtime_error("the queue's size is not known"); }
};

// One connection asking for streamed replies (stream_64, stream_4k).
struct StreamRun {
  std::uint64_t chunks = 0;  // chunks received
  std::uint64_t bytes = 0;   // their bytes
};
class StreamCaller {
 public:
  virtual ~StreamCaller() = default;
  // Asks the stream service for one stream (30 s at most) and reads it to its end,
  // counting its chunks and bytes into `run` (zeroed first). Returns false, with the
  // reason in `error`, when it did not end as a complete stream.
  virtual bool stream(StreamRun& run, std::string& error) = 0;
};

// cancel_latency: a service of one instance (max_inflight 1) whose handler waits for its
// call's cancellation, and a connection calling it, kept together.
class Canceller {
 public:
  virtual ~Canceller() = default;
  // Makes one call, waits until its handler runs, then cancels it; returns the time from
  // just before the cancel to the handler's cancellation callback (nanoseconds), once
  // the call has ended CANCELLED at the caller. Returns false, with the reason in
  // `error`, when any step failed or took over 10 s.
  virtual bool cancel_one(std::int64_t& latency_ns, std::string& error) = 0;
};

// A store's own counters (sage-busd's sagebus_store_commits_total and
// sagebus_store_writes_total). exported false: the server does not export them.
struct StoreCounters {
  bool exported = false;
  std::uint64_t commits = 0;
  std::uint64_t writes = 0;
};

// What a scenario needs of the server its factory starts.
struct Setup {
  // Durable queues: sage-busd --store in the run's directory, nats-server with JetStream.
  bool durable = false;
};

class System {
 public:
  virtual ~System() = default;
  virtual std::string_view name() const = 0;
  // The server process (for its RSS).
  virtual pid_t server_pid() const = 0;
  // `instances` echo service instances, each on its own connection; returns once the
  // server routes calls to every one of them.
  virtual std::unique_ptr<Handle> echo(std::size_t instances) = 0;
  // A new connection for synchronous calls to the echo service.
  virtual std::unique_ptr<Caller> caller() = 0;
  // On one new connection, keeps `depth` echo calls of `payload` in flight until `calls`
  // have completed.
  virtual PipelineRun pipelined(std::size_t calls, std::size_t depth, std::string_view payload) = 0;
  // A new connection subscribed to the benchmark topic, counting into `tally`.
  virtual std::unique_ptr<Handle> subscribe(Tally& tally, std::uint64_t expected) = 0;
  // A new connection publishing on the benchmark topic.
  virtual std::unique_ptr<Publisher> publisher() = 0;
  // What the server itself counted as dropped pub-sub deliveries, where it says
  // (sage-busd's events_dropped); nothing where it does not.
  virtual std::optional<std::uint64_t> server_dropped() { return std::nullopt; }
  // `count` idle connections, each answered by the server once (so it holds them), kept
  // (with whatever keep-alive the protocol asks) until the handle is destroyed.
  virtual std::unique_ptr<Handle> idle_clients(std::size_t count) = 0;

  // Durable queues, on a server started with Setup::durable: a new connection putting on
  // the benchmark's queue, or taking from it. Throw std::runtime_error where the system
  // has none.
  virtual std::unique_ptr<DurableProducer> durable_producer() {
    throw std::runtime_error(std::string(name()) + " has no durable queue");
  }
  virtual std::unique_ptr<DurableConsumer> durable_consumer() {
    throw std::runtime_error(std::string(name()) + " has no durable queue");
  }
  // Streams: a service on its own connection answering each stream with `chunks`
  // chunks of `bytes` bytes (then the system's end of stream), and new connections
  // asking it, each holding at most `window` bytes unread where the system has flow
  // control (sage-bus; the others ignore it). Throw std::runtime_error where the system
  // has none.
  virtual std::unique_ptr<Handle> streamer(std::size_t /*chunks*/, std::size_t /*bytes*/) {
    throw std::runtime_error(std::string(name()) + " has no streams");
  }
  virtual std::unique_ptr<StreamCaller> stream_caller(std::uint32_t /*window*/) {
    throw std::runtime_error(std::string(name()) + " has no streams");
  }
  // cancel_latency. Throws std::runtime_error where the system has no cancellation.
  virtual std::unique_ptr<Canceller> canceller() {
    throw std::runtime_error(std::string(name()) + " has no cancellation");
  }
  // The store's counters now, where the system has a store of its own to ask.
  virtual std::optional<StoreCounters> store_counters() { return std::nullopt; }
  // restart_1m: stops the server with SIGTERM and waits for it to exit; then starts it
  // again on the same store and port, returning right after the exec (the server may not
  // listen yet). Throw std::runtime_error where the system cannot.
  virtual void stop_server() {
    throw std::runtime_error(std::string(name()) + " cannot be restarted by the benchmark");
  }
  virtual void start_server_again() {
    throw std::runtime_error(std::string(name()) + " cannot be restarted by the benchmark");
  }
};

// Where the servers' executables are.
struct Paths {
  std::string busd;
  // Set: sage-bus is the broker already listening there (nothing is started), and
  // someone else serves bench-echo.echo on it (tools/bench/python_bench.py does).
  std::string endpoint;
  std::string nats_server;
  std::string self;       // this executable, started again for idle connections
  std::string forwarder;  // run with --zmq-forwarder PORTS: this executable by default
};

// `secure`: sage-busd with --auth (a rules file with one principal, allowed everything
// the scenarios do, whose key every client uses); the forwarder a CURVE server; NATS
// with TLS (a self-signed certificate made with the openssl command).
// `setup.durable`: sage-busd with --store (a fresh file in the run's directory) and
// --max-queue-depth at its highest; nats-server with JetStream (-js, its store in the
// run's directory) and one file stream. The forwarder has nothing durable to start.
std::unique_ptr<System> start_sagebus(const Paths& paths, bool secure, const Setup& setup = {});
std::unique_ptr<System> start_zmq(const Paths& paths, bool secure);
// Throws std::runtime_error saying why when NATS cannot be measured here.
std::unique_ptr<System> start_nats(const Paths& paths, bool secure, const Setup& setup = {});
// Empty when start_nats can work; else why not (no libnats at build time, no nats-server;
// secured: no openssl command or no OpenSSL at build time).
std::string nats_unavailable(const Paths& paths, bool secure);

// The forwarder's own main (sage-bus-bench --zmq-forwarder): never returns; ends on SIGTERM.
// `curve_dir` (curve.hpp) not empty: every socket is a CURVE server with its keys.
[[noreturn]] void run_zmq_forwarder(int router_port, int xsub_port, int xpub_port,
                                    const std::string& curve_dir);

}  // namespace sagebus::bench
