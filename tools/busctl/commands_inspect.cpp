// busctl status, services, clients, topics, queues, calls: one request to `$broker` each, its
// answer decoded from admin.proto and printed as a table or JSON; busctl reload and drain:
// one request each, its answer's message printed; busctl store compact: its answer's
// message and the store's figures.
#include <algorithm>
#include <string>
#include <string_view>

#include "commands.hpp"
#include "render.hpp"
#include "sagebus/admin.pb.h"
#include "sagebus/client.hpp"
#include "sagebus/wire/frame.hpp"
#include "session.hpp"

namespace busctl {
namespace {

template <class Message>
Message ask_broker(const Options& options, std::string_view method) {
  Session session(options);
  Message message;
  busctl::ask_broker(session, method, "", message);
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

void clients(const Options& options, std::ostream& out) {
  const auto list = ask_broker<sagebus::admin::ClientList>(options, "clients");
  out << (options.json ? message_json(list) : clients_table(list));
}

void topics(const Options& options, std::ostream& out) {
  const auto list = ask_broker<sagebus::admin::TopicList>(options, "topics");
  out << (options.json ? message_json(list) : topics_table(list));
}

void calls(const Options& options, const std::string& service, std::ostream& out) {
  auto list = ask_broker<sagebus::admin::CallList>(options, "calls");
  if (!service.empty()) {
    auto* calls = list.mutable_calls();
    calls->erase(std::remove_if(calls->begin(), calls->end(),
                                [&](const auto& call) { return call.service() != service; }),
                 calls->end());
  }
  out << (options.json ? message_json(list) : calls_table(list));
}

void queues(const Options& options, std::ostream& out) {
  const auto list = ask_broker<sagebus::admin::QueueList>(options, "queues");
  out << (options.json ? message_json(list) : queues_table(list));
}

namespace {

void ask_broker_to(const Options& options, std::string_view method, std::ostream& out) {
  Session session(options);
  sagebus::CallOptions call_options;
  call_options.timeout = session.left();
  const sagebus::Reply reply =
      session.client().call(sagebus::wire::kBrokerService, method, "", call_options);
  out << reply.message << "\n";
}

}  // namespace

void store_compact(const Options& options, std::ostream& out) {
  Session session(options);
  sagebus::admin::StoreStatus store;
  const sagebus::Reply reply = ask_broker(session, "store.compact", "", store);
  // A broker that answers without the StoreStatus: its figures from status instead.
  if (reply.payload.empty()) {
    sagebus::admin::BrokerStatus status;
    ask_broker(session, "status", "", status);
    store = status.store();
  }
  if (options.json)
    out << message_json(store);
  else
    out << reply.message << "\n" << store_line(store);
}

void reload(const Options& options, std::ostream& out) {
  ask_broker_to(options, "reload", out);
}

void drain(const Options& options, std::ostream& out) {
  ask_broker_to(options, "drain", out);
}

}  // namespace busctl
