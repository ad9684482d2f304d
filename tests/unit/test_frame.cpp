// The header codec and the name rules of proto/: what every side of the wire relies on.
#include <string>

#include <catch2/catch.hpp>

#include "sagebus/wire/frame.hpp"

using namespace sagebus;

TEST_CASE("a header survives encode and decode unchanged", "[frame]") {
  wire::Header h;
  h.set_kind(wire::REQUEST);
  h.set_id(42);
  h.set_service("memory");
  h.set_method("retrieve");
  h.set_timeout_ms(2500);
  h.set_idempotent(true);
  h.set_routing_key("user-7");
  (*h.mutable_headers())["tenant"] = "acme";
  h.set_trace_id("t-1");

  const zmq::message_t frame = wire::encode(h);
  wire::Header out;
  REQUIRE(wire::decode(frame, out) == wire::DecodeResult::ok);
  CHECK(out.version() == wire::kProtocolVersion);
  CHECK(out.kind() == wire::REQUEST);
  CHECK(out.id() == 42);
  CHECK(out.service() == "memory");
  CHECK(out.method() == "retrieve");
  CHECK(out.timeout_ms() == 2500);
  CHECK(out.idempotent());
  CHECK(out.routing_key() == "user-7");
  CHECK(out.headers().at("tenant") == "acme");
  CHECK(out.trace_id() == "t-1");
}

TEST_CASE("encode stamps the protocol version whatever the header held", "[frame]") {
  wire::Header h;
  h.set_version(99);
  h.set_kind(wire::HEARTBEAT);
  wire::Header out;
  REQUIRE(wire::decode(wire::encode(h), out) == wire::DecodeResult::ok);
  CHECK(out.version() == 1);
}

TEST_CASE("decoding into a reused header leaves nothing of the previous one", "[frame]") {
  wire::Header first;
  first.set_kind(wire::REQUEST);
  first.set_service("memory");
  wire::Header second;
  second.set_kind(wire::HEARTBEAT);
  wire::Header reused;
  REQUIRE(wire::decode(wire::encode(first), reused) == wire::DecodeResult::ok);
  REQUIRE(wire::decode(wire::encode(second), reused) == wire::DecodeResult::ok);
  CHECK(reused.kind() == wire::HEARTBEAT);
  CHECK(reused.service().empty());
}

TEST_CASE("a header frame larger than 64 KiB is too large", "[frame]") {
  const zmq::message_t frame(wire::kMaxHeaderBytes + 1);
  wire::Header out;
  CHECK(wire::decode(frame, out) == wire::DecodeResult::too_large);
}

TEST_CASE("decode takes the largest header size as its limit", "[frame]") {
  wire::Header h;
  h.set_kind(wire::REQUEST);
  h.set_service(std::string(100, 's'));
  const zmq::message_t frame = wire::encode(h);
  wire::Header out;
  CHECK(wire::decode(frame, out, frame.size()) == wire::DecodeResult::ok);
  CHECK(wire::decode(frame, out, frame.size() - 1) == wire::DecodeResult::too_large);
  const zmq::message_t big(wire::kMaxHeaderBytes + 1);
  CHECK(wire::decode(big, out, 2 * wire::kMaxHeaderBytes) != wire::DecodeResult::too_large);
}

TEST_CASE("bytes that are not a header are malformed", "[frame]") {
  const std::string garbage = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  const zmq::message_t frame(garbage.data(), garbage.size());
  wire::Header out;
  CHECK(wire::decode(frame, out) == wire::DecodeResult::malformed);
}

TEST_CASE("another protocol version is reported with the header still readable", "[frame]") {
  wire::Header h;
  h.set_version(2);
  h.set_kind(wire::REQUEST);
  h.set_id(7);
  const std::string bytes = h.SerializeAsString();  // not encode(): it would stamp 1
  const zmq::message_t frame(bytes.data(), bytes.size());
  wire::Header out;
  REQUIRE(wire::decode(frame, out) == wire::DecodeResult::bad_version);
  CHECK(out.id() == 7);  // so the broker can answer it
  CHECK(out.version() == 2);
}

TEST_CASE("an empty frame decodes as a version-0 header, which is a bad version", "[frame]") {
  const zmq::message_t frame;
  wire::Header out;
  CHECK(wire::decode(frame, out) == wire::DecodeResult::bad_version);
}

TEST_CASE("check_name accepts exactly the documented names", "[frame]") {
  struct Row {
    std::string name;
    bool valid;
  };
  const Row rows[] = {
      {"memory", true},
      {"Memory_Retrieval-0", true},
      {"a.b:c/d", true},
      {"$broker", true},  // valid here; the broker refuses to register it
      {std::string(wire::kMaxNameBytes, 'x'), true},
      {"", false},
      {std::string(wire::kMaxNameBytes + 1, 'x'), false},
      {"has space", false},
      {"a$b", false},
      {"caf\xc3\xa9", false},
      {"new\nline", false},
  };
  for (const auto& row : rows) {
    INFO("name: '" << row.name << "'");
    CHECK(wire::check_name("service name", row.name).has_value() == !row.valid);
  }
}

TEST_CASE("check_name's error names the thing and the offending offset", "[frame]") {
  const auto error = wire::check_name("method name", "bad name");
  REQUIRE(error);
  CHECK(error->find("method name") != std::string::npos);
  CHECK(error->find("offset 3") != std::string::npos);
}

TEST_CASE("status, kind and strategy names are the enum names, unknown values say so", "[frame]") {
  CHECK(wire::status_name(wire::NO_RESPONDERS) == "NO_RESPONDERS");
  CHECK(wire::status_name(wire::OK) == "OK");
  CHECK(wire::status_name(static_cast<wire::Status>(999)) == "UNKNOWN_STATUS");
  CHECK(wire::kind_name(wire::HELLO_REQUIRED) == "HELLO_REQUIRED");
  CHECK(wire::kind_name(static_cast<wire::Kind>(999)) == "UNKNOWN_KIND");
  CHECK(wire::strategy_name(wire::CONSISTENT_HASH) == "CONSISTENT_HASH");
  CHECK(wire::strategy_name(static_cast<wire::Strategy>(999)) == "UNKNOWN_STRATEGY");
}
