#include "sagebus/wire/frame.hpp"

#include <limits>

namespace sagebus::wire {

zmq::message_t encode(Header& header) {
  header.set_version(kProtocolVersion);
  zmq::message_t frame(header.ByteSizeLong());
  header.SerializeWithCachedSizesToArray(static_cast<std::uint8_t*>(frame.data()));
  return frame;
}

DecodeResult decode(const zmq::message_t& frame, Header& out, std::size_t max_bytes) {
  // ParseFromArray takes an int; no limit may let a larger frame reach it.
  if (frame.size() > max_bytes ||
      frame.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    return DecodeResult::too_large;
  if (!out.ParseFromArray(frame.data(), static_cast<int>(frame.size())))
    return DecodeResult::malformed;
  if (out.version() != kProtocolVersion) return DecodeResult::bad_version;
  return DecodeResult::ok;
}

std::string_view status_name(Status status) {
  if (!Status_IsValid(status)) return "UNKNOWN_STATUS";
  return Status_Name(status);
}

std::string_view kind_name(Kind kind) {
  if (!Kind_IsValid(kind)) return "UNKNOWN_KIND";
  return Kind_Name(kind);
}

std::string_view strategy_name(Strategy strategy) {
  if (!Strategy_IsValid(strategy)) return "UNKNOWN_STRATEGY";
  return Strategy_Name(strategy);
}

std::optional<std::string> check_name(std::string_view what, std::string_view name) {
  if (name.empty()) return std::string(what) + " is empty";
  if (name.size() > kMaxNameBytes)
    return std::string(what) + " is " + std::to_string(name.size()) + " bytes long; the limit is " +
           std::to_string(kMaxNameBytes);
  for (std::size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '/' || c == '-' ||
                    (c == '$' && i == 0);
    if (!ok)
      return std::string(what) + " '" + std::string(name) + "' has a character outside " +
             "[A-Za-z0-9_.:/-] at offset " + std::to_string(i);
  }
  return std::nullopt;
}

}  // namespace sagebus::wire
