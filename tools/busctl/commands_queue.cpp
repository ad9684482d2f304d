// busctl queue put, get, size and declare --transient: the legacy named queues the broker
// keeps, through the SDK; queue stat, peek and purge: through the broker's own service,
// `$broker` (admin.proto).
#include "commands.hpp"
#include "encoding.hpp"
#include "render.hpp"
#include "sagebus/admin.pb.h"
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

namespace {

std::string queue_request(const std::string& name, std::uint32_t count = 0) {
  sagebus::admin::QueueRequest request;
  request.set_name(name);
  request.set_count(count);
  return request.SerializeAsString();
}

sagebus::Error no_store_error(const std::string& name) {
  return sagebus::Error(sagebus::Status::unavailable,
                        "queue '" + name +
                            "' cannot be durable: the broker runs without a store (sage-busd "
                            "--store PATH); declare it --transient");
}

}  // namespace

void queue_stat(const Options& options, const std::string& name, std::ostream& out) {
  Session session(options);
  sagebus::admin::QueueInfo info;
  ask_broker(session, "queue.stat", queue_request(name), info);
  out << (options.json ? message_json(info) : queue_info_text(info));
}

void queue_peek(const Options& options, const std::string& name, std::uint32_t count,
                std::ostream& out) {
  Session session(options);
  sagebus::admin::QueueItems items;
  ask_broker(session, "queue.peek", queue_request(name, count), items);
  out << (options.json ? queue_items_json(items) : queue_items_table(items));
}

void queue_purge(const Options& options, const std::string& name, std::ostream& out) {
  Session session(options);
  sagebus::admin::QueuePurged purged;
  ask_broker(session, "queue.purge", queue_request(name), purged);
  if (options.json)
    out << "{\"queue\":" << json_quote(name) << ",\"purged\":" << purged.items() << "}\n";
  else
    out << "purged " << purged.items() << (purged.items() == 1 ? " item from " : " items from ")
        << name << "\n";
}

void queue_declare(const Options& options, const std::string& name, bool transient,
                   std::ostream& out) {
  Session session(options);
  if (transient) {
    // The constructor declares it, and throws what the broker refused.
    sagebus::LegacyQueue queue(session.client(), name, sagebus::QueueOptions{.transient = true});
    if (options.json)
      out << "{\"queue\":" << json_quote(name) << ",\"durable\":false}\n";
    else
      out << "declared " << name << " transient: its items live in the broker's memory only\n";
    return;
  }
  // Durable is the default with a store: nothing to declare, only to check.
  sagebus::LegacyQueue checked_name(session.client(), name);  // throws for a bad name
  sagebus::admin::QueueInfo info;
  bool exists = true;
  try {
    ask_broker(session, "queue.stat", queue_request(name), info);
  } catch (const sagebus::Error& e) {
    if (e.status() != sagebus::Status::not_found) throw;
    exists = false;
  }
  if (!exists || !info.durable()) {
    sagebus::admin::BrokerStatus status;
    ask_broker(session, "status", "", status);
    if (status.store().path().empty()) throw no_store_error(name);
    if (exists)
      throw sagebus::Error(sagebus::Status::invalid_argument,
                           "queue '" + name +
                               "' was declared transient: its items live in the broker's "
                               "memory only, and busctl cannot declare it durable");
  }
  if (options.json)
    out << "{\"queue\":" << json_quote(name)
        << ",\"durable\":true,\"exists\":" << (exists ? "true" : "false") << "}\n";
  else if (exists)
    out << name << " is durable: its items are in the broker's store\n";
  else
    out << name << " does not exist yet: it will be created durable by its first put or get\n";
}

}  // namespace busctl
