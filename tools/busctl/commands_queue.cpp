// busctl queue put, get and size: the legacy named queues the broker keeps.
#include "commands.hpp"
#include "encoding.hpp"
#include "sagebus/legacy_queue.hpp"
#include "sagebus/status.hpp"
#include "session.hpp"

namespace busctl {

void queue_put(const Options& options, const std::string& name, const std::string& item,
               std::ostream& out) {
  Session session(options);
  sagebus::LegacyQueue queue(session.client(), name);
  queue.put(item, session.left());
  if (options.json)
    out << "{\"queue\":" << json_quote(name) << ",\"put\":true}\n";
  else
    out << "put on " << name << "\n";
}

void queue_get(const Options& options, const std::string& name, std::ostream& out) {
  Session session(options);
  // Declared after the session: its destructor acknowledges the item before the
  // connection closes, once the item was written.
  sagebus::LegacyQueue queue(session.client(), name);
  const auto item = queue.get(session.left());
  if (!item)
    throw sagebus::Error(
        sagebus::Status::deadline_exceeded,
        "no item in " + name + " within " + std::to_string(options.timeout.count()) + " ms");
  if (options.json) {
    out << "{\"queue\":" << json_quote(name) << "," << payload_json_member(*item) << "}\n";
  } else {
    out.write(item->data(), static_cast<std::streamsize>(item->size()));
    if (item->empty() || item->back() != '\n') out << '\n';
  }
  out.flush();
}

void queue_size(const Options& options, const std::string& name, std::ostream& out) {
  Session session(options);
  sagebus::LegacyQueue queue(session.client(), name);
  const std::size_t size = queue.size();
  if (options.json)
    out << "{\"queue\":" << json_quote(name) << ",\"size\":" << size << "}\n";
  else
    out << size << "\n";
}

}  // namespace busctl
