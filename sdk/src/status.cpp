#include "sagebus/status.hpp"

namespace sagebus {

std::string_view status_name(Status status) noexcept {
  switch (status) {
    case Status::ok:
      return "OK";
    case Status::no_responders:
      return "NO_RESPONDERS";
    case Status::unavailable:
      return "UNAVAILABLE";
    case Status::deadline_exceeded:
      return "DEADLINE_EXCEEDED";
    case Status::overloaded:
      return "OVERLOADED";
    case Status::undeliverable:
      return "UNDELIVERABLE";
    case Status::invalid_argument:
      return "INVALID_ARGUMENT";
    case Status::not_found:
      return "NOT_FOUND";
    case Status::handler_error:
      return "HANDLER_ERROR";
    case Status::permission_denied:
      return "PERMISSION_DENIED";
    case Status::cancelled:
      return "CANCELLED";
    case Status::internal:
      return "INTERNAL";
    case Status::unauthenticated:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN_STATUS";
}

Error::Error(Status status, const std::string& message)
    : std::runtime_error(std::string(status_name(status)) + ": " + message),
      status_(status),
      message_(message) {}

}  // namespace sagebus
