// sage-bus as a measured System: sage-busd as a child with its default settings, echo
// instances and callers through the public SDK, idle clients as raw DEALERs speaking the
// wire protocol (HELLO, then an idle HEARTBEAT per idle heartbeat interval, as the SDK does
// with nothing at stake). Secured ("sagebus+curve"): sage-busd --auth with a rules file of
// one principal allowed everything the scenarios do, whose key every client uses.
// Durable (Setup::durable): sage-busd --store with a fresh store.db in the run's directory
// and --max-queue-depth at its highest; producers and consumers are LegacyQueues of one
// queue, each on its own Client; the store's counters come from `$broker metrics`.
// Streams: a Service whose handle_stream writes the chunks, read by Client::stream with
// the window the scenario gives (--stream-window, the SDK's default unless told). cancel_latency: a
// Service of max_inflight 1 whose handler records, in req.context.cancel.on_cancel, when
// its cancellation reached it.
#include <sys/wait.h>

#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <future>
#include <mutex>
#include <stdexcept>

#include "child.hpp"
#include "curve.hpp"
#include "idle_dealers.hpp"
#include "sagebus/admin.pb.h"
#include "sagebus/sagebus.hpp"
#include "sagebus/wire/frame.hpp"
#include "system.hpp"

namespace sagebus::bench {

using namespace std::chrono_literals;

namespace {

constexpr std::string_view kService = "bench-echo";
constexpr std::string_view kMethod = "echo";
constexpr std::string_view kTopic = "bench.pubsub";
constexpr std::string_view kQueue = "bench.durable";
constexpr std::string_view kStreamService = "bench-stream";
constexpr std::string_view kStreamMethod = "chunks";
constexpr std::string_view kHoldService = "bench-hold";
constexpr std::string_view kHoldMethod = "hold";

// The most sage-busd accepts: durable_* and restart_1m fill their queue without reading it.
constexpr std::string_view kMaxQueueDepth = "16777216";
// A put waits for its commit; give a loaded disk time.
constexpr auto kPutTimeout = 30s;

// Enough for a 1 MiB payload's round trip on a loaded machine.
const CallOptions kCall{.timeout = 10s};

// How a client of this run connects: the endpoint and, secured, the keys.
struct Access {
  std::string endpoint;
  std::optional<CurveSet> curve;
  // `quick_reconnect`: retry the connection every 10 ms (restart_1m times the broker's
  // start-up from the first attempt that succeeds), not with the SDK's backoff.
  ClientOptions options(const std::string& name, bool inline_callbacks,
                        bool quick_reconnect = false) const {
    ClientOptions o{.endpoint = endpoint, .name = name, .inline_callbacks = inline_callbacks};
    if (quick_reconnect) o.reconnect_min = o.reconnect_max = 10ms;
    if (curve) {
      o.server_key = curve->server.public_key;
      o.client_key = curve->client.secret_key;
    }
    return o;
  }
};

class Connected {
 public:
  Connected(const Access& access, const std::string& name, bool inline_callbacks = false)
      : client_(access.options(name, inline_callbacks)) {
    if (!client_.wait_connected(10s))
      throw std::runtime_error("the SDK client did not connect to sage-busd within 10 s");
  }
  // A durable queue consumer's client: quick to reconnect, and not waiting for the
  // connection here (its LegacyQueue get() waits for it, within its timeout).
  struct Durable {};
  Connected(const Access& access, const std::string& name, Durable)
      : client_(access.options(name, false, true)) {}
  Client& client() { return client_; }

 private:
  Client client_;
};

struct EchoInstance {
  EchoInstance(const Access& access, const std::string& name)
      // The handler is trivial: it runs on the client's I/O thread, with no hand-off to a
      // worker and back (as NATS's runs on the subscription's delivery thread).
      : connected(access, name),
        service(connected.client(), std::string(kService),
                {.max_inflight = 64, .on_io_thread = true}) {
    service.handle(std::string(kMethod),
                   [](const Request& request) { return std::string(request.payload); });
    service.start();
    if (!service.wait_registered(10s))
      throw std::runtime_error("the echo service was not registered within 10 s");
  }
  ~EchoInstance() { service.stop(1s); }
  Connected connected;
  Service service;
};

struct Echo : Handle {
  std::vector<std::unique_ptr<EchoInstance>> instances;
};

class SagebusCaller : public Caller {
 public:
  SagebusCaller(const Access& access, const std::string& name) : connected_(access, name) {}
  bool call(std::string_view request, std::string& reply, std::string& error) override {
    try {
      reply = connected_.client().call(kService, kMethod, request, kCall).payload;
      return true;
    } catch (const std::exception& e) {
      error = e.what();
      return false;
    }
  }

 private:
  Connected connected_;
};

struct SagebusSubscription : Handle {
  SagebusSubscription(const Access& access, const std::string& name, Tally& tally,
                      std::uint64_t expected)
      : connected(access, name) {
    // A window above what is published: the SDK's credit flow never holds the broker back,
    // so what is lost is lost to the broker's or the socket's own bounds.
    const auto window =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(expected + 1024, 1u << 30));
    subscription = connected.client().subscribe(
        kTopic, [&tally](const Message& m) { tally.count(m.payload); }, {.window = window});
  }
  Connected connected;
  Subscription subscription;
};

class SagebusPublisher : public Publisher {
 public:
  SagebusPublisher(const Access& access, const std::string& name) : connected_(access, name) {}
  void publish(std::string_view payload) override {
    // The benchmark measures throughput: a publisher held back by a full queue waits
    // (the default 5 s would fail it OVERLOADED on a slow, e.g. profiled, broker).
    connected_.client().publish(kTopic, payload, {.timeout = std::chrono::seconds(60)});
  }
  void flush() override {}

 private:
  Connected connected_;
};

// The stream service: each stream of its method is `chunks` chunks of `bytes` bytes.
// Its handlers run on worker threads (a writer waits for the caller's credit, so not on
// the I/O thread).
struct StreamerInstance : Handle {
  StreamerInstance(const Access& access, const std::string& name, std::size_t chunks,
                   std::size_t bytes)
      : connected(access, name),
        service(connected.client(), std::string(kStreamService), {.max_inflight = 4}) {
    std::string chunk(bytes, 'x');
    if (!chunk.empty()) chunk.front() = kDataMark;
    service.handle_stream(std::string(kStreamMethod),
                          [chunks, chunk](const Request&, StreamWriter& out) {
                            for (std::size_t i = 0; i < chunks; ++i)
                              out.write(chunk);
                          });
    service.start();
    if (!service.wait_registered(10s))
      throw std::runtime_error("the stream service was not registered within 10 s");
  }
  ~StreamerInstance() override { service.stop(1s); }
  Connected connected;
  Service service;
};

// Holds at most `window` bytes of chunks unread (CallOptions::window_bytes): it grants half
// of it again at a time as it reads, so the writer goes on while a grant travels back.
class SagebusStreamCaller : public StreamCaller {
 public:
  SagebusStreamCaller(const Access& access, const std::string& name, std::uint32_t window)
      : connected_(access, name), window_(window) {}
  bool stream(StreamRun& run, std::string& error) override {
    run = {};
    try {
      Stream stream = connected_.client().stream(kStreamService, kStreamMethod, "",
                                                 {.timeout = 30s, .window_bytes = window_});
      for (const std::string& chunk : stream) {
        ++run.chunks;
        run.bytes += chunk.size();
      }
      return true;
    } catch (const std::exception& e) {
      error = std::string(e.what()) + " (after " + std::to_string(run.chunks) + " chunks)";
      return false;
    }
  }

 private:
  Connected connected_;
  std::uint32_t window_;
};

// cancel_latency's service (max_inflight 1) on one connection and its caller on another.
// The handler registers a cancellation callback that records the steady clock, says it
// started, and waits until it is cancelled.
class SagebusCanceller : public Canceller {
 public:
  SagebusCanceller(const Access& access, const std::string& instance_name,
                   const std::string& caller_name)
      : instance_(access, instance_name),
        service_(instance_.client(), std::string(kHoldService), {.max_inflight = 1, .workers = 2}),
        caller_(access, caller_name) {
    service_.handle(std::string(kHoldMethod), [this](const Request& request) -> std::string {
      const std::uint64_t registration = request.context.cancel.on_cancel([this] {
        const std::int64_t at = now_ns();
        {
          std::lock_guard lock(mutex_);
          cancelled_at_ = at;
          ++cancelled_;
        }
        changed_.notify_all();
      });
      {
        std::lock_guard lock(mutex_);
        ++started_;
      }
      changed_.notify_all();
      {
        std::unique_lock lock(mutex_);
        changed_.wait_for(lock, 10s, [&] { return stopping_ || request.cancelled(); });
      }
      request.context.cancel.forget(registration);
      return "held";
    });
    service_.start();
    if (!service_.wait_registered(10s))
      throw std::runtime_error("the cancel_latency service was not registered within 10 s");
  }
  ~SagebusCanceller() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    service_.stop(1s);
  }

  bool cancel_one(std::int64_t& latency_ns, std::string& error) override {
    CancelToken token;
    std::unique_lock lock(mutex_);
    const std::uint64_t started = started_, cancelled = cancelled_;
    lock.unlock();
    auto reply = caller_.client().call_async(kHoldService, kHoldMethod, "",
                                             {.timeout = 10s, .cancel = token});
    lock.lock();
    if (!changed_.wait_for(lock, 10s, [&] { return started_ > started; })) {
      lock.unlock();
      token.cancel();
      error = "the handler did not start within 10 s";
      return false;
    }
    lock.unlock();
    const std::int64_t t0 = now_ns();
    token.cancel();
    lock.lock();
    if (!changed_.wait_for(lock, 10s, [&] { return cancelled_ > cancelled; })) {
      error = "the handler did not see its cancellation within 10 s";
      return false;
    }
    latency_ns = cancelled_at_ - t0;
    lock.unlock();
    if (reply.wait_for(10s) != std::future_status::ready) {
      error = "the cancelled call did not end within 10 s";
      return false;
    }
    try {
      reply.get();
      error = "a cancelled call was answered";
      return false;
    } catch (const Error& e) {
      if (e.status() == Status::cancelled) return true;
      error = std::string("a cancelled call ended otherwise: ") + e.what();
      return false;
    }
  }

 private:
  Connected instance_;
  Service service_;
  Connected caller_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t started_ = 0;    // handlers that started
  std::uint64_t cancelled_ = 0;  // cancellations their callbacks saw
  std::int64_t cancelled_at_ = 0;
  bool stopping_ = false;
};

class SagebusProducer : public DurableProducer {
 public:
  SagebusProducer(const Access& access, const std::string& name)
      : connected_(access, name), queue_(connected_.client(), std::string(kQueue)) {}
  bool put(std::string_view item, std::string& error) override {
    try {
      queue_.put(item, kPutTimeout);
      return true;
    } catch (const std::exception& e) {
      error = e.what();
      return false;
    }
  }

 private:
  Connected connected_;
  LegacyQueue queue_;
};

// get() then ack(), each its own round trip, as LegacyQueue offers them (its get() would
// also acknowledge the previous item, which ack() already did).
class SagebusConsumer : public DurableConsumer {
 public:
  SagebusConsumer(const Access& access, const std::string& name)
      : connected_(access, name, Connected::Durable{}),
        queue_(connected_.client(), std::string(kQueue)) {}
  std::optional<std::string> get(std::chrono::milliseconds timeout) override {
    return queue_.get(timeout);
  }
  void ack() override { queue_.ack(); }
  std::uint64_t queued() override { return queue_.size(); }

 private:
  Connected connected_;
  LegacyQueue queue_;
};

// The sum of the samples of `metric` (whatever their labels) in Prometheus text; nothing
// when it has none.
std::optional<double> prometheus_value(std::string_view text, std::string_view metric) {
  std::optional<double> sum;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (!line.starts_with(metric) || line.size() <= metric.size()) continue;
    const char next = line[metric.size()];
    if (next != ' ' && next != '{') continue;
    std::size_t value = metric.size();
    if (next == '{') {
      value = line.find('}', value);
      if (value == std::string_view::npos) continue;
      ++value;
    }
    const std::string number(line.substr(value));
    char* parsed_end = nullptr;
    const double v = std::strtod(number.c_str(), &parsed_end);
    if (parsed_end == number.c_str()) continue;
    sum = sum.value_or(0) + v;
  }
  return sum;
}

class SagebusSystem : public System {
 public:
  SagebusSystem(const Paths& paths, bool secure, const Setup& setup) : self_(paths.self) {
    if (!paths.endpoint.empty()) {  // a broker and an echo service of someone else's
      access_.endpoint = paths.endpoint;
      return;
    }
    access_.endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
    std::vector<std::string> argv{paths.busd, "--endpoint", access_.endpoint};
    if (secure) {
      access_.curve = make_curve_set(dir_.path());
      const std::string rules = dir_.path() + "/auth.toml";
      write_rules_(rules);
      argv.push_back("--auth");
      argv.push_back(rules);
    }
    if (setup.durable) {
      argv.insert(argv.end(), {"--store", dir_.path() + "/store.db", "--max-queue-depth",
                               std::string(kMaxQueueDepth)});
    }
    argv_ = argv;
    busd_ = std::make_unique<Child>(std::move(argv), dir_.path() + "/sage-busd.log");
    if (!busd_->wait_for_log("listening on " + access_.endpoint, 30s))
      throw std::runtime_error(paths.busd + " did not listen on " + access_.endpoint +
                               " within 30 s; its log:\n" + busd_->log());
  }

  std::string_view name() const override { return access_.curve ? "sagebus+curve" : "sagebus"; }
  pid_t server_pid() const override { return busd_ ? busd_->pid() : 0; }

  std::unique_ptr<Handle> echo(std::size_t instances) override {
    auto echo = std::make_unique<Echo>();
    if (!busd_) return echo;  // served by whoever runs the broker
    for (std::size_t i = 0; i < instances; ++i)
      echo->instances.push_back(std::make_unique<EchoInstance>(access_, next_name_("echo")));
    return echo;
  }

  std::unique_ptr<Caller> caller() override {
    return std::make_unique<SagebusCaller>(access_, next_name_("caller"));
  }

  PipelineRun pipelined(std::size_t calls, std::size_t depth, std::string_view payload) override {
    // The callbacks are quick: they run where their replies are read, and the calls they
    // make are sent from there (as the floor's one thread receives and sends).
    Connected connected(access_, next_name_("pipeline"), true);
    Client& client = connected.client();
    PipelineRun run;
    run.latencies_ns.reserve(calls);
    std::mutex mutex;
    std::condition_variable all_done;
    std::size_t issued = 0, done = 0;
    const std::string request(payload);
    // Each completion (on the client's I/O thread) records itself and issues the next.
    std::function<void()> issue = [&] {
      const std::int64_t t0 = now_ns();
      client.call_async(kService, kMethod, request, kCall, [&, t0](Reply reply) {
        const std::int64_t latency = now_ns() - t0;
        bool more = false;
        {
          std::lock_guard lock(mutex);
          if (reply.ok() && reply.payload == request) {
            run.latencies_ns.push_back(latency);
          } else {
            if (!run.errors++)
              run.first_error = reply.ok() ? "an echo came back different" : reply.message;
          }
          ++done;
          more = issued < calls;
          if (more) ++issued;
          if (done == calls) all_done.notify_all();
        }
        if (more) issue();
      });
    };
    const std::size_t first = std::min(depth, calls);
    {
      std::lock_guard lock(mutex);
      issued = first;
    }
    for (std::size_t i = 0; i < first; ++i)
      issue();
    std::unique_lock lock(mutex);
    all_done.wait(lock, [&] { return done == calls; });
    return run;
  }

  std::unique_ptr<Handle> subscribe(Tally& tally, std::uint64_t expected) override {
    return std::make_unique<SagebusSubscription>(access_, next_name_("subscriber"), tally,
                                                 expected);
  }

  std::unique_ptr<Publisher> publisher() override {
    return std::make_unique<SagebusPublisher>(access_, next_name_("publisher"));
  }

  std::optional<std::uint64_t> server_dropped() override {
    Connected connected(access_, next_name_("admin"));
    const Reply reply = connected.client().call(wire::kBrokerService, "status", "", kCall);
    admin::BrokerStatus status;
    if (!status.ParseFromString(reply.payload)) return std::nullopt;
    return status.counters().events_dropped();
  }

  std::unique_ptr<Handle> idle_clients(std::size_t count) override {
    return spawn_idle_dealers(self_, "sagebus", access_.endpoint, count,
                              access_.curve ? dir_.path() : std::string());
  }

  std::unique_ptr<DurableProducer> durable_producer() override {
    return std::make_unique<SagebusProducer>(access_, next_name_("producer"));
  }

  std::unique_ptr<Handle> streamer(std::size_t chunks, std::size_t bytes) override {
    return std::make_unique<StreamerInstance>(access_, next_name_("streamer"), chunks, bytes);
  }

  std::unique_ptr<StreamCaller> stream_caller(std::uint32_t window) override {
    return std::make_unique<SagebusStreamCaller>(access_, next_name_("stream-caller"), window);
  }

  std::unique_ptr<Canceller> canceller() override {
    return std::make_unique<SagebusCanceller>(access_, next_name_("holder"),
                                              next_name_("cancel-caller"));
  }

  std::unique_ptr<DurableConsumer> durable_consumer() override {
    return std::make_unique<SagebusConsumer>(access_, next_name_("consumer"));
  }

  // sagebus_store_commits_total and sagebus_store_writes_total from `$broker metrics`.
  std::optional<StoreCounters> store_counters() override {
    Connected connected(access_, next_name_("admin"));
    const Reply reply = connected.client().call(wire::kBrokerService, "metrics", "", kCall);
    const auto commits = prometheus_value(reply.payload, "sagebus_store_commits_total");
    const auto writes = prometheus_value(reply.payload, "sagebus_store_writes_total");
    StoreCounters counters;
    if (!commits || !writes) return counters;
    counters.exported = true;
    counters.commits = static_cast<std::uint64_t>(*commits);
    counters.writes = static_cast<std::uint64_t>(*writes);
    return counters;
  }

  // SIGTERM, and 10 minutes to exit (a broker holding a million items may take a while);
  // a broker killed then, or exiting with an error, fails the scenario.
  void stop_server() override {
    if (!busd_) throw std::runtime_error("this sage-busd is not the benchmark's to restart");
    const int status = busd_->stop(600s);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error("sage-busd did not exit cleanly on SIGTERM (" +
                               (WIFSIGNALED(status)
                                    ? "killed by signal " + std::to_string(WTERMSIG(status))
                                    : "exit status " + std::to_string(WEXITSTATUS(status))) +
                               "); its log:\n" + busd_->log());
  }

  // The same command line, so the same store and endpoint; its log in a file of its own.
  void start_server_again() override {
    if (!busd_) throw std::runtime_error("this sage-busd is not the benchmark's to restart");
    busd_ = std::make_unique<Child>(argv_, dir_.path() + "/sage-busd-restarted.log");
  }

 private:
  // One principal, "bench", holding the client key: allowed every name, service, call,
  // topic, subscription and legacy queue, and `$broker status` and `metrics` (inspect, for
  // server_dropped() and store_counters()).
  static void write_rules_(const std::string& path) {
    std::ofstream rules(path);
    rules << "[broker]\n"
             "key-file = \"server.key_secret\"\n"
             "\n"
             "[[principal]]\n"
             "name = \"bench\"\n"
             "key-files = [\"client.key\"]\n"
             "allow.name = [\">\"]\n"
             "allow.register = [\">\"]\n"
             "allow.call = [\">\"]\n"
             "allow.publish = [\">\"]\n"
             "allow.subscribe = [\">\"]\n"
             "allow.queue-put = [\">\"]\n"
             "allow.queue-get = [\">\"]\n"
             "allow.inspect = [\"*\"]\n";
    if (!rules.flush()) throw std::runtime_error("cannot write " + path);
  }

  std::string next_name_(std::string_view role) {
    return "bench-" + std::string(role) + "-" + std::to_string(++names_);
  }

  TempDir dir_;
  std::string self_;
  Access access_;
  std::vector<std::string> argv_;  // sage-busd's command line, to start it again
  std::unique_ptr<Child> busd_;
  std::size_t names_ = 0;
};

}  // namespace

// HELLO with a name of its own, then an idle HEARTBEAT per sage-busd's default
// --idle-heartbeat-ms.
IdleDealerProtocol sagebus_idle_protocol() {
  IdleDealerProtocol protocol;
  protocol.hello = [](std::size_t i) {
    wire::Header header;
    header.set_kind(wire::HELLO);
    header.set_id(1);
    header.mutable_hello()->set_name("bench-idle-" + std::to_string(i));
    header.mutable_hello()->set_instance_id(std::to_string(i));
    header.mutable_hello()->set_sdk_version("sage-bus-bench");
    std::vector<zmq::message_t> message;
    message.push_back(wire::encode(header));
    return message;
  };
  // As the SDK does with nothing at stake, at sage-busd's default idle heartbeat and
  // liveness of 3: an idle HEARTBEAT every 10 s, which wants no answer when the broker was
  // heard since the previous one. (The SDK's first one goes a heartbeat after the WELCOME;
  // these go right after the HELLO, and want no answer, like the SDK's.)
  protocol.keepalive = [](bool heard) {
    wire::Header header;
    header.set_kind(wire::HEARTBEAT);
    header.set_no_answer(heard);
    header.set_idle(true);
    std::vector<zmq::message_t> message;
    message.push_back(wire::encode(header));
    return message;
  };
  protocol.keepalive_interval = 10000ms;
  return protocol;
}

std::unique_ptr<System> start_sagebus(const Paths& paths, bool secure, const Setup& setup) {
  return std::make_unique<SagebusSystem>(paths, secure, setup);
}

}  // namespace sagebus::bench
