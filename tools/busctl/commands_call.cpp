// busctl call: one request to a service, its reply printed raw or as JSON; with --stream
// its chunks as they come, with --all every instance's outcome. SIGINT or SIGTERM while it
// waits cancels the call at the broker (and so at the instance).
#include <future>
#include <mutex>

#include "commands.hpp"
#include "encoding.hpp"
#include "render.hpp"
#include "sagebus/client.hpp"
#include "session.hpp"

namespace busctl {

namespace {

using namespace std::chrono_literals;

// Waits for `done`, cancelling `token` once `stop` is set; then returns the outcome.
sagebus::Reply wait_or_cancel(std::future<sagebus::Reply>& done, sagebus::CancelToken& token,
                              const std::atomic<bool>& stop) {
  while (done.wait_for(20ms) != std::future_status::ready)
    if (stop.load()) token.cancel("busctl was interrupted (SIGINT or SIGTERM)");
  return done.get();
}

void throw_unless_ok(const sagebus::Reply& reply) {
  if (!reply.ok()) throw sagebus::Error(reply.status, reply.message);
}

}  // namespace

void call(const Options& options, const CallFlags& flags, const std::string& service,
          const std::string& method, const std::string& payload, const std::atomic<bool>& stop,
          std::ostream& out) {
  Session session(options, &stop);
  sagebus::CancelToken token;
  sagebus::CallOptions call_options;
  call_options.timeout = session.left();
  call_options.headers = flags.headers;
  call_options.traceparent = flags.traceparent;
  call_options.idle_timeout = flags.idle_timeout;
  call_options.cancel = token;
  sagebus::Client& client = session.client();
  std::promise<sagebus::Reply> final_reply;
  auto done = final_reply.get_future();
  auto finish = [&](sagebus::Reply r) { final_reply.set_value(std::move(r)); };

  if (flags.stream) {
    std::mutex mutex;  // chunks are written on the client's callback thread
    client.stream_async(
        service, method, payload, call_options,
        [&](std::string_view chunk) {
          std::lock_guard lock(mutex);
          if (options.json)
            out << "{\"chunk\":true," << payload_json_member(chunk) << "}\n";
          else
            out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
          out.flush();
        },
        finish);
    const sagebus::Reply reply = wait_or_cancel(done, token, stop);
    throw_unless_ok(reply);
    if (options.json) out << "{\"status\":\"OK\"}\n";
    return;
  }
  if (flags.all) {
    std::mutex mutex;
    std::size_t asked = 0;
    std::vector<sagebus::InstanceReply> replies;
    client.call_all_async(
        service, method, payload, call_options,
        [&](std::size_t n) {
          std::lock_guard lock(mutex);
          asked = n;
        },
        [&](sagebus::InstanceReply r) {
          std::lock_guard lock(mutex);
          replies.push_back(std::move(r));
        },
        finish);
    const sagebus::Reply reply = wait_or_cancel(done, token, stop);
    throw_unless_ok(reply);
    std::lock_guard lock(mutex);
    out << (options.json ? gather_json(asked, replies) : gather_table(asked, replies));
    return;
  }
  client.call_async(service, method, payload, call_options, finish);
  const sagebus::Reply reply = wait_or_cancel(done, token, stop);
  throw_unless_ok(reply);
  if (options.json) {
    out << reply_json(reply);
    return;
  }
  out.write(reply.payload.data(), static_cast<std::streamsize>(reply.payload.size()));
  if (reply.payload.empty() || reply.payload.back() != '\n') out << '\n';
}

}  // namespace busctl
