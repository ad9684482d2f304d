#include "notify.hpp"

#include <systemd/sd-daemon.h>

#include <string>

#include <spdlog/spdlog.h>

namespace sagebus::broker {

namespace {

void notify(const std::string& state) {
  const int r = sd_notify(0, state.c_str());
  // 0: not run by systemd; that is not an error.
  if (r < 0) spdlog::warn("cannot tell systemd '{}': sd_notify failed (errno {})", state, -r);
}

}  // namespace

void notify_ready(std::string_view status) {
  notify("READY=1\nSTATUS=" + std::string(status));
}

void notify_reloading() {
  notify("RELOADING=1\nSTATUS=reloading the configuration");
}

void notify_stopping(std::string_view status) {
  notify("STOPPING=1\nSTATUS=" + std::string(status));
}

}  // namespace sagebus::broker
