// sagebus-fuzz-replay FILE|DIR...: runs each file (each file of each directory, in name
// order, but README.md; an empty directory is fine) through the fuzz target once, without
// libFuzzer; what the fuzzer found stays a test this way (tests/fuzz/CMakeLists.txt).
// Exit status 0 when every input ran; a finding aborts, naming the input last started.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: sagebus-fuzz-replay FILE|DIR...\n";
    return 2;
  }
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg = argv[i];
    if (!fs::exists(arg)) {
      std::cerr << "sagebus-fuzz-replay: " << arg.string() << " does not exist\n";
      return 1;
    }
    if (!fs::is_directory(arg)) {
      inputs.push_back(arg);
      continue;
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(arg))
      if (entry.is_regular_file() && entry.path().filename() != "README.md")
        files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    inputs.insert(inputs.end(), files.begin(), files.end());
  }
  for (const auto& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "sagebus-fuzz-replay: cannot read " << path.string() << "\n";
      return 1;
    }
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::cerr << "replay " << path.string() << " (" << data.size() << " bytes)" << std::endl;
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
  }
  std::cout << "sagebus-fuzz-replay: " << inputs.size() << " inputs ran clean" << std::endl;
  return 0;
}
