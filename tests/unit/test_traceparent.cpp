// W3C trace context (sagebus/wire/traceparent.hpp): which traceparents sage-bus carries,
// and that those it makes pass the check and keep their trace's id.
#include <string>

#include <catch2/catch.hpp>

#include "sagebus/wire/traceparent.hpp"

using namespace sagebus;

namespace {

const std::string kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// Why `tp` is refused, or "" when it is taken.
std::string why_refused(const std::string& tp) {
  return wire::check_traceparent(tp).value_or("");
}

}  // namespace

TEST_CASE("a valid version 00 traceparent and the empty one are taken", "[traceparent]") {
  CHECK(why_refused(kValid).empty());
  CHECK(why_refused("").empty());
  CHECK(why_refused("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").empty());
  CHECK(wire::trace_id_of(kValid) == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(wire::trace_id_of("").empty());
}

TEST_CASE("upper-case hex is refused", "[traceparent]") {
  CHECK_THAT(why_refused("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
             Catch::Contains("lower-case hex"));
  CHECK_THAT(why_refused("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"),
             Catch::Contains("lower-case hex"));
}

TEST_CASE("version ff and a version that is not hex are refused", "[traceparent]") {
  CHECK_THAT(why_refused("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
             Catch::Contains("invalid version"));
  CHECK_THAT(why_refused("0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
             Catch::Contains("invalid version"));
}

TEST_CASE("an all-zero trace id or parent id is refused", "[traceparent]") {
  CHECK_THAT(why_refused("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
             Catch::Contains("all-zero trace id"));
  CHECK_THAT(why_refused("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
             Catch::Contains("all-zero parent id"));
}

TEST_CASE("a traceparent of the wrong length or without its dashes is refused", "[traceparent]") {
  CHECK_THAT(why_refused(kValid.substr(0, 54)), Catch::Contains("too short"));
  CHECK_THAT(why_refused("4bf92f3577b34da6"), Catch::Contains("too short"));
  CHECK_THAT(why_refused(kValid + "-"), Catch::Contains("wrong length"));
  CHECK_THAT(why_refused(kValid + "0"), Catch::Contains("wrong length"));
  CHECK_THAT(why_refused("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
             Catch::Contains("dash-separated"));
  // The text quoted is cut short, and says what a traceparent is.
  const std::string long_one(300, 'a');
  const std::string why = why_refused(long_one);
  CHECK(why.size() < 250);
  CHECK_THAT(why, Catch::Contains("...'") && Catch::Contains("00-<32 hex trace id>"));
}

TEST_CASE("a later version is taken by its first 55 characters when a dash follows them",
          "[traceparent]") {
  const std::string v01 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  CHECK(why_refused(v01).empty());
  CHECK(why_refused(v01 + "-more-fields").empty());
  CHECK_THAT(why_refused(v01 + "x"), Catch::Contains("wrong length"));
  CHECK(wire::trace_id_of(v01 + "-more") == "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST_CASE("a new traceparent passes the check and starts a trace of its own", "[traceparent]") {
  const std::string a = wire::new_traceparent();
  const std::string b = wire::new_traceparent();
  CHECK(a.size() == wire::kTraceparentBytes);
  CHECK(why_refused(a).empty());
  CHECK(why_refused(b).empty());
  CHECK(wire::trace_id_of(a) != wire::trace_id_of(b));
  CHECK(a.substr(0, 3) == "00-");
  CHECK(a.substr(52) == "-01");  // sampled
}

TEST_CASE("a child traceparent keeps its parent's trace id and flags with a parent id of its own",
          "[traceparent]") {
  const std::string parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
  const std::string child = wire::child_traceparent(parent);
  CHECK(why_refused(child).empty());
  CHECK(wire::trace_id_of(child) == wire::trace_id_of(parent));
  CHECK(child.substr(36, 16) != parent.substr(36, 16));
  CHECK(child.substr(53) == "00");
  const std::string grandchild = wire::child_traceparent(child);
  CHECK(wire::trace_id_of(grandchild) == wire::trace_id_of(parent));
  // No parent: a new trace.
  const std::string root = wire::child_traceparent("");
  CHECK(why_refused(root).empty());
  CHECK(wire::trace_id_of(root) != wire::trace_id_of(parent));
}
