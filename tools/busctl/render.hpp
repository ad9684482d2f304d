// What busctl prints: the broker's admin replies as aligned tables or JSON, a call's
// reply as JSON, and the messages a subscriber or receiver gets as text or JSON lines.
//
// Pure functions from values to text; thread safe. Each returned text ends with '\n'.
#pragma once

#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "sagebus/admin.pb.h"
#include "sagebus/client.hpp"
#include "sagebus/subscription.hpp"

namespace busctl {

using Row = std::vector<std::string>;
// Left-aligned columns two spaces apart; the last column is not padded.
std::string aligned(const std::vector<Row>& rows);

// One "key  value" line per field, keys aligned. Keys are the proto field names, nested
// messages flattened with a dot ("counters.calls"), so a key is also its JSON path. Then,
// after a blank line, store_line(); then, after another, the limits as a table: LIMIT,
// VALUE, REFUSED.
std::string status_table(const sagebus::admin::BrokerStatus& status);

// The broker's store on one line: "store PATH: N bytes, C commits, last commit U µs"
// (the time its last commit took),
// followed by "; UNAVAILABLE: ERROR" while its last write failed; or, for a broker
// without a store, "no store: queues live in memory".
std::string store_line(const sagebus::admin::StoreStatus& store);

// Columns SERVICE STRATEGY INSTANCE CLIENT METHODS IN-FLIGHT/MAX SERVED WAITING, one row
// per instance; a service without instances (only calls waiting) gets one row with "-".
// WAITING belongs to the service and repeats on each of its rows. A draining instance's
// id is marked with '*', explained below the table.
std::string services_table(const sagebus::admin::ServiceList& services);

// Columns NAME INSTANCE SDK CONNECTED LAST-HEARD LEASE SERVICES SUBS PENDING HELD, one row
// per connection; CONNECTED and LAST-HEARD are how long ago, LEASE how long it may stay
// silent, as human_duration(); LEASE says "idle" after it for the idle lease.
std::string clients_table(const sagebus::admin::ClientList& clients);

// Two tables, a blank line between: subscriptions (PATTERN CLIENT ID DELIVERED DROPPED
// CREDIT), then topics (TOPIC PUBLISHED).
std::string topics_table(const sagebus::admin::TopicList& topics);

// Columns SERVICE METHOD CALLER INSTANCE STATE AGE LEFT STREAM TRACE, one row per call in
// flight, in the list's order: CALLER and INSTANCE are connection names ("-": none, or
// gone), STATE "waiting", "dispatched" or "overdue" (its deadline passed, its instance still
// holds it), AGE since the broker accepted it and LEFT until its deadline as
// human_duration(), STREAM "-" for a call of one reply, else "N sent, C credit" (chunks
// passed on, and those its instance may still send), TRACE its trace id or "-". When the
// broker has more calls than it listed, a last line says how many.
std::string calls_table(const sagebus::admin::CallList& calls);

// Columns NAME TOPIC DURABLE DEPTH/MAX BYTES READERS WRITERS UNACKED PUTS GETS
// REDELIVERED (DURABLE "yes" or "no"); then store_line().
std::string queues_table(const sagebus::admin::QueueList& queues);

// One queue: one "key: value" line per field of QueueInfo, values aligned.
std::string queue_info_text(const sagebus::admin::QueueInfo& queue);

// Items peeked at: columns SEQ DELIVERIES PAYLOAD (payload as one_line_text()), or one
// JSON array of {"seq":N,"deliveries":N,"payload":"..."} (payload_base64 for non-UTF-8).
std::string queue_items_table(const sagebus::admin::QueueItems& items);
std::string queue_items_json(const sagebus::admin::QueueItems& items);

// A duration for people, at most two units: "250ms", "12s", "3m4s", "5h7m", "2d3h".
std::string human_duration(std::uint64_t ms);

// The message in proto3 JSON, on one line: field names as in the .proto, fields with
// default values included, enums by name, 64-bit integers as strings.
std::string message_json(const google::protobuf::Message& message);

// {"status":"OK","payload":"..."} when the payload is valid UTF-8, otherwise
// {"status":"OK","payload_base64":"..."}.
std::string reply_json(const sagebus::Reply& reply);

// call_all's outcomes: "asked N instances" and a table INSTANCE STATUS REPLY (the
// payload as one_line_text(), or the message of an error), or one JSON object
// {"asked":N,"replies":[{"instance":...,"status":...,"message"?,"payload":...}]}.
std::string gather_table(std::size_t asked, const std::vector<sagebus::InstanceReply>& replies);
std::string gather_json(std::size_t asked, const std::vector<sagebus::InstanceReply>& replies);

// A published message: "TOPIC PAYLOAD\n", or as JSON
// {"topic":"...","payload":"...","missed_before":N} (payload_base64 for non-UTF-8).
std::string event_line(const sagebus::Message& message);
std::string event_json(const sagebus::Message& message);

// A point-to-point message: "FROM PAYLOAD\n", or {"from":"...","payload":"..."}.
std::string received_line(const sagebus::Message& message);
std::string received_json(const sagebus::Message& message);

}  // namespace busctl
