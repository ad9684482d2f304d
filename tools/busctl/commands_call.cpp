// busctl call: one request to a service, its reply printed raw or as JSON.
#include "commands.hpp"
#include "render.hpp"
#include "sagebus/client.hpp"
#include "session.hpp"

namespace busctl {

void call(const Options& options, const std::string& service, const std::string& method,
          const std::string& payload, std::ostream& out) {
  Session session(options);
  sagebus::CallOptions call_options;
  call_options.timeout = session.left();
  const sagebus::Reply reply = session.client().call(service, method, payload, call_options);
  if (options.json) {
    out << reply_json(reply);
    return;
  }
  out.write(reply.payload.data(), static_cast<std::streamsize>(reply.payload.size()));
  if (reply.payload.empty() || reply.payload.back() != '\n') out << '\n';
}

}  // namespace busctl
