#include "render.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

#include "encoding.hpp"
#include "sagebus/status.hpp"
#include "sagebus/wire/frame.hpp"

namespace busctl {

std::string aligned(const std::vector<Row>& rows) {
  std::vector<std::size_t> widths;
  for (const Row& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i)
      widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const Row& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out.append(widths[i] - row[i].size() + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

namespace {

std::string or_dash(std::string text) {
  return text.empty() ? "-" : text;
}

std::string joined(const google::protobuf::RepeatedPtrField<std::string>& items) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += ",";
    out += item;
  }
  return out;
}

// One value of a singular or repeated scalar field, as text.
std::string field_text(const google::protobuf::Message& message,
                       const google::protobuf::FieldDescriptor& field, int index) {
  using FD = google::protobuf::FieldDescriptor;
  const auto& r = *message.GetReflection();
  const bool repeated = field.is_repeated();
  switch (field.cpp_type()) {
    case FD::CPPTYPE_INT32:
      return std::to_string(repeated ? r.GetRepeatedInt32(message, &field, index)
                                     : r.GetInt32(message, &field));
    case FD::CPPTYPE_INT64:
      return std::to_string(repeated ? r.GetRepeatedInt64(message, &field, index)
                                     : r.GetInt64(message, &field));
    case FD::CPPTYPE_UINT32:
      return std::to_string(repeated ? r.GetRepeatedUInt32(message, &field, index)
                                     : r.GetUInt32(message, &field));
    case FD::CPPTYPE_UINT64:
      return std::to_string(repeated ? r.GetRepeatedUInt64(message, &field, index)
                                     : r.GetUInt64(message, &field));
    case FD::CPPTYPE_BOOL:
      return (repeated ? r.GetRepeatedBool(message, &field, index) : r.GetBool(message, &field))
                 ? "true"
                 : "false";
    case FD::CPPTYPE_ENUM:
      return (repeated ? r.GetRepeatedEnum(message, &field, index) : r.GetEnum(message, &field))
          ->name();
    case FD::CPPTYPE_STRING:
      return repeated ? r.GetRepeatedString(message, &field, index) : r.GetString(message, &field);
    case FD::CPPTYPE_DOUBLE:
      return std::to_string(repeated ? r.GetRepeatedDouble(message, &field, index)
                                     : r.GetDouble(message, &field));
    case FD::CPPTYPE_FLOAT:
      return std::to_string(repeated ? r.GetRepeatedFloat(message, &field, index)
                                     : r.GetFloat(message, &field));
    case FD::CPPTYPE_MESSAGE:
      break;  // flatten() recurses into messages
  }
  return {};
}

// Appends one row per scalar field of `message`, recursing into nested messages.
void flatten(const google::protobuf::Message& message, const std::string& prefix,
             std::vector<Row>& rows) {
  const auto& descriptor = *message.GetDescriptor();
  const auto& reflection = *message.GetReflection();
  for (int f = 0; f < descriptor.field_count(); ++f) {
    const auto& field = *descriptor.field(f);
    const std::string key = prefix + field.name();
    if (field.cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!field.is_repeated()) flatten(reflection.GetMessage(message, &field), key + ".", rows);
      continue;  // the admin API has no repeated messages at this level
    }
    std::string value;
    if (field.is_repeated()) {
      for (int i = 0; i < reflection.FieldSize(message, &field); ++i)
        value += (i > 0 ? "," : "") + field_text(message, field, i);
    } else {
      value = field_text(message, field, 0);
    }
    rows.push_back({key, or_dash(std::move(value))});
  }
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string status_table(const sagebus::admin::BrokerStatus& status) {
  std::vector<Row> rows;
  flatten(status, "", rows);
  std::string out = aligned(rows);
  out += "\n" + store_line(status.store());
  if (status.limits().empty()) return out;  // an older broker
  std::vector<Row> limits{{"LIMIT", "VALUE", "REFUSED"}};
  for (const auto& limit : status.limits())
    limits.push_back(
        {limit.name(), std::to_string(limit.value()), std::to_string(limit.refusals())});
  return out + "\n" + aligned(limits);
}

std::string services_table(const sagebus::admin::ServiceList& services) {
  std::vector<Row> rows{{"SERVICE", "STRATEGY", "INSTANCE", "CLIENT", "METHODS", "IN-FLIGHT/MAX",
                         "SERVED", "WAITING"}};
  bool any_draining = false;
  for (const auto& service : services.services()) {
    const std::string strategy = lowercase(sagebus::wire::strategy_name(service.strategy()));
    const std::string waiting = std::to_string(service.waiting());
    if (service.instances().empty())
      rows.push_back({service.name(), strategy, "-", "-", "-", "-", "-", waiting});
    for (const auto& instance : service.instances()) {
      any_draining = any_draining || instance.draining();
      rows.push_back(
          {service.name(), strategy, or_dash(instance.id()) + (instance.draining() ? "*" : ""),
           or_dash(instance.client()), or_dash(joined(instance.methods())),
           std::to_string(instance.in_flight()) + "/" + std::to_string(instance.max_inflight()),
           std::to_string(instance.served()), waiting});
    }
  }
  std::string out = aligned(rows);
  if (any_draining) out += "* draining: unregistered, finishing the calls it holds\n";
  return out;
}

std::string clients_table(const sagebus::admin::ClientList& clients) {
  std::vector<Row> rows{{"NAME", "INSTANCE", "SDK", "CONNECTED", "LAST-HEARD", "LEASE", "SERVICES",
                         "SUBS", "PENDING", "HELD"}};
  for (const auto& client : clients.clients())
    rows.push_back({or_dash(client.name()), or_dash(client.instance_id()),
                    or_dash(client.sdk_version()), human_duration(client.connected_ms()),
                    human_duration(client.last_heard_ms()),
                    human_duration(client.lease_ms()) + (client.idle() ? " idle" : ""),
                    or_dash(joined(client.services())), std::to_string(client.subscriptions()),
                    std::to_string(client.calls_pending()), std::to_string(client.held())});
  return aligned(rows);
}

std::string topics_table(const sagebus::admin::TopicList& topics) {
  std::vector<Row> subscriptions{{"PATTERN", "CLIENT", "ID", "DELIVERED", "DROPPED", "CREDIT"}};
  for (const auto& s : topics.subscriptions())
    subscriptions.push_back({s.pattern(), or_dash(s.client()), std::to_string(s.id()),
                             std::to_string(s.delivered()), std::to_string(s.dropped()),
                             std::to_string(s.credit())});
  std::vector<Row> published{{"TOPIC", "PUBLISHED"}};
  for (const auto& t : topics.topics())
    published.push_back({t.topic(), std::to_string(t.published())});
  return aligned(subscriptions) + "\n" + aligned(published);
}

std::string calls_table(const sagebus::admin::CallList& calls) {
  std::vector<Row> rows{
      {"SERVICE", "METHOD", "CALLER", "INSTANCE", "STATE", "AGE", "LEFT", "STREAM", "TRACE"}};
  for (const auto& c : calls.calls()) {
    const char* state = c.state() == sagebus::admin::CALL_WAITING      ? "waiting"
                        : c.state() == sagebus::admin::CALL_DISPATCHED ? "dispatched"
                                                                       : "overdue";
    rows.push_back({c.service(), c.method(), or_dash(c.caller()), or_dash(c.instance_client()),
                    state, human_duration(c.age_ms()),
                    c.state() == sagebus::admin::CALL_OVERDUE ? "-" : human_duration(c.left_ms()),
                    c.stream() ? std::to_string(c.chunks()) + " sent, " +
                                     std::to_string(c.credit()) + " B credit"
                               : "-",
                    or_dash(c.trace_id())});
  }
  std::string out = aligned(rows);
  if (calls.total() > static_cast<std::uint32_t>(calls.calls_size()))
    out += "(" + std::to_string(calls.total()) + " calls in flight; the broker lists the oldest " +
           std::to_string(calls.calls_size()) + ")\n";
  return out;
}

std::string gather_table(std::size_t asked, const std::vector<sagebus::InstanceReply>& replies) {
  std::vector<Row> rows{{"INSTANCE", "STATUS", "REPLY"}};
  for (const auto& r : replies)
    rows.push_back({r.instance, std::string(sagebus::status_name(r.status)),
                    r.ok() ? one_line_text(r.payload) : r.message});
  return "asked " + std::to_string(asked) + (asked == 1 ? " instance\n" : " instances\n") +
         aligned(rows);
}

std::string gather_json(std::size_t asked, const std::vector<sagebus::InstanceReply>& replies) {
  std::string out = "{\"asked\":" + std::to_string(asked) + ",\"replies\":[";
  for (std::size_t i = 0; i < replies.size(); ++i) {
    const auto& r = replies[i];
    if (i != 0) out += ",";
    out += "{\"instance\":" + json_quote(r.instance) +
           ",\"status\":" + json_quote(sagebus::status_name(r.status));
    if (!r.ok()) out += ",\"message\":" + json_quote(r.message);
    out += "," + payload_json_member(r.payload) + "}";
  }
  return out + "]}\n";
}

std::string store_line(const sagebus::admin::StoreStatus& store) {
  if (store.path().empty()) return "no store: queues live in memory\n";
  std::string out = "store " + store.path() + ": " + std::to_string(store.bytes()) + " bytes, " +
                    std::to_string(store.commits()) +
                    (store.commits() == 1 ? " commit, last commit " : " commits, last commit ") +
                    std::to_string(store.last_commit_us()) + " µs";
  if (!store.available()) out += "; UNAVAILABLE: " + or_dash(store.error());
  return out + "\n";
}

std::string queues_table(const sagebus::admin::QueueList& queues) {
  std::vector<Row> rows{{"NAME", "TOPIC", "DURABLE", "DEPTH/MAX", "BYTES", "READERS", "WRITERS",
                         "UNACKED", "PUTS", "GETS", "REDELIVERED"}};
  for (const auto& q : queues.queues())
    rows.push_back(
        {q.name(), or_dash(q.topic()), q.durable() ? "yes" : "no",
         std::to_string(q.depth()) + "/" + std::to_string(q.max_depth()), std::to_string(q.bytes()),
         std::to_string(q.readers()), std::to_string(q.writers()), std::to_string(q.unacked()),
         std::to_string(q.puts()), std::to_string(q.gets()), std::to_string(q.redeliveries())});
  return aligned(rows) + store_line(queues.store());
}

std::string queue_info_text(const sagebus::admin::QueueInfo& queue) {
  std::vector<Row> rows;
  flatten(queue, "", rows);
  for (Row& row : rows)
    row[0] += ":";
  return aligned(rows);
}

std::string queue_items_table(const sagebus::admin::QueueItems& items) {
  std::vector<Row> rows{{"SEQ", "DELIVERIES", "PAYLOAD"}};
  for (const auto& item : items.items())
    rows.push_back({std::to_string(item.seq()), std::to_string(item.deliveries()),
                    one_line_text(item.payload())});
  return aligned(rows);
}

std::string queue_items_json(const sagebus::admin::QueueItems& items) {
  std::string out = "[";
  for (const auto& item : items.items()) {
    if (out.size() > 1) out += ',';
    out += "{\"seq\":" + std::to_string(item.seq()) +
           ",\"deliveries\":" + std::to_string(item.deliveries()) + "," +
           payload_json_member(item.payload()) + "}";
  }
  return out + "]\n";
}

std::string human_duration(std::uint64_t ms) {
  if (ms < 1000) return std::to_string(ms) + "ms";
  struct Unit {
    std::uint64_t seconds;
    const char* suffix;
  };
  static constexpr Unit kUnits[] = {{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}};
  const std::uint64_t total = ms / 1000;
  for (std::size_t i = 0; i + 1 < std::size(kUnits); ++i) {
    if (total < kUnits[i].seconds) continue;
    const Unit& big = kUnits[i];
    const Unit& small = kUnits[i + 1];
    const std::uint64_t rest = total % big.seconds / small.seconds;
    return std::to_string(total / big.seconds) + big.suffix +
           (rest ? std::to_string(rest) + small.suffix : "");
  }
  return std::to_string(total) + "s";
}

std::string message_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok())
    throw sagebus::Error(
        sagebus::Status::internal,
        "cannot print " + message.GetTypeName() + " as JSON: " + std::string(status.message()));
  return out + "\n";
}

std::string reply_json(const sagebus::Reply& reply) {
  std::string out = "{\"status\":" + json_quote(sagebus::status_name(reply.status));
  if (!reply.ok()) out += ",\"message\":" + json_quote(reply.message);
  return out + "," + payload_json_member(reply.payload) + "}\n";
}

std::string event_line(const sagebus::Message& message) {
  return message.topic + " " + one_line_text(message.payload) + "\n";
}

std::string event_json(const sagebus::Message& message) {
  return "{\"topic\":" + json_quote(message.topic) + "," + payload_json_member(message.payload) +
         ",\"missed_before\":" + std::to_string(message.missed_before) + "}\n";
}

std::string received_line(const sagebus::Message& message) {
  return message.from + " " + one_line_text(message.payload) + "\n";
}

std::string received_json(const sagebus::Message& message) {
  return "{\"from\":" + json_quote(message.from) + "," + payload_json_member(message.payload) +
         "}\n";
}

}  // namespace busctl
