#include "session.hpp"

#include <algorithm>

#include "sagebus/status.hpp"
#include "sagebus/wire/frame.hpp"

namespace busctl {
namespace {

sagebus::ClientOptions client_options(const Options& options) {
  sagebus::ClientOptions out;
  out.endpoint = options.endpoint;
  out.name = options.name;  // empty: the SDK's unique "<program>-<pid>-<n>"
  out.takeover = options.takeover;
  out.client_key = options.key;
  out.server_key = options.server_key;
  return out;
}

}  // namespace

Session::Session(const Options& options, const std::atomic<bool>* stop)
    : deadline_(std::chrono::steady_clock::now() + options.timeout),
      endpoint_(options.endpoint),
      client_(client_options(options)) {
  // Requests made before the broker's welcome fail UNAVAILABLE at once; say why instead.
  // Waits in slices so that a tail interrupted while connecting stops at once.
  constexpr std::chrono::milliseconds kSlice{50};
  while (std::chrono::steady_clock::now() < deadline_) {
    if (client_.wait_connected(std::min(left(), kSlice))) return;
    // A refusal (the name is taken, the key refused) will not go away by waiting: say so
    // at once.
    if (auto refused = client_.connection_error();
        refused && (refused->status() == sagebus::Status::permission_denied ||
                    refused->status() == sagebus::Status::unauthenticated))
      throw *refused;
    if (stop && stop->load())
      throw sagebus::Error(sagebus::Status::cancelled,
                           "interrupted before sage-busd at " + options.endpoint + " answered");
  }
  if (client_.connected()) return;
  throw sagebus::Error(sagebus::Status::unavailable,
                       "cannot reach sage-busd at " + options.endpoint + " within " +
                           std::to_string(options.timeout.count()) +
                           " ms: is it running? (sage-busd --endpoint " + options.endpoint + ")");
}

std::chrono::milliseconds Session::left() const {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline_ - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

void Session::report_link(std::ostream& err) {
  const bool connected = client_.connected();
  if (connected == was_connected_) return;
  was_connected_ = connected;
  if (connected)
    err << "connected to sage-busd at " << endpoint_ << " again" << std::endl;
  else
    err << "lost the connection to sage-busd at " << endpoint_
        << " (it stopped, or another connection took over the name " << client_.options().name
        << ")" << std::endl;
}

sagebus::Reply ask_broker(Session& session, std::string_view method, std::string_view request,
                          google::protobuf::MessageLite& answer) {
  sagebus::CallOptions call_options;
  call_options.timeout = session.left();
  sagebus::Reply reply =
      session.client().call(sagebus::wire::kBrokerService, method, request, call_options);
  if (!answer.ParseFromString(reply.payload))
    throw sagebus::Error(sagebus::Status::internal, "the broker's answer to " +
                                                        std::string(sagebus::wire::kBrokerService) +
                                                        "." + std::string(method) + " (" +
                                                        std::to_string(reply.payload.size()) +
                                                        " bytes) is not a " + answer.GetTypeName());
  return reply;
}

}  // namespace busctl
