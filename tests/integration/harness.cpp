#include "harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace sagebus::test {

std::string busd_path() {
  return SAGEBUS_TEST_BUSD;
}
std::string busctl_path() {
  return SAGEBUS_TEST_BUSCTL;
}
std::string echo_service_path() {
  return SAGEBUS_TEST_ECHO_SERVICE;
}
std::string test_peer_path() {
  return SAGEBUS_TEST_PEER;
}

namespace {
std::vector<char*> c_argv(std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (auto& a : argv)
    out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}
}  // namespace

Broker::Broker(std::vector<std::string> extra_args, bool start_now)
    : extra_args_(std::move(extra_args)),
      port_(free_port()),
      endpoint_("tcp://127.0.0.1:" + std::to_string(port_)) {
  if (start_now) start();
}

void Broker::start() {
  std::vector<std::string> argv{busd_path(), "--endpoint", endpoint_, "--log-level", "debug"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  // A log per start: a restarted broker's "listening" line is its own.
  const std::string log =
      dir_.path() + "/sage-busd" + (starts_ == 0 ? "" : "-" + std::to_string(starts_)) + ".log";
  ++starts_;
  process_.reset();
  process_ = std::make_unique<Process>(argv, log);
  if (!process_->wait_for_log("listening on " + endpoint_, 10s))
    throw std::runtime_error("sage-busd did not start listening on " + endpoint_ +
                             " within 10 s; its log:\n" + process_->log());
}

int Broker::stop() {
  return process_ ? process_->stop() : -1;
}

RunResult run(const std::vector<std::string>& argv_in, std::string_view input,
              std::chrono::milliseconds timeout) {
  TempDir dir;
  const std::string out_path = dir.path() + "/out", err_path = dir.path() + "/err",
                    in_path = dir.path() + "/in";
  std::ofstream(in_path) << input;
  auto argv = argv_in;
  auto args = c_argv(argv);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int in = ::open(in_path.c_str(), O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  RunResult result;
  const auto until = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      throw std::runtime_error(argv_in[0] + " did not finish within the test's timeout");
    }
    std::this_thread::sleep_for(5ms);
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  return result;
}

ClientOptions at(const Broker& broker, std::string name) {
  return at(broker.endpoint(), std::move(name));
}

ClientOptions at(const std::string& endpoint, std::string name) {
  return ClientOptions{.endpoint = endpoint, .name = std::move(name)};
}

Error error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  return Error(Status::ok, "nothing was thrown");
}

Status status_of(const std::function<void()>& fn) {
  return error_of(fn).status();
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(5ms);
  }
}

EchoInstance::EchoInstance(const std::string& endpoint, const std::string& name)
    : EchoInstance(at(endpoint, name + "-echo-instance"), name) {}

EchoInstance::EchoInstance(const ClientOptions& options, const std::string& name)
    : client_(options), service_(client_, name) {
  service_.handle("echo", [](const Request& r) { return std::string(r.payload); });
  service_.start();
  if (!service_.wait_registered(5s))
    throw std::runtime_error("echo service " + name + " was not registered within 5 s");
}

EchoInstance::~EchoInstance() {
  service_.stop();
}

GatedService::GatedService(const std::string& endpoint, const std::string& name,
                           std::size_t max_inflight)
    : GatedService(at(endpoint, name + "-instance"), name, max_inflight) {}

GatedService::GatedService(const ClientOptions& options, const std::string& name,
                           std::size_t max_inflight)
    : client_(options),
      service_(client_, name, {.max_inflight = max_inflight, .workers = max_inflight}) {
  service_.handle("wait", [opened = opened_](const Request& r) {
    opened.wait();
    return std::string(r.payload);
  });
  service_.start();
  if (!service_.wait_registered(5s))
    throw std::runtime_error("gated service " + name + " was not registered within 5 s");
}

GatedService::~GatedService() {
  open();
  service_.stop();
}

void GatedService::open() {
  std::call_once(once_, [this] { gate_.set_value(); });
}

admin::BrokerStatus broker_status(Client& client) {
  admin::BrokerStatus status;
  const auto reply = client.call("$broker", "status", "", {.timeout = 5s});
  if (!status.ParseFromString(reply.payload)) throw std::runtime_error("bad BrokerStatus");
  return status;
}

admin::ServiceList broker_services(Client& client) {
  admin::ServiceList list;
  const auto reply = client.call("$broker", "services", "", {.timeout = 5s});
  if (!list.ParseFromString(reply.payload)) throw std::runtime_error("bad ServiceList");
  return list;
}

namespace {
template <typename Report>
Report ask_broker(Client& client, const std::string& method) {
  Report report;
  const auto reply = client.call("$broker", method, "", {.timeout = 5s});
  if (!report.ParseFromString(reply.payload))
    throw std::runtime_error("the broker's answer to " + method + " does not parse");
  return report;
}
}  // namespace

admin::ClientList broker_clients(Client& client) {
  return ask_broker<admin::ClientList>(client, "clients");
}

admin::TopicList broker_topics(Client& client) {
  return ask_broker<admin::TopicList>(client, "topics");
}

admin::QueueList broker_queues(Client& client) {
  return ask_broker<admin::QueueList>(client, "queues");
}

unsigned subscriptions_on(Client& client, const std::string& pattern) {
  unsigned n = 0;
  const auto topics = broker_topics(client);
  for (const auto& s : topics.subscriptions())
    if (s.pattern() == pattern) ++n;
  return n;
}

long rss_kib(pid_t pid) {
  const auto kib = child::rss_kib(pid);
  if (kib == 0) throw std::runtime_error("no VmRSS for process " + std::to_string(pid));
  return static_cast<long>(kib);
}

unsigned in_flight(Client& client, const std::string& service) {
  unsigned total = 0;
  const auto list = broker_services(client);
  for (const auto& s : list.services())
    if (s.name() == service)
      for (const auto& i : s.instances())
        total += i.in_flight();
  return total;
}

}  // namespace sagebus::test
