#include "commands.hpp"

#include <algorithm>

#include "render.hpp"
#include "sagebus/admin.pb.h"
#include "sagebus/client.hpp"
#include "sagebus/status.hpp"
#include "sagebus/wire/frame.hpp"

namespace busctl {
namespace {

using std::chrono::milliseconds;

// One call on a fresh connection, all within options.timeout.
sagebus::Reply round_trip(const Options& options, std::string_view service, std::string_view method,
                          std::string_view payload) {
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  sagebus::ClientOptions client_options;
  client_options.endpoint = options.endpoint;
  sagebus::Client client(client_options);
  // Calls made before the broker's welcome fail UNAVAILABLE at once; say why instead.
  if (!client.wait_connected(options.timeout))
    throw sagebus::Error(sagebus::Status::unavailable,
                         "cannot reach sage-busd at " + options.endpoint + " within " +
                             std::to_string(options.timeout.count()) +
                             " ms: is it running? (sage-busd --endpoint " + options.endpoint + ")");
  sagebus::CallOptions call_options;
  const auto left =
      std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  call_options.timeout = std::max(left, milliseconds(1));
  return client.call(service, method, payload, call_options);
}

template <class Message>
Message ask_broker(const Options& options, std::string_view method) {
  const sagebus::Reply reply = round_trip(options, sagebus::wire::kBrokerService, method, "");
  Message message;
  if (!message.ParseFromString(reply.payload))
    throw sagebus::Error(sagebus::Status::internal,
                         "the broker's answer to " + std::string(sagebus::wire::kBrokerService) +
                             "." + std::string(method) + " (" +
                             std::to_string(reply.payload.size()) + " bytes) is not a " +
                             message.GetTypeName());
  return message;
}

}  // namespace

void status(const Options& options, std::ostream& out) {
  const auto status = ask_broker<sagebus::admin::BrokerStatus>(options, "status");
  out << (options.json ? message_json(status) : status_table(status));
}

void services(const Options& options, std::ostream& out) {
  const auto list = ask_broker<sagebus::admin::ServiceList>(options, "services");
  out << (options.json ? message_json(list) : services_table(list));
}

void call(const Options& options, const std::string& service, const std::string& method,
          const std::string& payload, std::ostream& out) {
  const sagebus::Reply reply = round_trip(options, service, method, payload);
  if (options.json) {
    out << reply_json(reply);
    return;
  }
  out.write(reply.payload.data(), static_cast<std::streamsize>(reply.payload.size()));
  if (reply.payload.empty() || reply.payload.back() != '\n') out << '\n';
}

}  // namespace busctl
