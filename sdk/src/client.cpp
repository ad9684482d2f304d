#include "sagebus/client.hpp"

#include "connection.hpp"

namespace sagebus {

namespace {
detail::CallSpec make_spec(std::string_view service, std::string_view method,
                           std::string_view payload, const CallOptions& options) {
  return detail::CallSpec{std::string(service), std::string(method), std::string(payload), options};
}
}  // namespace

Client::Client(ClientOptions options)
    : connection_(std::make_unique<detail::Connection>(std::move(options))) {}

Client::~Client() = default;

Reply Client::call(std::string_view service, std::string_view method, std::string_view payload,
                   const CallOptions& options) {
  return call_async(service, method, payload, options).get();
}

std::future<Reply> Client::call_async(std::string_view service, std::string_view method,
                                      std::string_view payload, const CallOptions& options) {
  auto promise = std::make_shared<std::promise<Reply>>();
  auto future = promise->get_future();
  connection_->start_call(make_spec(service, method, payload, options), [promise](Reply reply) {
    if (reply.ok())
      promise->set_value(std::move(reply));
    else
      promise->set_exception(std::make_exception_ptr(Error(reply.status, reply.message)));
  });
  return future;
}

void Client::call_async(std::string_view service, std::string_view method, std::string_view payload,
                        const CallOptions& options, std::function<void(Reply)> done) {
  auto* connection = connection_.get();
  connection_->start_call(
      make_spec(service, method, payload, options),
      [connection, done = std::move(done)](Reply reply) mutable {
        connection->post_callback([done = std::move(done), reply = std::move(reply)]() mutable {
          done(std::move(reply));
        });
      });
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
