// The fuzz target: each input is a script of messages (script.hpp) that the Harness
// (harness.hpp) hands to one Broker, kept for the life of the process. Built with
// libFuzzer as sagebus-fuzz (-DSAGEBUS_FUZZ=ON, clang) and, everywhere, into
// sagebus-fuzz-replay (replay_main.cpp), which runs the corpus and the regressions.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static sagebus::fuzz::Harness harness;
  harness.run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
