#include "sagebus/service.hpp"

#include <algorithm>
#include <exception>

#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/traceparent.hpp"
#include "service_core.hpp"

namespace sagebus {
namespace detail {

void JobControl::cancel(std::string why) {
  {
    // Under the lock, so that a writer cannot miss it between its check and its wait; the
    // token's functions (the handler's, and the calls made within its context) run after.
    std::lock_guard lock(mutex_);
    cancelled_ = true;
    why_ = why;
  }
  cv_.notify_all();
  context_.cancel.cancel(std::move(why));
}

void JobControl::add_credit(std::uint32_t credit) {
  {
    std::lock_guard lock(mutex_);
    credit_ += credit;
  }
  cv_.notify_all();
}

void JobControl::write(std::string_view chunk) {
  if (const auto limit = link_.max_payload(); chunk.size() > limit)
    throw Error(Status::invalid_argument, "a chunk of " + std::to_string(chunk.size()) +
                                              " bytes exceeds the broker's max-payload of " +
                                              std::to_string(limit) + " bytes");
  {
    std::unique_lock lock(mutex_);
    const bool ready =
        cv_.wait_until(lock, context_.deadline, [this] { return credit_ > 0 || cancelled_; });
    if (cancelled_) throw Error(Status::cancelled, why_);
    if (!ready)
      throw Error(Status::deadline_exceeded,
                  "the stream's deadline passed while the caller's window was full");
    credit_ -= wire::chunk_cost(chunk.size());
  }
  link_.send_chunk(id_, epoch_, chunk);
  ++chunks_;
  bytes_ += chunk.size();
}

ServiceCore::ServiceCore(CoreLink& connection, std::string name, ServiceOptions options,
                         std::map<std::string, Handler> handlers,
                         std::map<std::string, StreamHandler> stream_handlers)
    : connection_(connection),
      name_(std::move(name)),
      options_(std::move(options)),
      handlers_(std::move(handlers)),
      stream_handlers_(std::move(stream_handlers)) {}

std::vector<std::string> ServiceCore::methods() const {
  std::vector<std::string> out;
  for (const auto& [method, handler] : handlers_)
    out.push_back(method);
  for (const auto& [method, handler] : stream_handlers_)
    out.push_back(method);
  return out;
}

void ServiceCore::submit(Job job) {
  {
    std::lock_guard lock(mutex_);
    control_of(job);
    live_[{job.epoch, job.id}] = job.control;
    jobs_.push_back(std::move(job));
  }
  jobs_cv_.notify_one();
}

bool ServiceCore::cancel(std::uint64_t epoch, std::uint64_t id, const std::string& why) {
  std::shared_ptr<JobControl> control;
  {
    std::lock_guard lock(mutex_);
    auto it = live_.find({epoch, id});
    if (it == live_.end()) return false;
    control = it->second;
    // Not started: it never runs. Running: the worker forgets it when the handler returns.
    if (auto job =
            std::find_if(jobs_.begin(), jobs_.end(), [&](const Job& j) { return j.id == id; });
        job != jobs_.end()) {
      jobs_.erase(job);
      live_.erase(it);
      if (jobs_.empty() && running_ == 0) state_cv_.notify_all();
    }
  }
  control->cancel(why);
  return true;
}

bool ServiceCore::add_credit(std::uint64_t epoch, std::uint64_t id, std::uint32_t credit) {
  std::shared_ptr<JobControl> control;
  {
    std::lock_guard lock(mutex_);
    auto it = live_.find({epoch, id});
    if (it == live_.end()) return false;
    control = it->second;
  }
  control->add_credit(credit);
  return true;
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
  live_.clear();
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
    // A cancelled call's caller no longer waits, and the broker has forgotten it.
    if (!job.control->cancelled()) {
      if (answer.as_chunk) connection_.send_chunk(job.id, job.epoch, answer.payload);
      connection_.send_reply(job.id, job.epoch, answer.status, std::move(answer.message),
                             std::move(answer.payload));
    }
    lock.lock();
    if (auto it = live_.find({job.epoch, job.id}); it != live_.end() && it->second == job.control)
      live_.erase(it);
    --running_;
    if (jobs_.empty() && running_ == 0) state_cv_.notify_all();
  }
}

JobControl& ServiceCore::control_of(Job& job) {
  if (!job.control)
    job.control = std::make_shared<JobControl>(
        connection_, job.id, job.epoch,
        CallContext{job.deadline, std::move(job.traceparent), CancelToken()}, job.credit);
  return *job.control;
}

Answer ServiceCore::run(Job& job) {
  control_of(job);
  const auto& interceptors = options_.interceptors;
  if (interceptors.empty()) return answer_(job);
  const auto started = Clock::now();
  CallInfo info{name_,
                job.method,
                job.headers,
                job.payload.size(),
                job.stream,
                job.all,
                wire::trace_id_of(job.control->context().traceparent)};
  std::size_t ran = 0;
  std::optional<Answer> refused;
  while (ran < interceptors.size() && !refused) {
    std::optional<Error> refusal;
    try {
      refusal = interceptors[ran++]->before(info);
    } catch (const std::exception& e) {
      refusal = Error(Status::handler_error, std::string("an interceptor threw: ") + e.what());
    }
    if (refusal) refused = Answer{refusal->status(), refusal->message(), {}};
  }
  Answer answer = refused ? std::move(*refused) : answer_(job);
  const CallEnd end{answer.status, answer.message,
                    job.stream && !answer.as_chunk ? job.control->bytes() : answer.payload.size(),
                    answer.as_chunk ? 1 : job.control->chunks(), Clock::now() - started};
  while (ran > 0)
    interceptors[--ran]->after(info, end);
  return answer;
}

Answer ServiceCore::answer_(Job& job) {
  auto handler = handlers_.find(job.method);
  auto stream_handler = stream_handlers_.find(job.method);
  if (handler == handlers_.end() && stream_handler == stream_handlers_.end())
    return {Status::not_found, "service " + name_ + " has no method " + job.method, {}};
  if (!job.stream && handler == handlers_.end())
    return {Status::invalid_argument,
            "method " + job.method + " of service " + name_ +
                " answers with a stream: call it with Client::stream (busctl call --stream)",
            {}};
  const Request request{
      name_,       job.method,   {static_cast<const char*>(job.payload.data()), job.payload.size()},
      job.headers, job.deadline, job.control->context()};
  Answer answer;
  try {
    if (stream_handler != stream_handlers_.end() && job.stream) {
      StreamWriter out(*job.control);
      stream_handler->second(request, out);
    } else if (job.stream) {  // a plain handler's reply, as the stream's one chunk
      answer.payload = handler->second(request);
      answer.as_chunk = true;
    } else {
      answer.payload = handler->second(request);
    }
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

std::string_view Request::trace_id() const {
  return wire::trace_id_of(context.traceparent);
}

void StreamWriter::write(std::string_view chunk) {
  job_.write(chunk);
  ++written_;
}

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
  stream_handlers_.erase(method);
  handlers_[std::move(method)] = std::move(handler);
}

void Service::handle_stream(std::string method, StreamHandler handler) {
  if (core_)
    throw Error(Status::invalid_argument,
                "service " + name_ + " is started; handle_stream() must come before start()");
  if (auto error = wire::check_name("method name", method))
    throw Error(Status::invalid_argument, *error);
  if (!handler) throw Error(Status::invalid_argument, "the handler of " + method + " is empty");
  if (options_.on_io_thread)
    throw Error(Status::invalid_argument,
                "service " + name_ +
                    " runs its handlers on the I/O thread "
                    "(ServiceOptions::on_io_thread), where a stream's writer could not wait for "
                    "its caller's window");
  handlers_.erase(method);
  stream_handlers_[std::move(method)] = std::move(handler);
}

void Service::start() {
  if (core_) return;
  if (handlers_.empty() && stream_handlers_.empty())
    throw Error(Status::invalid_argument,
                "service " + name_ + " has no methods: call handle() first");
  core_ = std::make_shared<detail::ServiceCore>(client_->connection(), name_, options_,
                                                std::move(handlers_), std::move(stream_handlers_));
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
