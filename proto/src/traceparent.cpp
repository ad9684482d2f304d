#include "sagebus/wire/traceparent.hpp"

#include <cstdint>
#include <random>

namespace sagebus::wire {

namespace {

bool lower_hex(std::string_view s) {
  for (const char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool all_zero(std::string_view s) {
  return s.find_first_not_of('0') == std::string_view::npos;
}

// A per-thread generator, seeded once: ids need to be unique, not secret.
std::uint64_t random64() {
  thread_local std::mt19937_64 engine{std::random_device{}() ^
                                      (std::uint64_t{std::random_device{}()} << 32)};
  return engine();
}

void append_hex(std::string& out, std::uint64_t v, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4)
    out += kDigits[(v >> shift) & 0xf];
}

std::string random_parent_id() {
  std::uint64_t id;
  do
    id = random64();
  while (id == 0);
  std::string out;
  append_hex(out, id, 16);
  return out;
}

}  // namespace

std::optional<std::string> check_traceparent(std::string_view tp) {
  if (tp.empty()) return std::nullopt;
  const auto invalid = [&](std::string_view why) {
    std::string shown(tp.substr(0, 64));
    return std::string("traceparent '") + shown + (tp.size() > 64 ? "...'" : "'") + " " +
           std::string(why) +
           "; a W3C traceparent is 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>";
  };
  if (tp.size() < kTraceparentBytes) return invalid("is too short");
  const std::string_view version = tp.substr(0, 2);
  if (!lower_hex(version) || version == "ff") return invalid("has an invalid version");
  if (version == "00" ? tp.size() != kTraceparentBytes
                      : tp.size() > kTraceparentBytes && tp[kTraceparentBytes] != '-')
    return invalid("has the wrong length");
  if (tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return invalid("is not dash-separated");
  const std::string_view trace = tp.substr(3, 32), parent = tp.substr(36, 16),
                         flags = tp.substr(53, 2);
  if (!lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags))
    return invalid("has characters other than lower-case hex digits");
  if (all_zero(trace)) return invalid("has an all-zero trace id");
  if (all_zero(parent)) return invalid("has an all-zero parent id");
  return std::nullopt;
}

std::string_view trace_id_of(std::string_view traceparent) {
  return traceparent.size() < kTraceparentBytes ? std::string_view() : traceparent.substr(3, 32);
}

std::string new_traceparent() {
  std::string out = "00-";
  std::uint64_t high, low;
  do {
    high = random64();
    low = random64();
  } while (high == 0 && low == 0);
  append_hex(out, high, 16);
  append_hex(out, low, 16);
  out += '-';
  out += random_parent_id();
  out += "-01";
  return out;
}

std::string child_traceparent(std::string_view parent) {
  if (parent.size() < kTraceparentBytes) return new_traceparent();
  std::string out = "00-";
  out += parent.substr(3, 32);
  out += '-';
  out += random_parent_id();
  out += '-';
  out += parent.substr(53, 2);
  return out;
}

}  // namespace sagebus::wire
