// What busctl prints: the broker's admin replies as aligned tables or JSON, and a call's
// reply as JSON.
//
// Pure functions from values to text; thread safe. Each returned text ends with '\n'.
#pragma once

#include <string>

#include <google/protobuf/message.h>

#include "sagebus/admin.pb.h"
#include "sagebus/client.hpp"

namespace busctl {

// One "key  value" line per field, keys aligned. Keys are the proto field names, nested
// messages flattened with a dot ("counters.calls"), so a key is also its JSON path.
std::string status_table(const sagebus::admin::BrokerStatus& status);

// Columns SERVICE STRATEGY INSTANCE CLIENT METHODS IN-FLIGHT/MAX SERVED WAITING, one row
// per instance; a service without instances (only calls waiting) gets one row with "-".
// WAITING belongs to the service and repeats on each of its rows. A draining instance's
// id is marked with '*', explained below the table.
std::string services_table(const sagebus::admin::ServiceList& services);

// The message in proto3 JSON, on one line: field names as in the .proto, fields with
// default values included, enums by name, 64-bit integers as strings.
std::string message_json(const google::protobuf::Message& message);

// {"status":"OK","payload":"..."} when the payload is valid UTF-8, otherwise
// {"status":"OK","payload_base64":"..."}.
std::string reply_json(const sagebus::Reply& reply);

}  // namespace busctl
