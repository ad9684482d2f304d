// busctl send and busctl receive: point-to-point messages between named connections.
#include "commands.hpp"
#include "encoding.hpp"
#include "render.hpp"
#include "sagebus/client.hpp"
#include "session.hpp"

namespace busctl {
namespace {

// How often receive looks at `stop`: signals only set that flag.
constexpr std::chrono::milliseconds kStopPoll{50};

}  // namespace

void send(const Options& options, const std::string& peer, const std::string& payload,
          std::chrono::milliseconds hold, std::ostream& out) {
  Session session(options);
  sagebus::SendOptions send_options;
  send_options.hold = hold;
  // The SDK waits for the hold plus this: the peer has the whole hold to connect, and
  // then what is left of the command's timeout to take the message.
  send_options.timeout = session.left();
  session.client().send(peer, payload, send_options);
  if (options.json)
    out << "{\"peer\":" << json_quote(peer) << ",\"delivered\":true}\n";
  else
    out << "delivered to " << peer << "\n";
}

void receive(const Options& options, std::uint64_t count, const std::atomic<bool>& stop,
             std::ostream& out, std::ostream& err) {
  Session session(options, &stop);
  err << "receiving messages sent to " << session.client().options().name << std::endl;
  for (std::uint64_t printed = 0; (count == 0 || printed < count) && !stop.load() && out;) {
    const auto message = session.client().receive(kStopPoll);
    session.report_link(err);
    if (!message) continue;
    out << (options.json ? received_json(*message) : received_line(*message)) << std::flush;
    ++printed;
  }
}

}  // namespace busctl
