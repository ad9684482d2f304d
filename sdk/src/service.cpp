#include "sagebus/service.hpp"

#include <algorithm>
#include <exception>

#include "sagebus/wire/frame.hpp"
#include "service_core.hpp"

namespace sagebus {
namespace detail {

ServiceCore::ServiceCore(CoreLink& connection, std::string name, ServiceOptions options,
                         std::map<std::string, Handler> handlers)
    : connection_(connection),
      name_(std::move(name)),
      options_(std::move(options)),
      handlers_(std::move(handlers)) {}

std::vector<std::string> ServiceCore::methods() const {
  std::vector<std::string> out;
  for (const auto& [method, handler] : handlers_)
    out.push_back(method);
  return out;
}

void ServiceCore::submit(Job job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  jobs_cv_.notify_one();
}

void ServiceCore::on_registered(Status status, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    if (registration_ == Registration::unregistered) return;
    registration_ = status == Status::ok ? Registration::registered : Registration::refused;
    refusal_status_ = status;
    refusal_message_ = message;
  }
  state_cv_.notify_all();
}

void ServiceCore::on_unregistered() {
  {
    std::lock_guard lock(mutex_);
    registration_ = Registration::unregistered;
  }
  state_cv_.notify_all();
}

void ServiceCore::start_workers() {
  if (options_.on_io_thread) return;  // the I/O thread runs the handlers: Engine::on_request_
  const auto count =
      options_.workers ? options_.workers : std::min<std::size_t>(options_.max_inflight, 64);
  for (std::size_t i = 0; i < count; ++i)
    workers_.emplace_back([this] { work_(); });
}

bool ServiceCore::wait_registered(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  state_cv_.wait_for(lock, timeout, [this] { return registration_ != Registration::pending; });
  if (registration_ == Registration::refused)
    throw Error(refusal_status_,
                "sage-busd refused to register service " + name_ + ": " + refusal_message_);
  return registration_ == Registration::registered;
}

void ServiceCore::stop(std::chrono::milliseconds drain) {
  const auto until = Clock::now() + drain;
  connection_.unregister_service(name_);
  std::unique_lock lock(mutex_);
  // The broker's answer to UNREGISTER comes after every call it dispatched here before,
  // so once it is in, jobs_ holds all the work this instance will ever get.
  state_cv_.wait_until(lock, until, [this] { return registration_ == Registration::unregistered; });
  state_cv_.wait_until(lock, until, [this] { return jobs_.empty() && running_ == 0; });
  stopping_ = true;
  auto abandoned = std::move(jobs_);
  jobs_.clear();
  lock.unlock();
  jobs_cv_.notify_all();
  for (const auto& job : abandoned)
    connection_.send_reply(job.id, job.epoch, Status::unavailable,
                           "service " + name_ + " stopped before the call could run", {});
  for (auto& worker : workers_)
    worker.join();
  workers_.clear();
  connection_.remove_service(name_);
}

void ServiceCore::work_() {
  std::unique_lock lock(mutex_);
  for (;;) {
    jobs_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    ++running_;
    lock.unlock();
    Answer answer = run(job);
    connection_.send_reply(job.id, job.epoch, answer.status, std::move(answer.message),
                           std::move(answer.payload));
    lock.lock();
    --running_;
    if (jobs_.empty() && running_ == 0) state_cv_.notify_all();
  }
}

Answer ServiceCore::run(const Job& job) {
  auto handler = handlers_.find(job.method);
  if (handler == handlers_.end())
    return {Status::not_found, "service " + name_ + " has no method " + job.method, {}};
  const Request request{name_,
                        job.method,
                        {static_cast<const char*>(job.payload.data()), job.payload.size()},
                        job.headers,
                        job.deadline};
  Answer answer;
  try {
    answer.payload = handler->second(request);
  } catch (const Error& e) {
    answer.status = e.status();
    answer.message = e.message();
  } catch (const std::exception& e) {
    answer.status = Status::handler_error;
    answer.message = e.what();
  } catch (...) {
    answer.status = Status::handler_error;
    answer.message = "the handler threw something that is not a std::exception";
  }
  served_.fetch_add(1, std::memory_order_relaxed);
  return answer;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Service: the owner's handle. It collects handlers until start(), then hands them to a
// ServiceCore shared with the connection's I/O thread.

Service::Service(Client& client, std::string name, ServiceOptions options) {
  if (auto error = wire::check_name("service name", name))
    throw Error(Status::invalid_argument, *error);
  if (name.front() == '$')
    throw Error(Status::permission_denied,
                "service names starting with '$' are reserved for sage-busd: " + name);
  if (options.max_inflight == 0)
    throw Error(Status::invalid_argument, "ServiceOptions::max_inflight must be at least 1");
  client_ = &client;
  name_ = std::move(name);
  options_ = std::move(options);
}

Service::~Service() {
  stop();
}

void Service::handle(std::string method, Handler handler) {
  if (core_)
    throw Error(Status::invalid_argument,
                "service " + name_ + " is started; handle() must come before start()");
  if (auto error = wire::check_name("method name", method))
    throw Error(Status::invalid_argument, *error);
  if (!handler) throw Error(Status::invalid_argument, "the handler of " + method + " is empty");
  handlers_[std::move(method)] = std::move(handler);
}

void Service::start() {
  if (core_) return;
  if (handlers_.empty())
    throw Error(Status::invalid_argument,
                "service " + name_ + " has no methods: call handle() first");
  core_ = std::make_shared<detail::ServiceCore>(client_->connection(), name_, options_,
                                                std::move(handlers_));
  core_->start_workers();
  client_->connection().add_service(core_);
}

bool Service::wait_registered(std::chrono::milliseconds timeout) {
  if (!core_) throw Error(Status::invalid_argument, "service " + name_ + " is not started");
  return core_->wait_registered(timeout);
}

void Service::stop(std::chrono::milliseconds drain) {
  if (!core_ || stopped_) return;
  stopped_ = true;
  core_->stop(drain);
}

const std::string& Service::name() const noexcept {
  return name_;
}

std::size_t Service::served() const noexcept {
  return core_ ? core_->served() : 0;
}

}  // namespace sagebus
