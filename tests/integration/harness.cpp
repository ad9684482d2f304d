#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
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

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port: " + std::string(std::strerror(errno)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/sagebus-test-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
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

Process::Process(std::vector<std::string> argv, std::string log_path)
    : log_path_(std::move(log_path)) {
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot open " + log_path_);
  auto args = c_argv(argv);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(null_fd, STDIN_FILENO);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (pid_ < 0) throw std::runtime_error("fork failed");
}

Process::~Process() {
  stop();
}

bool Process::running() {
  return wait_exit(0ms) == -1 && pid_ > 0;
}

void Process::signal(int sig) {
  if (pid_ > 0 && status_ == -1) ::kill(pid_, sig);
}

int Process::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || status_ != -1) return status_;
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) return status_ = status;
    if (r < 0) return status_ = 0;
    if (std::chrono::steady_clock::now() >= until) return -1;
    std::this_thread::sleep_for(5ms);
  }
}

int Process::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || status_ != -1) return status_;
  signal(SIGCONT);  // a stopped process cannot act on SIGTERM
  signal(SIGTERM);
  if (wait_exit(grace) != -1) return status_;
  signal(SIGKILL);
  return wait_exit(10s);
}

std::string Process::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Process::wait_for_log(std::string_view needle, std::chrono::milliseconds timeout) const {
  return eventually([&] { return log().find(needle) != std::string::npos; }, timeout);
}

Broker::Broker(std::vector<std::string> extra_args, bool start_now)
    : extra_args_(std::move(extra_args)),
      port_(free_port()),
      endpoint_("tcp://127.0.0.1:" + std::to_string(port_)) {
  if (start_now) start();
}

void Broker::start() {
  std::vector<std::string> argv{busd_path(), "--endpoint", endpoint_, "--log-level", "debug"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  process_ = std::make_unique<Process>(argv, dir_.path() + "/sage-busd.log");
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
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  throw std::runtime_error("no VmRSS for process " + std::to_string(pid));
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
