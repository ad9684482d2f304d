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
// - close() (and the destructor) closes the services, subscriptions, queues and streams
//   made on the client first, then the client, with the GIL released: their threads may
//   be waiting for it.
// - A stream is read by a thread of its own (NativeStream), which never takes the GIL:
//   readers wait in slices for its chunks, or an event loop is woken through its Inbox.
// - Every call has a CancelToken of its own (CallToken), so that a Python future's
//   cancel(), a cancelled asyncio task and Ctrl-C cancel that call in the broker too.
// - Python interceptors: a client's before() runs on the caller's thread, its after() on
//   the caller's thread (a synchronous call's, a refused call's) or the client's
//   interceptor thread (AfterThread), never on the I/O thread; a service's on its workers.
// - A call_all is read as a stream is (NativeGather), so that every wait handles signals.
// Errors: sagebus::Error becomes the package's exception for its status
// (sagebus._error_for); a closed or forked client raises sagebus.Error too.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "sagebus/logging_interceptor.hpp"
#include "sagebus/metrics_interceptor.hpp"
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

// --- interceptors --------------------------------------------------------------------

// A client's interceptors run in the SDK as its calls go: before() on the caller's
// thread, in the call; after() on whichever thread ends the call, which may be the
// client's I/O thread holding the connection's lock. A Python after() runs where it is
// called only on the caller's own thread, for the call it makes through this module (a
// synchronous call() once it has its outcome, or any call that before() refused): any
// other is handed to the client's interceptor thread (AfterThread), so that no Python runs
// on the I/O thread and the connection never waits for the GIL. A service's interceptors
// run on its worker threads, where its handlers run: there, always where they are called.

// Set while this thread makes a call through this module with the GIL released
// (Calling), and the call whose before() ran here last (its CallInfo's key_of).
thread_local bool t_calling = false;
thread_local const void* t_call_key = nullptr;

// Marks this thread as making a call, for its interceptors' after() (restored on leaving:
// an interceptor may make calls of its own).
class Calling {
 public:
  Calling() : was_calling_(t_calling), was_key_(t_call_key) {
    t_calling = true;
    t_call_key = nullptr;
  }
  ~Calling() {
    t_calling = was_calling_;
    t_call_key = was_key_;
  }
  Calling(const Calling&) = delete;
  Calling& operator=(const Calling&) = delete;

 private:
  const bool was_calling_;
  const void* const was_key_;
};

// One call from its before() to its after(): the SDK gives both the same call's own copy
// of the service's name.
const void* key_of(const sagebus::CallInfo& call) {
  return call.service.data();
}
// In a client interceptor's before(): the call this thread makes, if it makes one here.
void note_call(const sagebus::CallInfo& call) {
  if (t_calling) t_call_key = key_of(call);
}

// The client's interceptor thread: runs the Python after()s that come on other threads
// than their caller's, in the order they came, with the GIL held. Started at the first;
// stopped (what is queued run first) once the client is closed.
class AfterThread {
 public:
  AfterThread() : pid_(::getpid()), state_(std::make_shared<State>()) {}
  AfterThread(const AfterThread&) = delete;
  AfterThread& operator=(const AfterThread&) = delete;
  ~AfterThread() {
    if (::getpid() != pid_) {
      (void)thread_.release();  // the parent's: it is not in this process
      return;
    }
    stop();
  }

  // Runs `job` (Python, which catches its own exceptions) with the GIL held: here when
  // `call` is the one this thread makes, else on the interceptor thread.
  void run(const sagebus::CallInfo& call, std::function<void()> job) {
    if (t_calling && t_call_key == key_of(call)) {
      if (!python_alive()) return;
      py::gil_scoped_acquire gil;
      job();
      return;
    }
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) return;
    state_->jobs.push_back(std::move(job));
    if (!thread_) thread_ = std::make_unique<std::thread>([state = state_] { run_(*state); });
    state_->cv.notify_one();
  }

  // Runs what is queued, then joins the thread. Without the GIL. On the thread itself (a
  // job dropped the client's last reference), the thread goes on alone to its end.
  void stop() {
    std::unique_ptr<std::thread> thread;
    {
      std::lock_guard lock(state_->mutex);
      state_->stopped = true;
      thread.swap(thread_);
    }
    state_->cv.notify_all();
    if (!thread || !thread->joinable()) return;
    if (thread->get_id() == std::this_thread::get_id()) {
      thread->detach();
    } else {
      thread->join();
    }
  }

 private:
  // What the thread shares with its owner, which may be gone before it ends.
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool stopped = false;
  };

  static void run_(State& state) {
    // The program's signals are for its own threads (Python handles them on the main one).
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock lock(state.mutex);
    for (;;) {
      state.cv.wait(lock, [&state] { return state.stopped || !state.jobs.empty(); });
      if (state.jobs.empty()) return;
      std::deque<std::function<void()>> jobs;
      jobs.swap(state.jobs);
      lock.unlock();
      if (python_alive()) {
        const OnSdkThread on_sdk_thread;
        py::gil_scoped_acquire gil;
        for (auto& job : jobs)
          job();
        jobs.clear();  // what they hold of Python's, with the GIL
      }
      jobs.clear();
      lock.lock();
    }
  }

  const pid_t pid_;
  const std::shared_ptr<State> state_;
  std::unique_ptr<std::thread> thread_;  // under state_->mutex
};

// A call and its outcome as after() is given them, copied: the SDK's views last only as
// long as its after() call.
struct CallRecord {
  std::string service, method;
  std::map<std::string, std::string> headers;
  std::size_t payload_bytes = 0;
  bool stream = false;
  bool all = false;
  std::string trace_id;
  Status status = Status::ok;
  std::string message;
  std::size_t reply_bytes = 0;
  std::size_t chunks = 0;
  double duration = 0;
};

CallRecord record_of(const sagebus::CallInfo& call, const sagebus::CallEnd& end) {
  return CallRecord{std::string(call.service),
                    std::string(call.method),
                    call.headers,
                    call.payload_bytes,
                    call.stream,
                    call.all,
                    std::string(call.trace_id),
                    end.status,
                    std::string(end.message),
                    end.reply_bytes,
                    end.chunks,
                    std::chrono::duration<double>(end.duration).count()};
}

py::dict dict_of(const std::map<std::string, std::string>& headers) {
  py::dict out;
  for (const auto& [k, v] : headers)
    out[py::str(k)] = py::str(v);
  return out;
}

// Runs `fn` with the GIL held; what it raises is reported (sys.unraisablehook) as raised
// in `where`, never thrown: after() and a log sink must not throw into the SDK. Ctrl-C in
// there is not lost: it is raised again at the main thread's next signal check.
template <class F>
void reporting(const std::string& where, const F& fn) noexcept {
  try {
    fn();
  } catch (py::error_already_set& e) {
    if (e.matches(PyExc_KeyboardInterrupt)) {
      PyErr_SetInterrupt();
    } else {
      report(e, where.c_str());
    }
  } catch (const std::exception&) {  // e.g. bad_alloc: the call goes on without it
  }
}

// A Python interceptor (sagebus.Interceptor, or any object with before and after), as the
// package hands it over: (before or None, after or None, name), the methods it overrides.
class PyInterceptor {
 public:
  explicit PyInterceptor(const py::tuple& spec) {
    if (spec.size() != 3) throw py::type_error("an interceptor is (before, after, name)");
    if (!spec[0].is_none()) before_ = hold(spec[0]);
    if (!spec[1].is_none()) after_ = hold(spec[1]);
    name_ = spec[2].cast<std::string>();
    const py::module_ sagebus = py::module_::import("sagebus");
    call_info_ = hold(sagebus.attr("CallInfo"));
    call_end_ = hold(sagebus.attr("CallEnd"));
    refusal_ = hold(sagebus.attr("_interceptor_refusal"));
  }
  PyInterceptor(const PyInterceptor&) = delete;
  PyInterceptor& operator=(const PyInterceptor&) = delete;

  bool has_before() const { return before_ != nullptr; }
  bool has_after() const { return after_ != nullptr; }

  // Its before(), the GIL not held: the headers it leaves in call.headers go with the
  // call. A sagebus.Error it raises is the refusal returned. Anything else it raises is,
  // for a client (`service` false), thrown to the caller (error_already_set); for a
  // service, a refusal HANDLER_ERROR naming it.
  std::optional<sagebus::Error> before(sagebus::CallInfo& call, bool service) const {
    py::gil_scoped_acquire gil;
    try {
      py::object info =
          call_info_->get()(py::str(call.service.data(), call.service.size()),
                            py::str(call.method.data(), call.method.size()), dict_of(call.headers),
                            call.payload_bytes, call.stream, call.all,
                            py::str(call.trace_id.data(), call.trace_id.size()));
      if (!before_->get()(info).is_none()) {
        PyErr_SetString(PyExc_TypeError,
                        ("the before() of the interceptor " + name_ +
                         " returned something: it returns None, and refuses a call by raising "
                         "a sagebus.Error")
                            .c_str());
        throw py::error_already_set();
      }
      call.headers = headers_of(info.attr("headers"));
      return std::nullopt;
    } catch (py::error_already_set& e) {
      py::object why;
      try {
        why = refusal_->get()(e.value(), name_, service);
      } catch (py::error_already_set& inner) {
        if (!service) throw;
        return sagebus::Error(Status::handler_error, inner.what());
      }
      if (why.is_none()) throw;
      py::tuple t = why;
      return sagebus::Error(static_cast<Status>(t[0].cast<int>()), t[1].cast<std::string>());
    }
  }

  // Its after(), the GIL held; what it raises is reported.
  void after(const CallRecord& r) const {
    reporting("the after() of the sagebus interceptor " + name_, [&] {
      py::object info = call_info_->get()(r.service, r.method, dict_of(r.headers), r.payload_bytes,
                                          r.stream, r.all, r.trace_id);
      py::object end = call_end_->get()(static_cast<int>(r.status), r.message, r.reply_bytes,
                                        r.chunks, r.duration);
      after_->get()(info, end);
    });
  }

 private:
  // call.headers as before() left them: a mapping of str to str.
  std::map<std::string, std::string> headers_of(const py::handle& headers) const {
    std::map<std::string, std::string> out;
    if (!PyDict_Check(headers.ptr()) && !PyObject_HasAttrString(headers.ptr(), "items")) {
      PyErr_SetString(PyExc_TypeError,
                      ("the interceptor " + name_ + " left call.headers not a mapping").c_str());
      throw py::error_already_set();
    }
    for (auto item : py::dict(py::reinterpret_borrow<py::object>(headers))) {
      if (!PyUnicode_Check(item.first.ptr()) || !PyUnicode_Check(item.second.ptr())) {
        PyErr_SetString(PyExc_TypeError, ("the interceptor " + name_ +
                                          " left a header that is not str -> str in call.headers")
                                             .c_str());
        throw py::error_already_set();
      }
      out.emplace(item.first.cast<std::string>(), item.second.cast<std::string>());
    }
    return out;
  }

  Ref before_, after_;
  std::string name_;
  Ref call_info_, call_end_, refusal_;
};

// A Python interceptor as a client's.
class PyClientInterceptor final : public sagebus::Interceptor {
 public:
  PyClientInterceptor(std::shared_ptr<PyInterceptor> py, std::shared_ptr<AfterThread> thread)
      : py_(std::move(py)), thread_(std::move(thread)) {}
  std::optional<sagebus::Error> before(sagebus::CallInfo& call) override {
    note_call(call);
    if (!py_->has_before() || !python_alive()) return std::nullopt;
    return py_->before(call, false);
  }
  void after(const sagebus::CallInfo& call, const sagebus::CallEnd& end) override {
    if (!py_->has_after()) return;
    thread_->run(call, [py = py_, record = record_of(call, end)] { py->after(record); });
  }

 private:
  const std::shared_ptr<PyInterceptor> py_;
  const std::shared_ptr<AfterThread> thread_;
};

// A Python interceptor as a service's, on the service's worker threads.
class PyServiceInterceptor final : public sagebus::Interceptor {
 public:
  explicit PyServiceInterceptor(std::shared_ptr<PyInterceptor> py) : py_(std::move(py)) {}
  std::optional<sagebus::Error> before(sagebus::CallInfo& call) override {
    if (!py_->has_before() || !python_alive()) return std::nullopt;
    const OnSdkThread on_sdk_thread;
    try {
      return py_->before(call, true);
    } catch (const std::exception& e) {
      return sagebus::Error(Status::handler_error, e.what());
    }
  }
  void after(const sagebus::CallInfo& call, const sagebus::CallEnd& end) override {
    if (!py_->has_after() || !python_alive()) return;
    const CallRecord record = record_of(call, end);
    const OnSdkThread on_sdk_thread;
    py::gil_scoped_acquire gil;
    py_->after(record);
  }

 private:
  const std::shared_ptr<PyInterceptor> py_;
};

// The line the SDK's LoggingInterceptor wrote last on this thread (NativeLogging).
thread_local std::string t_log_line;

// sagebus.LoggingInterceptor: the SDK's LoggingInterceptor, whose lines go to standard
// error (no sink: no Python at all) or to a Python callable, called as a Python after()
// is (AfterThread; a service's on its worker thread).
class NativeLogging {
 public:
  NativeLogging(std::string label, py::object sink) {
    if (sink.is_none()) {
      lines_ = std::make_shared<sagebus::LoggingInterceptor>(std::move(label));
      return;
    }
    sink_ = hold(std::move(sink));
    lines_ = std::make_shared<sagebus::LoggingInterceptor>(
        std::move(label), [](std::string_view line) { t_log_line.assign(line); });
  }

  std::shared_ptr<sagebus::Interceptor> for_client(std::shared_ptr<AfterThread> thread) {
    if (!sink_) return lines_;
    return std::make_shared<Client>(lines_, sink_, std::move(thread));
  }
  std::shared_ptr<sagebus::Interceptor> for_service() {
    if (!sink_) return lines_;
    return std::make_shared<Service>(lines_, sink_);
  }

 private:
  // The line of a call: the SDK's interceptor writes it to t_log_line.
  static std::string line_of(sagebus::LoggingInterceptor& lines, const sagebus::CallInfo& call,
                             const sagebus::CallEnd& end) {
    lines.after(call, end);
    return std::exchange(t_log_line, {});
  }
  static void to_sink(const Ref& sink, const std::string& line) {
    reporting("the sink of a sagebus.LoggingInterceptor", [&] { sink->get()(line); });
  }

  class Client final : public sagebus::Interceptor {
   public:
    Client(std::shared_ptr<sagebus::LoggingInterceptor> lines, Ref sink,
           std::shared_ptr<AfterThread> thread)
        : lines_(std::move(lines)), sink_(std::move(sink)), thread_(std::move(thread)) {}
    std::optional<sagebus::Error> before(sagebus::CallInfo& call) override {
      note_call(call);
      return std::nullopt;
    }
    void after(const sagebus::CallInfo& call, const sagebus::CallEnd& end) override {
      thread_->run(call,
                   [sink = sink_, line = line_of(*lines_, call, end)] { to_sink(sink, line); });
    }

   private:
    const std::shared_ptr<sagebus::LoggingInterceptor> lines_;
    const Ref sink_;
    const std::shared_ptr<AfterThread> thread_;
  };

  class Service final : public sagebus::Interceptor {
   public:
    Service(std::shared_ptr<sagebus::LoggingInterceptor> lines, Ref sink)
        : lines_(std::move(lines)), sink_(std::move(sink)) {}
    void after(const sagebus::CallInfo& call, const sagebus::CallEnd& end) override {
      if (!python_alive()) return;
      const std::string line = line_of(*lines_, call, end);
      const OnSdkThread on_sdk_thread;
      py::gil_scoped_acquire gil;
      to_sink(sink_, line);
    }

   private:
    const std::shared_ptr<sagebus::LoggingInterceptor> lines_;
    const Ref sink_;
  };

  std::shared_ptr<sagebus::LoggingInterceptor> lines_;
  Ref sink_;
};

// The interceptors the package passes (Client(interceptors=...), Service(interceptors=...)):
// a MetricsInterceptor or a NativeLogging as they are, else a Python interceptor's
// (before, after, name). A client's (`client_after`: its AfterThread) run their Python
// after() there, a service's (nullptr) on its worker threads. The GIL held.
std::vector<std::shared_ptr<sagebus::Interceptor>> interceptors_of(
    const py::list& list, const std::shared_ptr<AfterThread>& client_after) {
  std::vector<std::shared_ptr<sagebus::Interceptor>> out;
  for (const auto& item : list) {
    if (py::isinstance<sagebus::MetricsInterceptor>(item)) {
      out.push_back(item.cast<std::shared_ptr<sagebus::MetricsInterceptor>>());
    } else if (py::isinstance<NativeLogging>(item)) {
      auto& logging = item.cast<NativeLogging&>();
      out.push_back(client_after ? logging.for_client(client_after) : logging.for_service());
    } else {
      auto py = std::make_shared<PyInterceptor>(item.cast<py::tuple>());
      if (client_after)
        out.push_back(std::make_shared<PyClientInterceptor>(std::move(py), client_after));
      else
        out.push_back(std::make_shared<PyServiceInterceptor>(std::move(py)));
    }
  }
  return out;
}

class NativeClient : public std::enable_shared_from_this<NativeClient> {
 public:
  // `after`: the interceptor thread of the interceptors in `options`.
  NativeClient(const sagebus::ClientOptions& options, std::shared_ptr<AfterThread> after)
      : pid_(::getpid()), after_(std::move(after)) {
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
    // Streams come and go by the thousand: forget those gone, whenever the list doubled.
    if (dependents_.size() >= 2 * kept_) {
      std::erase_if(dependents_, [](const auto& weak) { return weak.expired(); });
      kept_ = std::max<std::size_t>(dependents_.size(), 16);
    }
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
    after_->stop();  // after the calls' after()s, which ending the client ran
  }

  const pid_t pid_;
  const std::shared_ptr<AfterThread> after_;
  std::mutex mutex_;
  std::condition_variable idle_;
  int users_ = 0;
  bool closing_ = false;
  std::unique_ptr<sagebus::Client> client_;
  std::vector<std::weak_ptr<Dependent>> dependents_;
  std::size_t kept_ = 16;  // dependents_ after the last pruning (at least 16)
};

thread_local int NativeClient::t_uses = 0;

// Runs `wait(interrupted)`, a wait of the SDK's that asks `interrupted` every
// kSignalCheck, with the GIL released; `interrupted` asks Python for signals. A signal
// handler's exception (KeyboardInterrupt) stays set, and is raised once the wait ended;
// `on_signal` runs first, before the wait ends (a call cancels itself there, so that the
// broker and the service are told).
template <class Wait>
void interruptible(const Wait& wait, const std::function<void()>& on_signal = {}) {
  bool signalled = false;
  const std::function<bool()> interrupted = [&signalled, &on_signal] {
    py::gil_scoped_acquire gil;
    signalled = PyErr_CheckSignals() != 0;
    if (signalled && on_signal) on_signal();
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

// --- cancellation and call context --------------------------------------------------

using Clock = std::chrono::steady_clock;

// A steady_clock time as time.monotonic()'s seconds (both are CLOCK_MONOTONIC), and back.
double monotonic_of(Clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}
Clock::time_point time_point_of(double monotonic) {
  if (!std::isfinite(monotonic) || monotonic < 0 || monotonic > 1e12)
    throw py::value_error("a deadline must be a time.monotonic() time in seconds");
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(monotonic)));
}

// The trace id of a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"); empty for "".
std::string trace_id_of(const std::string& traceparent) {
  return traceparent.size() >= 35 ? traceparent.substr(3, 32) : std::string();
}

// Why `traceparent` is not a W3C traceparent, or nothing when it is (lower-case hex, ids
// not all zero; a version above 00 is taken by its first 55 characters).
std::optional<std::string> traceparent_problem(const std::string& traceparent) {
  const auto hex = [&](std::size_t from, std::size_t n, bool nonzero) {
    bool zero = true;
    for (std::size_t i = from; i < from + n; ++i) {
      const char c = traceparent[i];
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
      zero = zero && c == '0';
    }
    return !(nonzero && zero);
  };
  if (traceparent.size() < 55 || (traceparent.size() > 55 && traceparent.substr(0, 2) == "00") ||
      traceparent[2] != '-' || traceparent[35] != '-' || traceparent[52] != '-' ||
      !hex(0, 2, false) || traceparent.substr(0, 2) == "ff" || !hex(3, 32, true) ||
      !hex(36, 16, true) || !hex(53, 2, false))
    return "not a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>): " +
           traceparent;
  return std::nullopt;
}

// A traceparent that starts a trace: random ids (never all zero), sampled.
std::string new_traceparent() {
  thread_local std::mt19937_64 random(std::random_device{}() ^
                                      static_cast<std::uint64_t>(::getpid()) << 32);
  const auto hex = [](std::uint64_t v) {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
    return std::string(text);
  };
  const auto nonzero = [](std::uint64_t v) { return v == 0 ? std::uint64_t{1} : v; };
  return "00-" + hex(random()) + hex(nonzero(random())) + "-" + hex(nonzero(random())) + "-01";
}

// The token of one call: its own, so that cancelling the call (future.cancel(), a
// cancelled asyncio task, Ctrl-C) cancels that call alone; and cancelled with the token
// the caller passed (cancel=), if any. end() forgets that link once the call has ended,
// so that a long-lived token does not collect a registration per call.
class CallToken {
 public:
  explicit CallToken(const std::optional<sagebus::CancelToken>& outer) {
    if (!outer) return;
    outer_ = *outer;
    // The registration holds a copy of `outer` until end() forgets it (or it runs).
    registration_ =
        outer_->on_cancel([own = own_, outer = *outer]() mutable { own.cancel(outer.why()); });
  }
  CallToken(const CallToken&) = delete;
  CallToken& operator=(const CallToken&) = delete;
  ~CallToken() { end(); }
  const sagebus::CancelToken& own() const { return own_; }
  void end() {
    if (outer_ && registration_ != 0) outer_->forget(registration_);
    registration_ = 0;
  }

 private:
  sagebus::CancelToken own_;
  std::optional<sagebus::CancelToken> outer_;
  std::uint64_t registration_ = 0;
};

// What Client.call, call_async, acall and stream take from Python, as CallOptions.
struct CallArgs {
  double timeout = 5.0;
  bool wait_for_ready = false;
  bool idempotent = false;
  std::string routing_key;
  std::map<std::string, std::string> headers;
  std::optional<sagebus::CancelToken> cancel;
  std::optional<sagebus::CallContext> context;
  std::string traceparent;

  sagebus::CallOptions options() {
    sagebus::CallOptions o;
    o.timeout = millis(timeout);
    o.wait_for_ready = wait_for_ready;
    o.idempotent = idempotent;
    o.routing_key = std::move(routing_key);
    o.headers = std::move(headers);
    o.cancel = std::move(cancel);
    o.context = std::move(context);
    o.traceparent = std::move(traceparent);
    return o;
  }
};

// The package passes a call's options as one tuple: (timeout, wait_for_ready, idempotent,
// routing_key, headers, cancel, context, traceparent); cancel and context may be None.
CallArgs call_args(const py::tuple& t) {
  if (t.size() != 8) throw py::type_error("call options are an 8-tuple");
  CallArgs a;
  a.timeout = t[0].cast<double>();
  a.wait_for_ready = t[1].cast<bool>();
  a.idempotent = t[2].cast<bool>();
  a.routing_key = t[3].cast<std::string>();
  if (!t[4].is_none()) a.headers = t[4].cast<std::map<std::string, std::string>>();
  if (!t[5].is_none()) a.cancel = t[5].cast<sagebus::CancelToken>();
  if (!t[6].is_none()) a.context = t[6].cast<sagebus::CallContext>();
  a.traceparent = t[7].cast<std::string>();
  return a;
}

// Waits up to `timeout` (none: for ever) for `token` to be cancelled, with the GIL
// released, handling signals every kSignalCheck. Returns whether it is.
bool wait_cancelled(const sagebus::CancelToken& token, std::optional<double> timeout) {
  struct Flag {
    std::mutex mutex;
    std::condition_variable cv;
    bool set = false;
  };
  auto flag = std::make_shared<Flag>();
  const auto registration = token.on_cancel([flag] {
    {
      std::lock_guard lock(flag->mutex);
      flag->set = true;
    }
    flag->cv.notify_all();
  });
  struct Forget {
    const sagebus::CancelToken& token;
    std::uint64_t registration;
    ~Forget() { token.forget(registration); }
  } forget{token, registration};
  const auto until = timeout ? Clock::now() + millis(*timeout) : Clock::time_point::max();
  for (;;) {
    bool set;
    {
      py::gil_scoped_release nogil;
      std::unique_lock lock(flag->mutex);
      const auto slice = std::min(until, Clock::now() + kSignalCheck);
      set = flag->cv.wait_until(lock, slice, [&] { return flag->set; });
    }
    if (set) return true;
    if (Clock::now() >= until) return false;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

// --- subscriptions -------------------------------------------------------------------

// Its handler runs no more from the moment close() is asked for, even when the
// subscription itself ends later (asked from its own handler, it ends once that returns).
class NativeSubscription : public Dependent {
 public:
  explicit NativeSubscription(Ref handler) : handler_(std::move(handler)) {}
  ~NativeSubscription() override { close_on_drop(this); }
  void close() override {
    *closed_ = true;
    std::lock_guard lock(mutex_);
    subscription_.unsubscribe();
  }
  // Stops the handler at once; close() ends the subscription.
  void closing() { *closed_ = true; }
  // Set once close() is asked for: the handler checks it before every message.
  std::shared_ptr<const std::atomic<bool>> closed_flag() const { return closed_; }
  sagebus::Subscription& get() {
    check_process("Subscription");
    return subscription_;
  }
  void set(sagebus::Subscription s) { subscription_ = std::move(s); }
  bool closed() const { return *closed_; }

 private:
  std::shared_ptr<std::atomic<bool>> closed_ = std::make_shared<std::atomic<bool>>(false);
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

// The arguments every handler's Python function starts with: (method, payload, headers,
// deadline, context), where deadline is in time.monotonic()'s seconds (both are
// CLOCK_MONOTONIC) and context is the request's CallContext (a copy: the same deadline,
// trace and cancellation). The GIL held.
py::tuple request_args(const sagebus::Request& request) {
  py::dict headers;
  for (const auto& [k, v] : request.headers)
    headers[py::str(k)] = py::str(v);
  return py::make_tuple(py::str(request.method.data(), request.method.size()),
                        py::bytes(request.payload.data(), request.payload.size()), headers,
                        monotonic_of(request.deadline), py::cast(request.context));
}

// A Python handler's exception, as the caller's error (sagebus._handler_failure says
// which status and text). The GIL held.
sagebus::Error failure_of(py::error_already_set& e) {
  py::tuple why = py::module_::import("sagebus").attr("_handler_failure")(e.value());
  return sagebus::Error(static_cast<Status>(why[0].cast<int>()), why[1].cast<std::string>());
}

// A handler's Python function, called on a worker thread of the service as
// fn(method, payload, headers, deadline, context) -> bytes. Its exception becomes the
// caller's error.
sagebus::Handler python_handler(const Ref& fn) {
  return [fn](const sagebus::Request& request) -> std::string {
    if (!python_alive()) throw sagebus::Error(Status::unavailable, "the Python process is exiting");
    std::optional<sagebus::Error> failure;
    std::string reply;
    {
      const OnSdkThread on_sdk_thread;
      py::gil_scoped_acquire gil;
      try {
        py::object result = fn->get()(*request_args(request));
        reply = bytes_of(result, "a handler's reply");
      } catch (py::error_already_set& e) {
        failure.emplace(failure_of(e));
      } catch (const std::exception& e) {
        failure.emplace(Status::handler_error, e.what());
      }
    }
    if (failure) throw *failure;
    return reply;
  };
}

// A streaming handler's StreamWriter, for the package's code that writes what the
// handler yields (sagebus._write_chunks): valid while the handler runs, on its thread.
class NativeWriter {
 public:
  explicit NativeWriter(sagebus::StreamWriter& out) : out_(&out) {}
  // Sends one chunk with the GIL released, waiting for the caller's window; raises
  // Cancelled once the caller cancelled, DeadlineExceeded past the deadline.
  void write(const py::handle& chunk) {
    std::string bytes = bytes_of(chunk, "a chunk");
    if (out_ == nullptr)
      throw sagebus::Error(Status::invalid_argument,
                           "this stream's handler has returned: its writer is closed");
    sagebus::StreamWriter& out = *out_;
    py::gil_scoped_release nogil;
    out.write(bytes);
  }
  std::size_t written() const { return out_ ? out_->written() : written_; }
  void close() {
    if (out_) written_ = out_->written();
    out_ = nullptr;
  }

 private:
  sagebus::StreamWriter* out_;
  std::size_t written_ = 0;
};

// A streaming handler's Python function, called on a worker thread of the service as
// fn(method, payload, headers, deadline, context, writer); it writes the chunks itself.
// Its return ends the stream OK, its exception with the caller's error.
sagebus::StreamHandler python_stream_handler(const Ref& fn) {
  return [fn](const sagebus::Request& request, sagebus::StreamWriter& out) {
    if (!python_alive()) throw sagebus::Error(Status::unavailable, "the Python process is exiting");
    std::optional<sagebus::Error> failure;
    {
      const OnSdkThread on_sdk_thread;
      py::gil_scoped_acquire gil;
      auto writer = std::make_shared<NativeWriter>(out);
      try {
        py::tuple args = request_args(request);
        fn->get()(*args, writer);
      } catch (py::error_already_set& e) {
        failure.emplace(failure_of(e));
      } catch (const std::exception& e) {
        failure.emplace(Status::handler_error, e.what());
      }
      writer->close();
    }
    if (failure) throw *failure;
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

// --- what Python reads in order: a stream's chunks, a call_all's outcomes ------------

// Items a producer thread hands to Python readers, in order, then one end: OK, or a
// failure that reading raises; or a cancellation, which drops what it holds and which
// reading raises from then on. A reader waits in slices of kSignalCheck with the GIL
// released, handling signals between them (Ctrl-C), or has an event loop woken through
// an Inbox once something is there (watch). A producer that reads ahead of the readers
// waits for room (wait_for_room), counting what the queue holds with `cost`. Thread safe.
template <class T>
class ReadQueue {
 public:
  using Cost = std::size_t (*)(const T&);
  explicit ReadQueue(Cost cost = nullptr) : cost_(cost) {}

  // The producer's side. Waits until the queue holds under `cost` and under `items`, or
  // nothing; false, at once, when cancelled or stopped.
  bool wait_for_room(std::size_t cost, std::size_t items) {
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] {
      return stopped_ || cancelled_.has_value() || items_.empty() ||
             (held_ < cost && items_.size() < items);
    });
    return !stopped_ && !cancelled_;
  }
  // Ends every wait_for_room(), now and later.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    room_.notify_all();
  }
  // Dropped once cancelled.
  void push(T item) {
    Watcher watcher;
    {
      std::lock_guard lock(mutex_);
      if (cancelled_) return;
      held_ += cost_ != nullptr ? cost_(item) : 0;
      items_.push_back(std::move(item));
      watcher = std::exchange(watcher_, {});
    }
    ready_.notify_all();
    if (watcher.inbox) watcher.inbox->post(watcher.token, {});
  }
  void end(Status status, std::string message) {
    Watcher watcher;
    {
      std::lock_guard lock(mutex_);
      end_ = End{status, std::move(message)};
      watcher = std::exchange(watcher_, {});
    }
    ready_.notify_all();
    if (watcher.inbox) watcher.inbox->post(watcher.token, {});
  }
  // Unless it has ended or was cancelled: reading raises Cancelled with `why` from now on,
  // and what it holds is dropped. True when it did.
  bool cancel(const std::string& why) {
    Watcher watcher;
    {
      std::lock_guard lock(mutex_);
      if (end_ || cancelled_) return false;
      cancelled_ = why;
      items_.clear();
      held_ = 0;
      watcher = std::exchange(watcher_, {});
    }
    ready_.notify_all();
    room_.notify_all();
    if (watcher.inbox) watcher.inbox->post(watcher.token, {});
    return true;
  }

  // The readers' side. The next item, waiting for it in slices with the GIL released;
  // nothing at the end; raises the failure, or Cancelled.
  std::optional<T> next() {
    for (;;) {
      std::optional<T> taken;
      bool ended = false;
      {
        py::gil_scoped_release nogil;
        std::unique_lock lock(mutex_);
        ready_.wait_for(lock, kSignalCheck, [this] { return readable_(); });
        ended = take_(lock, taken);
      }
      if (taken) return taken;
      if (ended) return std::nullopt;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }
  // As next() without waiting: 0 with `taken` set, 1 when nothing is there yet, 2 at the
  // end.
  int poll(std::optional<T>& taken) {
    std::unique_lock lock(mutex_);
    const bool ended = take_(lock, taken);
    return taken ? 0 : ended ? 2 : 1;
  }
  // Posts `token` to `inbox` once something is there to read; false, and nothing
  // watched, when something is already there.
  bool watch(std::shared_ptr<Inbox> inbox, std::uint64_t token) {
    std::lock_guard lock(mutex_);
    if (readable_()) return false;
    watcher_ = Watcher{std::move(inbox), token};
    return true;
  }
  void unwatch() {
    Watcher watcher;  // released after the lock
    std::lock_guard lock(mutex_);
    watcher = std::exchange(watcher_, {});
  }
  // The items read.
  std::size_t read() {
    std::lock_guard lock(mutex_);
    return read_;
  }

 private:
  struct Watcher {
    std::shared_ptr<Inbox> inbox;
    std::uint64_t token = 0;
  };
  struct End {
    Status status;
    std::string message;
  };

  bool readable_() const { return cancelled_.has_value() || !items_.empty() || end_.has_value(); }

  // Under mutex_ (held by `lock`): moves the next item into `taken`, or says whether the
  // queue has ended OK; throws its failure, or Cancelled.
  bool take_(std::unique_lock<std::mutex>& lock, std::optional<T>& taken) {
    if (cancelled_) throw sagebus::Error(Status::cancelled, *cancelled_);
    if (!items_.empty()) {
      taken = std::move(items_.front());
      items_.pop_front();
      held_ -= cost_ != nullptr ? cost_(*taken) : 0;
      ++read_;
      lock.unlock();
      room_.notify_one();
      return false;
    }
    if (!end_) return false;
    if (end_->status != Status::ok) throw sagebus::Error(end_->status, end_->message);
    return true;
  }

  const Cost cost_;
  std::mutex mutex_;
  std::condition_variable ready_;  // readers wait for an item, the end or the cancellation
  std::condition_variable room_;   // the producer waits for room (wait_for_room)
  std::deque<T> items_;
  std::size_t held_ = 0;  // cost_ of items_
  std::optional<End> end_;
  std::optional<std::string> cancelled_;
  bool stopped_ = false;
  std::size_t read_ = 0;
  Watcher watcher_;
};

// --- streams -------------------------------------------------------------------------

// A stream's chunks for Python (sagebus.Stream). A pump thread of its own reads the SDK's
// Stream (whose next() waits for ever) into a ReadQueue: so that a reader waits in slices,
// handling signals (Ctrl-C), and an event loop is woken through its Inbox when a chunk or
// the end is there (watch). The pump reads ahead a quarter of the caller's window in bytes
// (at least one chunk, at most kPumpChunks), so that the SDK grants the service no more
// while the Python reader stalls: the service's writer stops at the window (plus what the
// pump holds, once the reader has read half a window), as in C++.
class NativeStream : public Dependent {
 public:
  NativeStream(sagebus::Stream stream, std::uint32_t window_bytes)
      : stream_(std::make_unique<sagebus::Stream>(std::move(stream))),
        read_ahead_(std::max<std::size_t>(1, window_bytes / 4)) {
    pump_ = std::make_unique<std::thread>([this] { pump_loop_(); });
  }
  ~NativeStream() override {
    if (forked()) {  // the parent's: its pump thread is not in this process
      (void)pump_.release();
      (void)stream_.release();
      return;
    }
    close_on_drop(this);
  }

  // The client closes (or Python dropped the stream): the stream is cancelled, its pump
  // joined and the SDK's Stream destroyed while the client still exists.
  void close() override {
    cancel_("the Client was closed");
    std::lock_guard close_lock(close_mutex_);
    chunks_.stop();
    if (pump_ && pump_->joinable()) pump_->join();
    std::lock_guard lock(stream_mutex_);
    stream_.reset();
  }

  // Gives the stream up: unless it has ended, the reader's next read raises Cancelled,
  // and the SDK cancels the call (the broker tells the instance).
  void cancel() {
    check_process("Stream");
    cancel_("the stream was cancelled by its reader");
  }

  // The next chunk; None at the end; raises the stream's error.
  py::object next() {
    check_process("Stream");
    auto chunk = chunks_.next();
    return chunk ? py::object(py::bytes(*chunk)) : py::object(py::none());
  }
  // As next() without waiting: (0, chunk), (1, None) when nothing is there yet, (2, None)
  // at the end; raises the stream's error.
  py::tuple poll() {
    check_process("Stream");
    std::optional<std::string> chunk;
    const int kind = chunks_.poll(chunk);
    return py::make_tuple(kind, chunk ? py::object(py::bytes(*chunk)) : py::object(py::none()));
  }
  bool watch(std::shared_ptr<Inbox> inbox, std::uint64_t token) {
    check_process("Stream");
    return chunks_.watch(std::move(inbox), token);
  }
  void unwatch() { chunks_.unwatch(); }
  std::size_t chunks() { return chunks_.read(); }

 private:
  static std::size_t size_of(const std::string& chunk) { return chunk.size(); }

  void cancel_(const std::string& why) {
    if (!chunks_.cancel(why)) return;
    std::lock_guard lock(stream_mutex_);
    if (stream_) stream_->cancel();  // wakes the pump: its next() throws CANCELLED
  }

  void pump_loop_() {
    // The program's signals are for its own threads (Python handles them on the main one).
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    // stream_ stays until close() has joined this thread.
    while (chunks_.wait_for_room(read_ahead_, kPumpChunks)) {
      try {
        auto chunk = stream_->next();
        if (!chunk) return chunks_.end(Status::ok, {});
        chunks_.push(std::move(*chunk));
      } catch (const sagebus::Error& e) {
        return chunks_.end(e.status(), e.message());
      } catch (const std::exception& e) {
        return chunks_.end(Status::internal, e.what());
      }
    }
  }

  static constexpr std::size_t kPumpChunks = 64;
  std::mutex close_mutex_;   // close() runs once at a time
  std::mutex stream_mutex_;  // stream_ between cancel_() and close()
  std::unique_ptr<sagebus::Stream> stream_;
  const std::size_t read_ahead_;  // bytes
  ReadQueue<std::string> chunks_{size_of};
  std::unique_ptr<std::thread> pump_;
};

// --- scatter-gather ------------------------------------------------------------------

// A call_all's outcomes for Python (sagebus.Gather): the SDK's call_all_async hands them
// over on the client's callback thread, in order (how many were asked, each instance's
// outcome, the end), into a ReadQueue that readers take from as a stream's. Every form of
// call_all in Python reads one, so that each wait handles signals.
class NativeGather : public Dependent {
 public:
  explicit NativeGather(std::shared_ptr<CallToken> token) : token_(std::move(token)) {}
  ~NativeGather() override { close_on_drop(this); }

  // The client closes, or Python dropped it: the call is cancelled.
  void close() override { cancel_("the Client was closed"); }
  // Gives the call up: unless it has ended, the next read raises Cancelled, and the broker
  // tells the instances still running it.
  void cancel() {
    check_process("Gather");
    cancel_("the call_all was cancelled by its reader");
  }

  // From the callback thread, in order.
  void on_asked(std::size_t asked) {
    std::lock_guard lock(mutex_);
    asked_ = asked;
  }
  void on_reply(sagebus::InstanceReply reply) { outcomes_.push(std::move(reply)); }
  void on_done(sagebus::Reply reply) { outcomes_.end(reply.status, std::move(reply.message)); }

  // The next instance's outcome, (instance, status, message, payload); None at the end;
  // raises the failure of the whole.
  py::object next() {
    check_process("Gather");
    auto outcome = outcomes_.next();
    return outcome ? py::object(tuple_of(*outcome)) : py::object(py::none());
  }
  // As next() without waiting: (0, outcome), (1, None) when none is there yet, (2, None)
  // at the end; raises the failure of the whole.
  py::tuple poll() {
    check_process("Gather");
    std::optional<sagebus::InstanceReply> outcome;
    const int kind = outcomes_.poll(outcome);
    return py::make_tuple(kind, outcome ? py::object(tuple_of(*outcome)) : py::object(py::none()));
  }
  bool watch(std::shared_ptr<Inbox> inbox, std::uint64_t token) {
    check_process("Gather");
    return outcomes_.watch(std::move(inbox), token);
  }
  void unwatch() { outcomes_.unwatch(); }

  // How many instances were asked; None until the broker said.
  std::optional<std::size_t> asked() {
    std::lock_guard lock(mutex_);
    return asked_;
  }
  std::size_t read() { return outcomes_.read(); }

 private:
  static py::tuple tuple_of(const sagebus::InstanceReply& r) {
    return py::make_tuple(r.instance, static_cast<int>(r.status), r.message, py::bytes(r.payload));
  }

  void cancel_(const std::string& why) {
    if (!outcomes_.cancel(why)) return;
    sagebus::CancelToken own = token_->own();
    own.cancel(why);  // the SDK ends the call; the broker tells the instances
  }

  const std::shared_ptr<CallToken> token_;
  std::mutex mutex_;  // asked_
  std::optional<std::size_t> asked_;
  ReadQueue<sagebus::InstanceReply> outcomes_;
};

// What sagebus.Stream and sagebus.Gather read alike (python/sagebus's _Reader): next,
// poll, watch, unwatch, and cancel with the GIL released.
template <class Reader>
py::class_<Reader, std::shared_ptr<Reader>> bind_reader(py::module_& module, const char* name) {
  py::class_<Reader, std::shared_ptr<Reader>> reader(module, name);
  reader.def("next", &Reader::next)
      .def("poll", &Reader::poll)
      .def("watch", &Reader::watch)
      .def("unwatch", &Reader::unwatch)
      .def("cancel", [](Reader& r) {
        py::gil_scoped_release nogil;
        r.cancel();
      });
  return reader;
}

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

  py::class_<sagebus::CancelToken>(module, "CancelToken",
                                   "Gives up the calls and streams made with it (cancel=), and "
                                   "those made within a context holding it.")
      .def(py::init<>())
      .def(
          "cancel",
          [](sagebus::CancelToken& t, std::string why) {
            py::gil_scoped_release nogil;  // what it runs is the SDK's: no Python
            t.cancel(std::move(why));
          },
          py::arg("why") = "cancelled by the caller",
          "Cancels the token and its children; the first call's `why` is what the calls made "
          "with it end with (Cancelled). Later calls do nothing.")
      .def_property_readonly("cancelled", &sagebus::CancelToken::cancelled)
      .def_property_readonly("why", &sagebus::CancelToken::why,
                             "Why it was cancelled; empty while it is not.")
      .def("child", &sagebus::CancelToken::child,
           "A token cancelled when this one is, which may also be cancelled on its own.")
      .def("wait", &wait_cancelled, py::arg("timeout") = py::none(),
           "Waits up to `timeout` seconds (None: for ever) for the token to be cancelled; "
           "returns whether it is. Ctrl-C interrupts it.")
      .def("_notify",
           [](const sagebus::CancelToken& t, std::shared_ptr<Inbox> inbox, std::uint64_t key) {
             return t.on_cancel([inbox = std::move(inbox), key] { inbox->post(key, {}); });
           })
      .def("_forget", &sagebus::CancelToken::forget)
      .def("__repr__", [](const sagebus::CancelToken& t) {
        return t.cancelled() ? "<sagebus.CancelToken cancelled: " + t.why() + ">"
                             : std::string("<sagebus.CancelToken>");
      });

  py::class_<sagebus::CallContext>(module, "CallContext",
                                   "What a chain of calls shares: one deadline, one trace, one "
                                   "cancellation.")
      .def(py::init([](std::optional<double> timeout, std::optional<double> deadline,
                       std::string traceparent, std::optional<sagebus::CancelToken> cancel) {
             sagebus::CallContext context;
             if (timeout && deadline)
               throw py::type_error("CallContext() takes timeout or deadline, not both");
             if (timeout) context.deadline = Clock::now() + millis(*timeout);
             if (deadline) context.deadline = time_point_of(*deadline);
             if (traceparent.empty()) {
               traceparent = new_traceparent();
             } else if (auto problem = traceparent_problem(traceparent)) {
               throw py::value_error(*problem);
             }
             context.traceparent = std::move(traceparent);
             if (cancel) context.cancel = *cancel;
             return context;
           }),
           py::kw_only(), py::arg("timeout") = py::none(), py::arg("deadline") = py::none(),
           py::arg("traceparent") = "", py::arg("cancel") = py::none())
      .def_property_readonly("deadline",
                             [](const sagebus::CallContext& c) -> std::optional<double> {
                               if (c.deadline == Clock::time_point::max()) return std::nullopt;
                               return monotonic_of(c.deadline);
                             })
      .def("time_left",
           [](const sagebus::CallContext& c) -> std::optional<double> {
             if (c.deadline == Clock::time_point::max()) return std::nullopt;
             return std::max(0.0, std::chrono::duration<double>(c.deadline - Clock::now()).count());
           })
      .def_property_readonly("traceparent",
                             [](const sagebus::CallContext& c) { return c.traceparent; })
      .def_property_readonly(
          "trace_id", [](const sagebus::CallContext& c) { return trace_id_of(c.traceparent); })
      .def_property_readonly("cancel", [](const sagebus::CallContext& c) { return c.cancel; })
      .def_property_readonly("cancelled",
                             [](const sagebus::CallContext& c) { return c.cancel.cancelled(); })
      .def("__repr__", [](const sagebus::CallContext& c) {
        std::string text = "<sagebus.CallContext trace " + trace_id_of(c.traceparent);
        if (c.deadline != Clock::time_point::max()) {
          char left[32];
          std::snprintf(left, sizeof left, "%.3f",
                        std::chrono::duration<double>(c.deadline - Clock::now()).count());
          text += std::string(", ") + left + " s left";
        }
        if (c.cancel.cancelled()) text += ", cancelled";
        return text + ">";
      });

  py::class_<NativeClient, std::shared_ptr<NativeClient>>(module, "Client")
      .def(py::init([](std::string endpoint, std::string name, double reconnect_min,
                       double reconnect_max, std::size_t max_pending,
                       std::size_t max_queued_publishes, std::size_t inbox_size, bool takeover,
                       std::string server_key, std::string client_key,
                       const py::list& interceptors) {
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
             auto after = std::make_shared<AfterThread>();
             o.interceptors = interceptors_of(interceptors, after);
             return std::make_shared<NativeClient>(o, std::move(after));
           }),
           py::arg("endpoint"), py::arg("name"), py::arg("reconnect_min"), py::arg("reconnect_max"),
           py::arg("max_pending"), py::arg("max_queued_publishes"), py::arg("inbox_size"),
           py::arg("takeover"), py::arg("server_key"), py::arg("client_key"),
           py::arg("interceptors") = py::list())
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
              const py::handle& payload, const py::tuple& call) {
             CallArgs args = call_args(call);
             const std::string bytes = bytes_of(payload, "the payload");
             // Its own token: Ctrl-C cancels the call in the broker too, not only the wait.
             CallToken token(args.cancel);
             args.cancel = token.own();
             const auto options = args.options();
             const auto use = c.use();
             sagebus::Client& client = use.client();
             // This thread waits on the socket itself (the SDK's fastest call).
             sagebus::Reply reply;
             const Calling calling;
             interruptible(
                 [&](const std::function<bool()>& interrupted) {
                   reply = client.call(service, method, bytes, options, interrupted, kSignalCheck);
                 },
                 [&token] {
                   sagebus::CancelToken own = token.own();
                   own.cancel("the caller was interrupted (KeyboardInterrupt)");
                 });
             return py::bytes(reply.payload);
           })
      .def("call_async",
           [](NativeClient& c, const std::string& service, const std::string& method,
              const py::handle& payload, const py::tuple& call, py::object done) {
             CallArgs args = call_args(call);
             const std::string bytes = bytes_of(payload, "the payload");
             auto token = std::make_shared<CallToken>(args.cancel);
             args.cancel = token->own();
             const auto options = args.options();
             const auto use = c.use();
             sagebus::Client& client = use.client();
             Ref callback = hold(std::move(done));
             {
               const Calling calling;
               py::gil_scoped_release nogil;
               client.call_async(service, method, bytes, options,
                                 [callback, token](sagebus::Reply reply) {
                                   token->end();
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
             }
             return token->own();  // cancels this call alone
           })
      .def("call_to_inbox",
           [](NativeClient& c, const std::string& service, const std::string& method,
              const py::handle& payload, const py::tuple& call, std::shared_ptr<Inbox> inbox,
              std::uint64_t key) {
             CallArgs args = call_args(call);
             const std::string bytes = bytes_of(payload, "the payload");
             auto token = std::make_shared<CallToken>(args.cancel);
             args.cancel = token->own();
             const auto options = args.options();
             const auto use = c.use();
             sagebus::Client& client = use.client();
             {
               const Calling calling;
               py::gil_scoped_release nogil;
               client.call_async(service, method, bytes, options,
                                 [inbox = std::move(inbox), key, token](sagebus::Reply reply) {
                                   token->end();
                                   inbox->post(key, std::move(reply));
                                 });
             }
             return token->own();
           })
      .def("stream",
           [](const std::shared_ptr<NativeClient>& c, const std::string& service,
              const std::string& method, const py::handle& payload, const py::tuple& call,
              double idle_timeout, std::uint32_t window_bytes) {
             CallArgs args = call_args(call);
             const std::string bytes = bytes_of(payload, "the payload");
             auto options = args.options();
             options.idle_timeout = millis(idle_timeout);
             options.window_bytes = window_bytes;
             const auto use = c->use();
             sagebus::Client& client = use.client();
             std::shared_ptr<NativeStream> stream;
             {
               const Calling calling;
               py::gil_scoped_release nogil;
               stream = std::make_shared<NativeStream>(
                   client.stream(service, method, bytes, options), window_bytes);
             }
             c->adopt(stream);
             return stream;
           })
      .def("call_all",
           [](const std::shared_ptr<NativeClient>& c, const std::string& service,
              const std::string& method, const py::handle& payload, const py::tuple& call) {
             CallArgs args = call_args(call);
             const std::string bytes = bytes_of(payload, "the payload");
             auto token = std::make_shared<CallToken>(args.cancel);
             args.cancel = token->own();
             const auto options = args.options();
             const auto use = c->use();
             sagebus::Client& client = use.client();
             auto gather = std::make_shared<NativeGather>(token);
             std::weak_ptr<NativeGather> weak = gather;  // dropped: cancelled, not kept
             {
               const Calling calling;
               py::gil_scoped_release nogil;
               client.call_all_async(
                   service, method, bytes, options,
                   [weak](std::size_t asked) {
                     if (auto g = weak.lock()) g->on_asked(asked);
                   },
                   [weak](sagebus::InstanceReply reply) {
                     if (auto g = weak.lock()) g->on_reply(std::move(reply));
                   },
                   [weak, token](sagebus::Reply reply) {
                     token->end();
                     if (auto g = weak.lock()) g->on_done(std::move(reply));
                   });
             }
             c->adopt(gather);
             return gather;
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
             subscription->set(client.subscribe(
                 pattern,
                 [fn, closed = subscription->closed_flag()](const sagebus::Message& m) {
                   if (!python_alive()) return;
                   const OnSdkThread on_sdk_thread;
                   py::gil_scoped_acquire gil;
                   if (*closed) return;
                   try {
                     fn->get()(m.topic, py::bytes(m.payload), m.missed_before);
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
             s->closing();
             close_from_here([s] { s->close(); });
           })
      .def_property_readonly("closed", &NativeSubscription::closed)
      .def_property_readonly("missed", [](NativeSubscription& s) { return s.get().missed(); })
      .def_property_readonly("handled", [](NativeSubscription& s) { return s.get().handled(); });

  py::class_<NativeService, std::shared_ptr<NativeService>>(module, "Service")
      .def(py::init([](const std::shared_ptr<NativeClient>& c, std::string name,
                       std::size_t max_inflight, std::size_t workers, std::string version,
                       int strategy, const py::list& interceptors) {
             sagebus::ServiceOptions o;
             o.max_inflight = max_inflight;
             o.workers = workers;
             o.version = std::move(version);
             o.strategy = static_cast<sagebus::Strategy>(strategy);
             o.interceptors = interceptors_of(interceptors, nullptr);
             const auto use = c->use();
             auto service = std::make_shared<NativeService>(use.client(), std::move(name), o);
             c->adopt(service);
             return service;
           }),
           py::arg("client"), py::arg("name"), py::arg("max_inflight"), py::arg("workers"),
           py::arg("version"), py::arg("strategy"), py::arg("interceptors") = py::list())
      .def("handle",
           [](NativeService& s, std::string method, py::object fn) {
             Ref handler = hold(std::move(fn));
             s.get()->handle(std::move(method), python_handler(handler));
             s.keep(std::move(handler));
           })
      .def("handle_stream",
           [](NativeService& s, std::string method, py::object fn) {
             Ref handler = hold(std::move(fn));
             s.get()->handle_stream(std::move(method), python_stream_handler(handler));
             s.keep(std::move(handler));
           })
      .def("handle_metrics",
           [](NativeService& s, std::string method,
              const std::shared_ptr<sagebus::MetricsInterceptor>& metrics) {
             s.get()->handle(std::move(method), metrics->handler());  // no Python: no GIL
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

  bind_reader<NativeStream>(module, "Stream")
      .def_property_readonly("chunks", &NativeStream::chunks);
  bind_reader<NativeGather>(module, "Gather")
      .def_property_readonly("asked", &NativeGather::asked)
      .def_property_readonly("read", &NativeGather::read);

  py::class_<NativeLogging, std::shared_ptr<NativeLogging>>(module, "LoggingInterceptor")
      .def(py::init<std::string, py::object>(), py::arg("label"), py::arg("sink"));

  {
    py::tuple buckets(sagebus::MetricsInterceptor::kBuckets.size());
    for (std::size_t i = 0; i < buckets.size(); ++i)
      buckets[i] = py::float_(sagebus::MetricsInterceptor::kBuckets[i]);
    module.attr("METRICS_BUCKETS") = buckets;
  }
  py::class_<sagebus::MetricsInterceptor, std::shared_ptr<sagebus::MetricsInterceptor>>(
      module, "MetricsInterceptor")
      .def(py::init([] { return std::make_shared<sagebus::MetricsInterceptor>(); }))
      // {"service.method": (buckets (not cumulative; the last +Inf), count, seconds,
      // {status: count})}
      .def("snapshot",
           [](const sagebus::MetricsInterceptor& m) {
             std::map<std::string, sagebus::MetricsInterceptor::Method> methods;
             {
               py::gil_scoped_release nogil;
               methods = m.snapshot();
             }
             py::dict out;
             for (const auto& [key, method] : methods) {
               py::list buckets;
               for (const auto n : method.buckets)
                 buckets.append(n);
               py::dict statuses;
               for (const auto& [status, n] : method.statuses)
                 statuses[py::int_(static_cast<int>(status))] = n;
               out[py::str(key)] = py::make_tuple(buckets, method.count, method.seconds, statuses);
             }
             return out;
           })
      .def("prometheus", [](const sagebus::MetricsInterceptor& m) {
        py::gil_scoped_release nogil;
        return m.prometheus();
      });

  py::class_<NativeWriter, std::shared_ptr<NativeWriter>>(module, "StreamWriter")
      .def("write", &NativeWriter::write)
      .def_property_readonly("written", &NativeWriter::written);

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
