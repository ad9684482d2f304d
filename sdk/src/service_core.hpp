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
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "connection.hpp"
#include "sagebus/service.hpp"

namespace sagebus::detail {

// One call dispatched to this instance, as its handler's thread and the I/O thread share
// it: its context (deadline, trace, cancellation), and for a stream the caller's window.
// The I/O thread cancels it (the broker's CANCEL) and adds credit; the handler's thread
// writes chunks (StreamWriter), waiting while the credit, in bytes (wire::chunk_cost), is
// not above zero.
class JobControl {
 public:
  JobControl(CoreLink& link, std::uint64_t id, std::uint64_t epoch, CallContext context,
             std::uint32_t credit)
      : link_(link), id_(id), epoch_(epoch), context_(std::move(context)), credit_(credit) {}

  const CallContext& context() const noexcept { return context_; }
  bool cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }
  // I/O thread.
  void cancel(std::string why);
  void add_credit(std::uint32_t credit);
  // Handler's thread: sends one chunk (StreamWriter::write).
  void write(std::string_view chunk);
  // Handler's thread: the chunks written, and their bytes.
  std::size_t chunks() const noexcept { return chunks_; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  CoreLink& link_;
  const std::uint64_t id_;
  const std::uint64_t epoch_;
  CallContext context_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::int64_t credit_;
  bool cancelled_ = false;  // as the token, under mutex_ (the writer waits on it)
  std::string why_;
  std::size_t chunks_ = 0;
  std::size_t bytes_ = 0;
};

struct Job {
  std::uint64_t id;     // the broker's dispatch id, echoed in the reply
  std::uint64_t epoch;  // the broker session it came in (CoreLink::send_reply)
  std::string method;
  std::map<std::string, std::string> headers;
  zmq::message_t payload;  // the frame as it came in: the handler reads it in place
  Clock::time_point deadline;
  bool stream = false;       // the caller reads a stream
  bool all = false;          // a part of a call_all
  std::uint32_t credit = 0;  // a stream's initial window, in bytes
  std::string traceparent;
  std::shared_ptr<JobControl> control;  // made by the ServiceCore (control_of)
};

// What a handler answered.
struct Answer {
  Status status = Status::ok;
  std::string message;
  std::string payload;
  // A plain handler's reply to a stream: the payload goes as the stream's one CHUNK, then
  // a REPLY without it.
  bool as_chunk = false;
};

class ServiceCore {
 public:
  ServiceCore(CoreLink& connection, std::string name, ServiceOptions options,
              std::map<std::string, Handler> handlers,
              std::map<std::string, StreamHandler> stream_handlers);

  const std::string& name() const noexcept { return name_; }
  const ServiceOptions& options() const noexcept { return options_; }
  std::vector<std::string> methods() const;
  std::size_t served() const noexcept { return served_.load(std::memory_order_relaxed); }

  // I/O thread.
  void submit(Job job);
  // The broker's CANCEL and CREDIT for dispatch `id`; false when it is not this
  // service's. A cancelled job not yet started never runs; one running sees it
  // (Request::cancelled(), its writer throws); neither is answered.
  // `epoch` is the broker session the message came in (Job::epoch): a new broker may
  // give a dispatch id again.
  bool cancel(std::uint64_t epoch, std::uint64_t id, const std::string& why);
  bool add_credit(std::uint64_t epoch, std::uint64_t id, std::uint32_t credit);
  // Runs the handler of `job` on the calling thread (a worker, or the I/O thread with
  // ServiceOptions::on_io_thread) and counts it served.
  Answer run(Job& job);
  void on_registered(Status status, const std::string& message);
  void on_unregistered();

  // Owner thread.
  void start_workers();
  bool wait_registered(std::chrono::milliseconds timeout);
  void stop(std::chrono::milliseconds drain);

 private:
  void work_();
  // The job's control, made on first use.
  JobControl& control_of(Job& job);
  // The handler's answer to `job`, without the interceptors.
  Answer answer_(Job& job);

  CoreLink& connection_;
  const std::string name_;
  const ServiceOptions options_;
  const std::map<std::string, Handler> handlers_;
  const std::map<std::string, StreamHandler> stream_handlers_;

  std::mutex mutex_;
  std::condition_variable jobs_cv_;   // workers wait for jobs
  std::condition_variable state_cv_;  // owner waits for registration / drain
  std::deque<Job> jobs_;
  // The jobs queued or running, by broker session and dispatch id, for cancel() and
  // add_credit().
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::shared_ptr<JobControl>> live_;
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
