#include "session.hpp"

#include <algorithm>

#include "sagebus/status.hpp"

namespace busctl {
namespace {

sagebus::ClientOptions client_options(const Options& options) {
  sagebus::ClientOptions out;
  out.endpoint = options.endpoint;
  out.name = options.name;  // empty: the SDK's unique "<program>-<pid>-<n>"
  out.takeover = options.takeover;
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
    if (stop && stop->load())
      throw sagebus::Error(sagebus::Status::cancelled,
                           "interrupted before sage-busd at " + options.endpoint + " answered");
  }
  if (client_.connected()) return;
  std::string why = "cannot reach sage-busd at " + options.endpoint + " within " +
                    std::to_string(options.timeout.count()) +
                    " ms: is it running? (sage-busd --endpoint " + options.endpoint + ")";
  // The SDK does not say why it was not welcomed; a name in use is the other cause.
  if (!options.name.empty() && !options.takeover)
    why += "; or is the name '" + options.name +
           "' used by another connection? (--takeover replaces it)";
  throw sagebus::Error(sagebus::Status::unavailable, why);
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

}  // namespace busctl
