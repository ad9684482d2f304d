// Tells systemd what sage-busd is doing (sd_notify, for a Type=notify unit): ready after
// the endpoints are bound, reloading around a SIGHUP, stopping while it drains. Outside
// systemd ($NOTIFY_SOCKET unset) every function does nothing. Thread safe.
#pragma once

#include <string_view>

namespace sagebus::broker {

void notify_ready(std::string_view status);
void notify_reloading();
void notify_stopping(std::string_view status);

}  // namespace sagebus::broker
