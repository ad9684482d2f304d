#include "sagebus/client.hpp"

#include <condition_variable>
#include <mutex>
#include <optional>

#include "client_request.hpp"
#include "interception.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/topic.hpp"
#include "sagebus/wire/traceparent.hpp"
#include "stream_core.hpp"
#include "subscription_core.hpp"

namespace sagebus {

namespace {

void check(std::optional<std::string> error) {
  if (error) throw Error(Status::invalid_argument, *error);
}

}  // namespace

namespace detail {

Outcome ask(Client& client, RequestSpec&& spec, const Interrupt* interrupt) {
  if (client.connection().on_io_thread())
    return failure(Status::invalid_argument,
                   "a synchronous request from a handler or callback on the client's I/O "
                   "thread (ServiceOptions::on_io_thread, ClientOptions::inline_callbacks) "
                   "would wait for that thread forever; use call_async, or another Client");
  return client.connection().call(std::move(spec), interrupt);
}

Outcome wait(Client& client, RequestSpec&& spec, const Interrupt* interrupt) {
  auto outcome = ask(client, std::move(spec), interrupt);
  if (outcome.status != Status::ok) throw Error(outcome.status, outcome.message);
  return outcome;
}

// A call's spec. Within a context it takes the context's deadline (its timeout is
// ignored: the chain shares one deadline) and a child of its traceparent; else its own
// traceparent, or a new trace.
detail::RequestSpec call_spec(std::string_view service, std::string_view method,
                              std::string_view payload, const CallOptions& options) {
  check(wire::check_name("service name", service));
  check(wire::check_name("method name", method));
  detail::RequestSpec spec;
  spec.service = std::string(service);
  spec.method = std::string(method);
  spec.options = options;
  if (const auto& context = options.context) {
    spec.traceparent = wire::child_traceparent(context->traceparent);
    if (context->deadline != detail::Clock::time_point::max()) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(context->deadline - detail::Clock::now());
      if (left.count() <= 0)
        throw Error(Status::deadline_exceeded,
                    "call to " + spec.service + "." + spec.method +
                        " not made: the deadline of the call it is made within has passed");
      spec.options.timeout = left;
      spec.deadline = context->deadline;
    }
  } else if (!options.traceparent.empty()) {
    check(wire::check_traceparent(options.traceparent));
    spec.traceparent = options.traceparent;
  } else {
    spec.traceparent = wire::new_traceparent();
  }
  spec.payload = zmq::message_t(payload.data(), payload.size());
  return spec;
}

}  // namespace detail

namespace {

detail::RequestSpec send_spec(std::string_view peer, std::string_view payload,
                              const SendOptions& options) {
  check(wire::check_name("peer name", peer));
  if (options.hold.count() < 0)
    throw Error(Status::invalid_argument, "SendOptions::hold must not be negative");
  detail::RequestSpec spec;
  spec.kind = wire::SEND;
  spec.target = std::string(peer);
  spec.payload = zmq::message_t(payload.data(), payload.size());
  spec.hold = options.hold;
  spec.options.timeout = options.timeout;
  return spec;
}

detail::Interrupt interrupt_of(std::function<bool()> interrupted, std::chrono::milliseconds every) {
  if (every.count() <= 0)
    throw Error(Status::invalid_argument, "the interval of an interruptible wait must be > 0");
  return detail::Interrupt{std::move(interrupted), every};
}

// A streamed call's spec, its options checked.
detail::RequestSpec stream_spec(std::string_view service, std::string_view method,
                                std::string_view payload, const CallOptions& options) {
  if (options.window_bytes == 0 || options.window_bytes > wire::kMaxStreamWindow)
    throw Error(Status::invalid_argument, "CallOptions::window_bytes must be between 1 and " +
                                              std::to_string(wire::kMaxStreamWindow) +
                                              " bytes, not " +
                                              std::to_string(options.window_bytes));
  if (options.idle_timeout.count() < 0)
    throw Error(Status::invalid_argument, "CallOptions::idle_timeout must not be negative");
  detail::RequestSpec spec = detail::call_spec(service, method, payload, options);
  spec.stream = true;
  return spec;
}

Reply to_reply(detail::Outcome&& o) {
  return Reply{o.status, std::move(o.message), std::move(o.payload)};
}

// Where a stream's final outcome goes: its core, after its interceptors' after().
detail::Done stream_done(std::shared_ptr<detail::StreamCore> core,
                         std::shared_ptr<detail::Interception> interception) {
  return detail::Done(
      [core = std::move(core), interception = std::move(interception)](detail::Outcome o) {
        if (interception) interception->end(o.status, o.message, core->bytes(), core->received());
        core->finish(std::move(o));
      });
}

}  // namespace

Client::Client(ClientOptions options)
    : connection_(std::make_unique<detail::Connection>(std::move(options))) {}

Client::~Client() = default;

Reply Client::call(std::string_view service, std::string_view method, std::string_view payload,
                   const CallOptions& options) {
  return call_(detail::call_spec(service, method, payload, options), nullptr);
}

Reply Client::call(std::string_view service, std::string_view method, std::string_view payload,
                   const CallOptions& options, std::function<bool()> interrupted,
                   std::chrono::milliseconds every) {
  const auto interrupt = interrupt_of(std::move(interrupted), every);
  return call_(detail::call_spec(service, method, payload, options), &interrupt);
}

Reply Client::call_(detail::RequestSpec&& spec, const detail::Interrupt* interrupt) {
  const auto interception = detail::Interception::begin(connection_->options().interceptors, spec);
  detail::Outcome outcome = detail::ask(*this, std::move(spec), interrupt);
  if (interception) interception->end(outcome);
  if (outcome.status != Status::ok) throw Error(outcome.status, outcome.message);
  return to_reply(std::move(outcome));
}

std::future<Reply> Client::call_async(std::string_view service, std::string_view method,
                                      std::string_view payload, const CallOptions& options) {
  auto promise = std::make_shared<std::promise<Reply>>();
  auto future = promise->get_future();
  try {
    auto spec = detail::call_spec(service, method, payload, options);
    auto interception = detail::Interception::begin(connection_->options().interceptors, spec);
    connection_->start(
        std::move(spec), detail::Done([promise, interception](detail::Outcome o) {
          if (interception) interception->end(o);
          if (o.status == Status::ok)
            promise->set_value(to_reply(std::move(o)));
          else
            promise->set_exception(std::make_exception_ptr(Error(o.status, o.message)));
        }));
  } catch (const Error&) {
    promise->set_exception(std::current_exception());
  }
  return future;
}

void Client::call_async(std::string_view service, std::string_view method, std::string_view payload,
                        const CallOptions& options, std::function<void(Reply)> done) {
  detail::RequestSpec spec;
  std::shared_ptr<detail::Interception> interception;
  try {
    spec = detail::call_spec(service, method, payload, options);
    interception = detail::Interception::begin(connection_->options().interceptors, spec);
  } catch (const Error& e) {
    // Never on the caller's thread, and not inline: nothing here holds the engine.
    return connection_->callback_thread().post(std::move(done), Reply{e.status(), e.message(), {}});
  }
  if (interception)
    done = [interception, done = std::move(done)](Reply r) {
      interception->end(r.status, r.message, r.payload.size());
      done(std::move(r));
    };
  connection_->start(std::move(spec), detail::Done(*connection_, std::move(done)));
}

Stream Client::stream(std::string_view service, std::string_view method, std::string_view payload,
                      const CallOptions& options) {
  detail::RequestSpec spec = stream_spec(service, method, payload, options);
  auto interception = detail::Interception::begin(connection_->options().interceptors, spec);
  auto core = std::make_shared<detail::StreamCore>(*connection_, options.window_bytes);
  spec.control = core;
  connection_->start(std::move(spec), stream_done(core, std::move(interception)));
  return Stream(std::move(core));
}

void Client::stream_async(std::string_view service, std::string_view method,
                          std::string_view payload, const CallOptions& options,
                          std::function<void(std::string_view)> on_chunk,
                          std::function<void(Reply)> done) {
  if (!on_chunk || !done)
    throw Error(Status::invalid_argument, "stream_async needs both on_chunk and done");
  detail::RequestSpec spec;
  std::shared_ptr<detail::Interception> interception;
  try {
    spec = stream_spec(service, method, payload, options);
    interception = detail::Interception::begin(connection_->options().interceptors, spec);
  } catch (const Error& e) {
    return connection_->callback_thread().post(std::move(done), Reply{e.status(), e.message(), {}});
  }
  auto core = std::make_shared<detail::StreamCore>(*connection_, options.window_bytes,
                                                   std::move(on_chunk), std::move(done));
  spec.control = core;
  connection_->start(std::move(spec), stream_done(core, std::move(interception)));
}

std::size_t Client::publish(std::string_view topic, std::string_view payload,
                            const PublishOptions& options) {
  // Publishers repeat a few topics: the last one this thread found valid is not checked
  // again (validity depends on the topic alone).
  thread_local std::string last_valid_topic;
  if (topic.empty() || topic != last_valid_topic) {
    check(wire::check_topic(topic));
    last_valid_topic.assign(topic);
  }
  if (!options.confirm) {
    connection_->publish(topic, payload, options.timeout);
    return 0;
  }
  detail::RequestSpec spec;
  spec.kind = wire::PUBLISH;
  spec.target = std::string(topic);
  spec.payload = zmq::message_t(payload.data(), payload.size());
  spec.options.timeout = options.timeout;
  return detail::wait(*this, std::move(spec)).count;
}

Subscription Client::subscribe(std::string_view pattern, MessageHandler handler,
                               const SubscribeOptions& options) {
  check(wire::check_pattern(pattern));
  if (!handler)
    throw Error(Status::invalid_argument,
                "the handler of subscription " + std::string(pattern) + " is empty");
  if (options.window == 0)
    throw Error(Status::invalid_argument, "SubscribeOptions::window must be at least 1");
  auto core = std::make_shared<detail::SubscriptionCore>(*connection_, std::string(pattern),
                                                         std::move(handler), options.window);
  core->start();
  connection_->add_subscription(core);
  return Subscription(std::move(core));
}

void Client::send(std::string_view peer, std::string_view payload, const SendOptions& options) {
  detail::wait(*this, send_spec(peer, payload, options));
}

void Client::send(std::string_view peer, std::string_view payload, const SendOptions& options,
                  std::function<bool()> interrupted, std::chrono::milliseconds every) {
  const auto interrupt = interrupt_of(std::move(interrupted), every);
  detail::wait(*this, send_spec(peer, payload, options), &interrupt);
}

std::optional<Message> Client::receive(std::chrono::milliseconds timeout) {
  return connection_->receive(timeout);
}

ClientStats Client::stats() const {
  return ClientStats{.late_replies = connection_->late_replies()};
}

std::optional<Error> Client::connection_error() const {
  return connection_->connection_error();
}

bool Client::connected() const {
  return connection_->connected();
}

bool Client::wait_connected(std::chrono::milliseconds timeout) const {
  return connection_->wait_connected(timeout);
}

const ClientOptions& Client::options() const noexcept {
  return connection_->options();
}

}  // namespace sagebus
