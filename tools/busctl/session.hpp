// busctl's connection to sage-busd: a sagebus::Client that has been welcomed, and the
// deadline of the command it serves.
//
// The constructor waits up to options.timeout for the broker's welcome and throws
// Error(UNAVAILABLE) naming the endpoint when it does not come, so that no command hangs
// on, or misreports, a broker that is down; or Error(CANCELLED) as soon as `stop` (if
// given) becomes true meanwhile. Not thread safe itself; the Client it holds is.
#pragma once

#include <atomic>
#include <chrono>
#include <ostream>
#include <string>
#include <string_view>

#include <google/protobuf/message_lite.h>

#include "commands.hpp"
#include "sagebus/client.hpp"

namespace busctl {

class Session {
 public:
  explicit Session(const Options& options, const std::atomic<bool>* stop = nullptr);

  sagebus::Client& client() noexcept { return client_; }
  // What is left of options.timeout, counted from before the connection; at least 1 ms,
  // so that it is always a valid SDK timeout.
  std::chrono::milliseconds left() const;

  // For the tails, called every few tens of ms: writes one line to `err` when the
  // connection is lost and one when it is back (the SDK reconnects by itself; a
  // connection whose name was taken over stays lost).
  void report_link(std::ostream& err);

 private:
  std::chrono::steady_clock::time_point deadline_;
  std::string endpoint_;
  bool was_connected_ = true;
  sagebus::Client client_;
};

// Calls `$broker`.`method` with `request` (a serialized admin.proto message, or empty)
// within what is left of the session's timeout, and parses the answer's payload into
// `answer`. Returns the reply (for its message). Throws the call's sagebus::Error, or
// Error(INTERNAL) when the payload is not an `answer`.
sagebus::Reply ask_broker(Session& session, std::string_view method, std::string_view request,
                          google::protobuf::MessageLite& answer);

}  // namespace busctl
