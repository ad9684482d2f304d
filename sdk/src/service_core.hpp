// detail::ServiceCore: the state of one sagebus::Service, shared by the Service object,
// its worker threads and the connection's I/O thread.
//
// The I/O thread calls submit(), on_registered() and on_unregistered(); they never
// block. Workers run handlers and hand replies back to the Connection. Everything else
// is called from the Service's owner thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "connection.hpp"
#include "sagebus/service.hpp"

namespace sagebus::detail {

struct Job {
  std::uint64_t id;     // the broker's dispatch id, echoed in the reply
  std::uint64_t epoch;  // the broker session it came in (CoreLink::send_reply)
  std::string method;
  std::map<std::string, std::string> headers;
  zmq::message_t payload;  // the frame as it came in: the handler reads it in place
  Clock::time_point deadline;
};

// What a handler answered.
struct Answer {
  Status status = Status::ok;
  std::string message;
  std::string payload;
};

class ServiceCore {
 public:
  ServiceCore(CoreLink& connection, std::string name, ServiceOptions options,
              std::map<std::string, Handler> handlers);

  const std::string& name() const noexcept { return name_; }
  const ServiceOptions& options() const noexcept { return options_; }
  std::vector<std::string> methods() const;
  std::size_t served() const noexcept { return served_.load(std::memory_order_relaxed); }

  // I/O thread.
  void submit(Job job);
  // Runs the handler of `job` on the calling thread (a worker, or the I/O thread with
  // ServiceOptions::on_io_thread) and counts it served.
  Answer run(const Job& job);
  void on_registered(Status status, const std::string& message);
  void on_unregistered();

  // Owner thread.
  void start_workers();
  bool wait_registered(std::chrono::milliseconds timeout);
  void stop(std::chrono::milliseconds drain);

 private:
  void work_();

  CoreLink& connection_;
  const std::string name_;
  const ServiceOptions options_;
  const std::map<std::string, Handler> handlers_;

  std::mutex mutex_;
  std::condition_variable jobs_cv_;   // workers wait for jobs
  std::condition_variable state_cv_;  // owner waits for registration / drain
  std::deque<Job> jobs_;
  std::size_t running_ = 0;
  bool stopping_ = false;
  enum class Registration {
    pending,
    registered,
    refused,
    unregistered
  } registration_ = Registration::pending;
  Status refusal_status_ = Status::ok;
  std::string refusal_message_;
  std::atomic<std::size_t> served_{0};
  std::vector<std::thread> workers_;
};

}  // namespace sagebus::detail
