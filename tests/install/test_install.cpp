// The installed package, as a service developer meets it: `cmake --install` into a
// fresh prefix, examples/ built against it through find_package(SageBus) and through
// pkg-config, and both run against the installed sage-busd; and the installed Python
// package, imported from the prefix, calling the same service.
#include <cstdlib>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus::test;

namespace {

RunResult checked_run(const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout = 300s) {
  auto r = run(argv, {}, timeout);
  INFO(argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << " exited " << r.exit_code << "\n"
               << r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return r;
}

}  // namespace

TEST_CASE(
    "the installed SDK builds the examples via find_package and pkg-config, "
    "and they talk through the installed sage-busd",
    "[install]") {
  TempDir dir;
  const std::string prefix = dir.path() + "/prefix";
  const std::string libdir = prefix + "/" SAGEBUS_TEST_LIBDIR;
  checked_run({SAGEBUS_TEST_CMAKE, "--install", SAGEBUS_TEST_BUILD_DIR, "--prefix", prefix});

  // find_package(SageBus): examples/ as a project of its own.
  const std::string cmake_build = dir.path() + "/examples-cmake";
  checked_run({SAGEBUS_TEST_CMAKE, "-S", SAGEBUS_TEST_EXAMPLES_DIR, "-B", cmake_build,
               "-DCMAKE_PREFIX_PATH=" + prefix, "-DCMAKE_CXX_COMPILER=" SAGEBUS_TEST_CXX});
  checked_run({SAGEBUS_TEST_CMAKE, "--build", cmake_build, "-j2"});

  // pkg-config: one compiler line, as a Makefile would have it.
  const std::string pc_caller = dir.path() + "/caller-pkgconfig";
  checked_run({"/bin/sh", "-c",
               "PKG_CONFIG_PATH='" + libdir + "/pkgconfig' " SAGEBUS_TEST_CXX " -o '" + pc_caller +
                   "' '" SAGEBUS_TEST_EXAMPLES_DIR "/echo_caller.cpp' $(PKG_CONFIG_PATH='" +
                   libdir + "/pkgconfig' pkg-config --cflags --libs sagebus)"});

  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  Process busd({prefix + "/bin/sage-busd", "--endpoint", endpoint}, dir.path() + "/busd.log");
  REQUIRE(busd.wait_for_log("listening on " + endpoint, 10s));
  Process service({cmake_build + "/sagebus-echo-service", "--endpoint", endpoint},
                  dir.path() + "/service.log");
  REQUIRE(service.wait_for_log("ready", 10s));

  const auto via_cmake = checked_run(
      {cmake_build + "/sagebus-echo-caller", "--endpoint", endpoint, "from-cmake"}, 20s);
  CHECK(via_cmake.out == "from-cmake\n");
  const auto via_pkgconfig =
      checked_run({pc_caller, "--endpoint", endpoint, "from-pkg-config"}, 20s);
  CHECK(via_pkgconfig.out == "from-pkg-config\n");
  const auto services =
      checked_run({prefix + "/bin/busctl", "--endpoint", endpoint, "services"}, 20s);
  CHECK_THAT(services.out, Catch::Contains("sagebus-echo-service"));
#ifdef SAGEBUS_TEST_PYTHON
  const auto via_python = checked_run(
      {"/usr/bin/env", "PYTHONPATH=" + prefix + "/" SAGEBUS_TEST_PYTHON_DIR, SAGEBUS_TEST_PYTHON,
       "-c",
       "import sys, sagebus\n"
       "assert sagebus.__file__.startswith(sys.argv[2]), sagebus.__file__\n"
       "with sagebus.Client(sys.argv[1]) as c:\n"
       "    print(c.call('echo', 'echo', b'from-python', wait_for_ready=True).decode())\n",
       endpoint, prefix},
      20s);
  CHECK(via_python.out == "from-python\n");
#endif

  CHECK(service.stop() == 0);
  CHECK(busd.stop() == 0);
}
