// sagebus._native: the C++ SDK (libsagebus) bound to Python with pybind11. The package
// around it (python/sagebus/__init__.py) gives it Python's idiom: exceptions per status,
// futures, asyncio, codecs, services as classes. This layer keeps the SDK's promises
// true under Python:
// - Every wait releases the GIL, and wakes at least every 100 ms to let Python handle
//   signals (Ctrl-C interrupts a waiting call, receive or get with KeyboardInterrupt).
// - No Python code runs on the SDK's I/O thread: callbacks run on the client's callback
//   thread, subscription handlers on their subscription's thread, service handlers on the
//   service's worker threads, each taking the GIL for as long as the Python code runs.
// - Python objects held by C++ (handlers, callbacks) are released with the GIL held.
// - A client used in a child after fork() raises instead of touching the parent's
//   threads, and is never destroyed there (its threads do not exist in the child).
// - close() (and the destructor) closes the services, subscriptions and queues made on
//   the client first, then the client, with the GIL released: their threads may be
//   waiting for it.
// Errors: sagebus::Error becomes the package's exception for its status
// (sagebus._error_for); a closed or forked client raises sagebus.Error too.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "sagebus/sagebus.hpp"

namespace py = pybind11;
using namespace std::chrono_literals;

namespace {

using sagebus::Status;

// The longest a wait holds off Python's signal handlers.
constexpr auto kSignalCheck = 100ms;

// Seconds (a float, as Python's APIs take them) to milliseconds, rounded up so that a
// short positive timeout is not 0.
std::chrono::milliseconds millis(double seconds) {
  if (!(seconds >= 0)) throw py::value_error("a timeout must be a number of seconds >= 0");
  if (seconds > 2e6) throw py::value_error("a timeout must be at most 2,000,000 seconds");
  return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>(seconds));
}

// Whether Python may run now on a thread of ours: not once the interpreter finalizes
// (the package's atexit hook closes every client before that).
bool python_alive() {
  return _Py_IsFinalizing() == 0;
}

// A Python object owned by C++ code that may drop it on any thread: released with the GIL.
class PyRef {
 public:
  explicit PyRef(py::object object) : object_(std::move(object)) {}
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() {
    if (!object_) return;
    if (!python_alive()) {
      (void)object_.release();  // the interpreter is going: nothing to give it back to
      return;
    }
    py::gil_scoped_acquire gil;
    object_ = py::object();
  }
  const py::object& get() const { return object_; }

 private:
  py::object object_;
};
using Ref = std::shared_ptr<PyRef>;

Ref hold(py::object object) {
  return std::make_shared<PyRef>(std::move(object));
}

// Reports an exception raised by Python code that C++ called from one of its threads (a
// callback, a subscription handler), where nobody can catch it: as Python reports an
// exception in a thread it does not join, and the thread goes on.
void report(py::error_already_set& e, const char* where) {
  e.discard_as_unraisable(where);
}

std::string bytes_of(const py::handle& payload, const char* what) {
  if (!PyBytes_Check(payload.ptr()) && !PyByteArray_Check(payload.ptr()) &&
      !PyMemoryView_Check(payload.ptr()))
    throw py::type_error(std::string(what) + " must be bytes, bytearray or memoryview, not " +
                         std::string(py::str(payload.get_type().attr("__name__"))));
  if (PyBytes_Check(payload.ptr())) return std::string(payload.cast<std::string_view>());
  Py_buffer view;
  if (PyObject_GetBuffer(payload.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    throw py::type_error(std::string(what) + " must be a contiguous buffer");
  }
  std::string bytes(static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len));
  PyBuffer_Release(&view);
  return bytes;
}

// Set on the threads of the SDK while they run Python code of ours (a callback, a
// subscription's handler, a service's handler): what such code closes is closed by another
// thread, after it returns, since closing joins the very thread it runs on.
thread_local int t_sdk_thread = 0;
struct OnSdkThread {
  OnSdkThread() { ++t_sdk_thread; }
  ~OnSdkThread() { --t_sdk_thread; }
  OnSdkThread(const OnSdkThread&) = delete;
  OnSdkThread& operator=(const OnSdkThread&) = delete;
};

// Runs `f` without the GIL: released if this thread holds it (a destructor may also run on
// a thread that never had it, e.g. the one close_from_here starts).
template <class F>
void without_gil(const F& f) {
  if (python_alive() && PyGILState_Check() != 0) {
    py::gil_scoped_release nogil;
    f();
  } else {
    f();
  }
}

// Runs `close` now, with the GIL released; or, on a thread of the SDK, on a thread of its
// own once this one has returned to the SDK.
template <class Close>
void close_from_here(Close close) {
  if (t_sdk_thread > 0) {
    std::thread(std::move(close)).detach();
    return;
  }
  py::gil_scoped_release nogil;
  close();
}

// What every object made on a client has: the process it belongs to (in a child after
// fork() it is left alone, its threads being the parent's), and close(), which its client
// calls first when it closes. close() is called with the GIL released.
class Dependent {
 public:
  Dependent() : pid_(::getpid()) {}
  virtual ~Dependent() = default;
  Dependent(const Dependent&) = delete;
  Dependent& operator=(const Dependent&) = delete;
  virtual void close() = 0;
  bool forked() const { return ::getpid() != pid_; }
  void check_process(const char* what) const {
    if (forked())
      throw sagebus::Error(Status::invalid_argument,
                           std::string("this ") + what + " was made in process " +
                               std::to_string(pid_) + " before a fork(); a child process must " +
                               "make its own Client");
  }

 private:
  const pid_t pid_;
};

// Closes `dependent` when Python drops it (the GIL held): with the GIL released, as its
// threads may be waiting for it; never in a child after fork().
template <class T>
void close_on_drop(T* dependent) {
  if (dependent->forked()) return;
  without_gil([dependent] { dependent->close(); });
}

class NativeClient : public std::enable_shared_from_this<NativeClient> {
 public:
  explicit NativeClient(const sagebus::ClientOptions& options) : pid_(::getpid()) {
    client_ = std::make_unique<sagebus::Client>(options);
  }
  NativeClient(const NativeClient&) = delete;
  NativeClient& operator=(const NativeClient&) = delete;
  ~NativeClient() {
    if (::getpid() != pid_) {
      (void)client_.release();  // the parent's: its threads are not in this process
      return;
    }
    without_gil([this] { close_(); });
  }

  // The client for one operation: close() waits for the operations under way, and a
  // wait of many slices takes a Use per slice.
  class Use {
   public:
    explicit Use(NativeClient& owner) : owner_(owner) { ++t_uses; }
    ~Use() {
      --t_uses;
      std::lock_guard lock(owner_.mutex_);
      if (--owner_.users_ == 0) owner_.idle_.notify_all();
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    sagebus::Client& client() const { return *owner_.client_; }

   private:
    NativeClient& owner_;
  };
  Use use() {
    if (::getpid() != pid_)
      throw sagebus::Error(Status::invalid_argument,
                           "this Client was made in process " + std::to_string(pid_) +
                               " before a fork(); a child process must make its own Client");
    std::lock_guard lock(mutex_);
    if (!client_ || closing_) throw sagebus::Error(Status::cancelled, "this Client is closed");
    ++users_;
    return Use(*this);
  }

  void adopt(const std::shared_ptr<Dependent>& dependent) {
    std::lock_guard lock(mutex_);
    dependents_.push_back(dependent);
  }

  void close() {
    if (::getpid() != pid_) return;  // the child cannot close the parent's client
    if (t_uses > 0)
      throw sagebus::Error(Status::invalid_argument,
                           "close() while this thread waits in a client (a signal handler?): "
                           "raise from the handler, and close once the wait has ended");
    close_from_here([self = shared_from_this()] { self->close_(); });
  }
  bool closed() {
    std::lock_guard lock(mutex_);
    return !client_ || closing_;
  }

 private:
  // Operations of a client under way on this thread (a signal handler may run in one).
  static thread_local int t_uses;

  void close_() {
    std::vector<std::weak_ptr<Dependent>> dependents;
    std::unique_ptr<sagebus::Client> client;
    {
      std::unique_lock lock(mutex_);
      closing_ = true;
      idle_.wait(lock, [this] { return users_ == 0; });
      dependents.swap(dependents_);
      client = std::move(client_);
    }
    for (auto& weak : dependents)
      if (auto dependent = weak.lock()) dependent->close();
    client.reset();
  }

  const pid_t pid_;
  std::mutex mutex_;
  std::condition_variable idle_;
  int users_ = 0;
  bool closing_ = false;
  std::unique_ptr<sagebus::Client> client_;
  std::vector<std::weak_ptr<Dependent>> dependents_;
};

thread_local int NativeClient::t_uses = 0;

// Runs `wait(interrupted)`, a wait of the SDK's that asks `interrupted` every
// kSignalCheck, with the GIL released; `interrupted` asks Python for signals. A signal
// handler's exception (KeyboardInterrupt) stays set, and is raised once the wait ended.
template <class Wait>
void interruptible(const Wait& wait) {
  bool signalled = false;
  const std::function<bool()> interrupted = [&signalled] {
    py::gil_scoped_acquire gil;
    signalled = PyErr_CheckSignals() != 0;
    return signalled;
  };
  {
    py::gil_scoped_release nogil;
    try {
      wait(interrupted);
    } catch (const sagebus::Error&) {
      if (!signalled) throw;
    }
  }
  if (signalled) throw py::error_already_set();
}

// Waits for `ready(slice)` in slices of at most kSignalCheck, up to `timeout`, with the
// GIL released, handling signals between slices: for the SDK's waits that may simply be
// asked again.
template <class Ready>
bool sliced(std::chrono::milliseconds timeout, const Ready& ready) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    const auto slice = std::clamp(left, std::chrono::milliseconds(0), kSignalCheck);
    bool done;
    {
      py::gil_scoped_release nogil;
      done = ready(slice);
    }
    if (done || left <= kSignalCheck) return done;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

sagebus::CallOptions call_options(double timeout, bool wait_for_ready, bool idempotent,
                                  std::string routing_key,
                                  std::map<std::string, std::string> headers) {
  sagebus::CallOptions o;
  o.timeout = millis(timeout);
  o.wait_for_ready = wait_for_ready;
  o.idempotent = idempotent;
  o.routing_key = std::move(routing_key);
  o.headers = std::move(headers);
  return o;
}

// --- subscriptions -------------------------------------------------------------------

class NativeSubscription : public Dependent {
 public:
  explicit NativeSubscription(Ref handler) : handler_(std::move(handler)) {}
  ~NativeSubscription() override { close_on_drop(this); }
  void close() override {
    closed_ = true;
    std::lock_guard lock(mutex_);
    subscription_.unsubscribe();
  }
  sagebus::Subscription& get() {
    check_process("Subscription");
    return subscription_;
  }
  void set(sagebus::Subscription s) { subscription_ = std::move(s); }
  bool closed() const { return closed_; }

 private:
  std::atomic<bool> closed_{false};
  std::mutex mutex_;
  sagebus::Subscription subscription_;
  Ref handler_;  // the SDK's copy is dropped on its I/O thread; this one, with the GIL
};

// --- services ------------------------------------------------------------------------

class NativeService : public Dependent {
 public:
  NativeService(sagebus::Client& client, std::string name, sagebus::ServiceOptions options)
      : service_(std::make_shared<sagebus::Service>(client, std::move(name), std::move(options))) {}
  ~NativeService() override { close_on_drop(this); }
  void close() override { stop(std::chrono::seconds(5)); }
  // Stops the service and destroys it while its client is still there.
  void stop(std::chrono::milliseconds drain) {
    std::shared_ptr<sagebus::Service> service;
    {
      std::lock_guard lock(mutex_);
      service.swap(service_);
    }
    if (!service) return;
    service->stop(drain);
    served_ = service->served();
  }
  // The service for one operation (shared: a stop meanwhile does not pull it away).
  std::shared_ptr<sagebus::Service> get() {
    check_process("Service");
    std::lock_guard lock(mutex_);
    if (!service_) throw sagebus::Error(Status::cancelled, "this Service is stopped");
    return service_;
  }
  std::size_t served() {
    std::lock_guard lock(mutex_);
    return service_ ? service_->served() : served_.load();
  }
  void keep(Ref handler) { handlers_.push_back(std::move(handler)); }

 private:
  std::mutex mutex_;
  std::shared_ptr<sagebus::Service> service_;
  std::atomic<std::size_t> served_{0};
  // The SDK's copies of the handlers are dropped on its I/O thread; these, with the GIL.
  std::vector<Ref> handlers_;
};

// A handler's Python function, called on a worker thread of the service as
// fn(method, payload, headers, deadline) -> bytes, where deadline is in time.monotonic()'s
// seconds (both are CLOCK_MONOTONIC). Its exception becomes the caller's error
// (sagebus._handler_failure says which status and text).
sagebus::Handler python_handler(const Ref& fn) {
  return [fn](const sagebus::Request& request) -> std::string {
    if (!python_alive()) throw sagebus::Error(Status::unavailable, "the Python process is exiting");
    std::optional<sagebus::Error> failure;
    std::string reply;
    {
      const OnSdkThread on_sdk_thread;
      py::gil_scoped_acquire gil;
      try {
        py::dict headers;
        for (const auto& [k, v] : request.headers)
          headers[py::str(k)] = py::str(v);
        const double deadline =
            std::chrono::duration<double>(request.deadline.time_since_epoch()).count();
        py::object result =
            fn->get()(py::str(request.method.data(), request.method.size()),
                      py::bytes(request.payload.data(), request.payload.size()), headers, deadline);
        reply = bytes_of(result, "a handler's reply");
      } catch (py::error_already_set& e) {
        py::tuple why = py::module_::import("sagebus").attr("_handler_failure")(e.value());
        failure.emplace(static_cast<Status>(why[0].cast<int>()), why[1].cast<std::string>());
      } catch (const std::exception& e) {
        failure.emplace(Status::handler_error, e.what());
      }
    }
    if (failure) throw *failure;
    return reply;
  };
}

// --- outcomes for an event loop ------------------------------------------------------

// Where the outcomes of an event loop's calls wait for it: the callback thread appends
// them without the GIL and, when the inbox was empty, signals an eventfd the loop reads
// (loop.add_reader); the loop takes them all at once (drain), holding the GIL anyway. So
// an outcome costs the callback thread no GIL hand-off, and the loop one wake-up per
// batch.
class Inbox {
 public:
  Inbox() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;
  ~Inbox() { ::close(fd_); }
  int fileno() const { return fd_; }

  void post(std::uint64_t token, sagebus::Reply reply) {
    bool first;
    {
      std::lock_guard lock(mutex_);
      first = outcomes_.empty();
      outcomes_.emplace_back(token, std::move(reply));
    }
    if (first) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const auto n = ::write(fd_, &one, sizeof one);
    }
  }

  // [(token, status, message, payload)], oldest first.
  py::list drain() {
    std::vector<std::pair<std::uint64_t, sagebus::Reply>> outcomes;
    {
      std::lock_guard lock(mutex_);
      outcomes.swap(outcomes_);
      std::uint64_t count = 0;
      [[maybe_unused]] const auto n = ::read(fd_, &count, sizeof count);
    }
    py::list out;
    for (auto& [token, reply] : outcomes)
      out.append(py::make_tuple(token, static_cast<int>(reply.status), reply.message,
                                py::bytes(reply.payload)));
    return out;
  }

 private:
  const int fd_;
  std::mutex mutex_;
  std::vector<std::pair<std::uint64_t, sagebus::Reply>> outcomes_;
};

// --- legacy queues -------------------------------------------------------------------

class NativeQueue : public Dependent {
 public:
  // With `transient`, declares the queue so (a wait for the broker: call without the GIL).
  NativeQueue(sagebus::Client& client, std::string name, bool transient)
      : queue_(std::make_unique<sagebus::LegacyQueue>(
            client, std::move(name), sagebus::QueueOptions{.transient = transient})) {}
  ~NativeQueue() override { close_on_drop(this); }
  void close() override {
    std::lock_guard lock(mutex_);
    queue_.reset();
  }
  // Held by one operation at a time (get() acknowledges the one before), under mutex().
  sagebus::LegacyQueue& get() {
    if (!queue_) throw sagebus::Error(Status::cancelled, "this LegacyQueue is closed");
    return *queue_;
  }
  std::mutex& mutex() {
    check_process("LegacyQueue");
    return mutex_;
  }

 private:
  std::mutex mutex_;
  std::unique_ptr<sagebus::LegacyQueue> queue_;
};

// The package's exception for `status`, set as Python's current error.
void raise_status(Status status, const std::string& message) {
  py::object error =
      py::module_::import("sagebus").attr("_error_for")(static_cast<int>(status), message);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
}

}  // namespace

PYBIND11_MODULE(_native, module) {
  module.doc() = "sage-bus's C++ SDK, bound for the sagebus package; use sagebus, not this.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const sagebus::Error& e) {
      raise_status(e.status(), e.message());
    }
  });

  module.def("status_name", [](int status) {
    return std::string(sagebus::status_name(static_cast<Status>(status)));
  });

  py::class_<NativeClient, std::shared_ptr<NativeClient>>(module, "Client")
      .def(py::init([](std::string endpoint, std::string name, double reconnect_min,
                       double reconnect_max, std::size_t max_pending,
                       std::size_t max_queued_publishes, std::size_t inbox_size, bool takeover,
                       std::string server_key, std::string client_key) {
             sagebus::ClientOptions o;
             o.endpoint = std::move(endpoint);
             o.name = std::move(name);
             o.reconnect_min = millis(reconnect_min);
             o.reconnect_max = millis(reconnect_max);
             o.max_pending = max_pending;
             o.max_queued_publishes = max_queued_publishes;
             o.inbox_size = inbox_size;
             o.takeover = takeover;
             o.server_key = std::move(server_key);
             o.client_key = std::move(client_key);
             return std::make_shared<NativeClient>(o);
           }),
           py::arg("endpoint"), py::arg("name"), py::arg("reconnect_min"), py::arg("reconnect_max"),
           py::arg("max_pending"), py::arg("max_queued_publishes"), py::arg("inbox_size"),
           py::arg("takeover"), py::arg("server_key"), py::arg("client_key"))
      .def("close", &NativeClient::close)
      .def_property_readonly("closed", &NativeClient::closed)
      .def("name", [](NativeClient& c) { return c.use().client().options().name; })
      .def("connected", [](NativeClient& c) { return c.use().client().connected(); })
      .def("wait_connected",
           [](NativeClient& c, double timeout) {
             return sliced(millis(timeout), [&](std::chrono::milliseconds slice) {
               return c.use().client().wait_connected(slice);
             });
           })
      .def("connection_error",
           [](NativeClient& c) -> py::object {
             const auto error = c.use().client().connection_error();
             if (!error) return py::none();
             return py::make_tuple(static_cast<int>(error->status()), error->message());
           })
      .def("call",
           [](NativeClient& c, const std::string& service, const std::string& method,
              const py::handle& payload, double timeout, bool wait_for_ready, bool idempotent,
              std::string routing_key, std::map<std::string, std::string> headers) {
             const std::string bytes = bytes_of(payload, "the payload");
             const auto options = call_options(timeout, wait_for_ready, idempotent,
                                               std::move(routing_key), std::move(headers));
             const auto use = c.use();
             sagebus::Client& client = use.client();
             // This thread waits on the socket itself (the SDK's fastest call).
             sagebus::Reply reply;
             interruptible([&](const std::function<bool()>& interrupted) {
               reply = client.call(service, method, bytes, options, interrupted, kSignalCheck);
             });
             return py::bytes(reply.payload);
           })
      .def(
          "call_async",
          [](NativeClient& c, const std::string& service, const std::string& method,
             const py::handle& payload, double timeout, bool wait_for_ready, bool idempotent,
             std::string routing_key, std::map<std::string, std::string> headers, py::object done) {
            const std::string bytes = bytes_of(payload, "the payload");
            const auto options = call_options(timeout, wait_for_ready, idempotent,
                                              std::move(routing_key), std::move(headers));
            const auto use = c.use();
            sagebus::Client& client = use.client();
            Ref callback = hold(std::move(done));
            py::gil_scoped_release nogil;
            client.call_async(service, method, bytes, options, [callback](sagebus::Reply reply) {
              if (!python_alive()) return;
              const OnSdkThread on_sdk_thread;
              py::gil_scoped_acquire gil;
              try {
                callback->get()(static_cast<int>(reply.status), reply.message,
                                py::bytes(reply.payload));
              } catch (py::error_already_set& e) {
                report(e, "a sagebus call_async callback");
              }
            });
          })
      .def("call_to_inbox",
           [](NativeClient& c, const std::string& service, const std::string& method,
              const py::handle& payload, double timeout, bool wait_for_ready, bool idempotent,
              std::string routing_key, std::map<std::string, std::string> headers,
              std::shared_ptr<Inbox> inbox, std::uint64_t token) {
             const std::string bytes = bytes_of(payload, "the payload");
             const auto options = call_options(timeout, wait_for_ready, idempotent,
                                               std::move(routing_key), std::move(headers));
             const auto use = c.use();
             sagebus::Client& client = use.client();
             py::gil_scoped_release nogil;
             client.call_async(service, method, bytes, options,
                               [inbox = std::move(inbox), token](sagebus::Reply reply) {
                                 inbox->post(token, std::move(reply));
                               });
           })
      .def("publish",
           [](NativeClient& c, const std::string& topic, const py::handle& payload, bool confirm,
              double timeout) {
             const std::string bytes = bytes_of(payload, "the payload");
             sagebus::PublishOptions o{.confirm = confirm, .timeout = millis(timeout)};
             const auto use = c.use();
             sagebus::Client& client = use.client();
             py::gil_scoped_release nogil;
             return client.publish(topic, bytes, o);
           })
      .def("subscribe",
           [](const std::shared_ptr<NativeClient>& c, const std::string& pattern,
              py::object handler, std::uint32_t window) {
             const auto use = c->use();
             sagebus::Client& client = use.client();
             Ref fn = hold(std::move(handler));
             auto subscription = std::make_shared<NativeSubscription>(fn);
             subscription->set(client.subscribe(pattern,
                                                [fn](const sagebus::Message& m) {
                                                  if (!python_alive()) return;
                                                  const OnSdkThread on_sdk_thread;
                                                  py::gil_scoped_acquire gil;
                                                  try {
                                                    fn->get()(m.topic, py::bytes(m.payload),
                                                              m.missed_before);
                                                  } catch (py::error_already_set& e) {
                                                    report(e, "a sagebus subscription handler");
                                                  }
                                                },
                                                {.window = window}));
             c->adopt(subscription);
             return subscription;
           })
      .def("send",
           [](NativeClient& c, const std::string& peer, const py::handle& payload, double timeout,
              double hold_for) {
             const std::string bytes = bytes_of(payload, "the payload");
             sagebus::SendOptions o{.timeout = millis(timeout), .hold = millis(hold_for)};
             const auto use = c.use();
             sagebus::Client& client = use.client();
             interruptible([&](const std::function<bool()>& interrupted) {
               client.send(peer, bytes, o, interrupted, kSignalCheck);
             });
           })
      .def("receive", [](NativeClient& c, std::optional<double> timeout) -> py::object {
        const auto until = timeout ? std::chrono::steady_clock::now() + millis(*timeout)
                                   : std::chrono::steady_clock::time_point::max();
        for (;;) {
          const auto now = std::chrono::steady_clock::now();
          const auto slice = until - now < kSignalCheck
                                 ? std::chrono::ceil<std::chrono::milliseconds>(until - now)
                                 : std::chrono::milliseconds(kSignalCheck);
          std::optional<sagebus::Message> m;
          {
            const auto use = c.use();  // a slice at a time: close() need not wait for more
            py::gil_scoped_release nogil;
            m = use.client().receive(std::max(slice, std::chrono::milliseconds(0)));
          }
          if (m) return py::make_tuple(m->from, py::bytes(m->payload));
          if (std::chrono::steady_clock::now() >= until) return py::none();
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
      });

  py::class_<NativeSubscription, std::shared_ptr<NativeSubscription>>(module, "Subscription")
      .def("wait_subscribed",
           [](NativeSubscription& s, double timeout) {
             return sliced(millis(timeout), [&](std::chrono::milliseconds slice) {
               return s.get().wait_subscribed(slice);
             });
           })
      .def("close",
           [](const std::shared_ptr<NativeSubscription>& s) {
             if (s->forked()) return;
             close_from_here([s] { s->close(); });
           })
      .def_property_readonly("closed", &NativeSubscription::closed)
      .def_property_readonly("missed", [](NativeSubscription& s) { return s.get().missed(); })
      .def_property_readonly("handled", [](NativeSubscription& s) { return s.get().handled(); });

  py::class_<NativeService, std::shared_ptr<NativeService>>(module, "Service")
      .def(py::init([](const std::shared_ptr<NativeClient>& c, std::string name,
                       std::size_t max_inflight, std::size_t workers, std::string version,
                       int strategy) {
             sagebus::ServiceOptions o;
             o.max_inflight = max_inflight;
             o.workers = workers;
             o.version = std::move(version);
             o.strategy = static_cast<sagebus::Strategy>(strategy);
             const auto use = c->use();
             auto service = std::make_shared<NativeService>(use.client(), std::move(name), o);
             c->adopt(service);
             return service;
           }),
           py::arg("client"), py::arg("name"), py::arg("max_inflight"), py::arg("workers"),
           py::arg("version"), py::arg("strategy"))
      .def("handle",
           [](NativeService& s, std::string method, py::object fn) {
             Ref handler = hold(std::move(fn));
             s.get()->handle(std::move(method), python_handler(handler));
             s.keep(std::move(handler));
           })
      .def("start", [](NativeService& s) { s.get()->start(); })
      .def("wait_registered",
           [](NativeService& s, double timeout) {
             const auto service = s.get();
             return sliced(millis(timeout), [&](std::chrono::milliseconds slice) {
               return service->wait_registered(slice);
             });
           })
      .def("stop",
           [](const std::shared_ptr<NativeService>& s, double drain) {
             if (s->forked()) return;
             const auto d = millis(drain);
             close_from_here([s, d] { s->stop(d); });
           })
      .def_property_readonly("served", [](NativeService& s) {
        py::gil_scoped_release nogil;  // a stop may hold the lock while handlers need the GIL
        return s.served();
      });

  py::class_<Inbox, std::shared_ptr<Inbox>>(module, "Inbox")
      .def(py::init<>())
      .def("fileno", &Inbox::fileno)
      .def("drain", &Inbox::drain);

  py::class_<NativeQueue, std::shared_ptr<NativeQueue>>(module, "LegacyQueue")
      .def(py::init([](const std::shared_ptr<NativeClient>& c, std::string name, bool transient) {
        const auto use = c->use();
        std::shared_ptr<NativeQueue> queue;
        {
          py::gil_scoped_release nogil;
          queue = std::make_shared<NativeQueue>(use.client(), std::move(name), transient);
        }
        c->adopt(queue);
        return queue;
      }))
      .def("put",
           [](NativeQueue& q, const py::handle& item, double timeout, double ttl) {
             const std::string bytes = bytes_of(item, "a queue item");
             const auto t = millis(timeout);
             const auto life = ttl > 0 ? millis(ttl) : std::chrono::milliseconds(0);
             py::gil_scoped_release nogil;
             std::lock_guard lock(q.mutex());
             q.get().put(bytes, t, life);
           })
      .def("nack",
           [](NativeQueue& q) {
             py::gil_scoped_release nogil;
             std::lock_guard lock(q.mutex());
             q.get().nack();
           })
      .def("get",
           [](NativeQueue& q, std::optional<double> timeout) -> py::object {
             const auto until = timeout ? std::chrono::steady_clock::now() + millis(*timeout)
                                        : std::chrono::steady_clock::time_point::max();
             for (;;) {
               const auto left = until - std::chrono::steady_clock::now();
               const auto slice = left < kSignalCheck
                                      ? std::chrono::ceil<std::chrono::milliseconds>(left)
                                      : std::chrono::milliseconds(kSignalCheck);
               std::optional<sagebus::QueueItem> item;
               {
                 py::gil_scoped_release nogil;
                 std::lock_guard lock(q.mutex());
                 item = q.get().get_item(std::max(slice, std::chrono::milliseconds(1)));
               }
               if (item)
                 return py::make_tuple(py::bytes(item->data), item->redelivered, item->deliveries);
               if (std::chrono::steady_clock::now() >= until) return py::none();
               if (PyErr_CheckSignals() != 0) throw py::error_already_set();
             }
           })
      .def("ack",
           [](NativeQueue& q) {
             py::gil_scoped_release nogil;
             std::lock_guard lock(q.mutex());
             q.get().ack();
           })
      .def("size",
           [](NativeQueue& q) {
             py::gil_scoped_release nogil;
             std::lock_guard lock(q.mutex());
             return q.get().size();
           })
      .def("close", [](NativeQueue& q) {
        if (q.forked()) return;
        py::gil_scoped_release nogil;
        q.close();
      });
}
