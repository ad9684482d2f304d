// busctl keygen: a key pair written without a broker, in files of the right modes that
// the broker's reader takes, and never over an existing file.
#include <sys/stat.h>

#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "sagebus/wire/curve_keys.hpp"

using namespace sagebus::test;

namespace {

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("busctl keygen writes NAME.key and NAME.key_secret and refuses to overwrite them",
          "[busctl][keygen]") {
  TempDir dir;
  const std::string base = dir.path() + "/broker";
  // No broker runs: the endpoint leads nowhere.
  const auto first = run({busctl_path(), "--endpoint", "tcp://127.0.0.1:1", "keygen", base});
  REQUIRE(first.exit_code == 0);
  CHECK(mode_of(base + ".key") == 0644);
  CHECK(mode_of(base + ".key_secret") == 0600);
  const auto keys = sagebus::wire::read_key_file(base + ".key_secret");
  CHECK_THAT(first.out, Catch::Contains(base + ".key\n"));
  CHECK_THAT(first.out, Catch::Contains(base + ".key_secret "));
  CHECK_THAT(first.out, Catch::Contains(keys.public_key));

  const auto second = run({busctl_path(), "keygen", base});
  CHECK(second.exit_code == 1);
  CHECK_THAT(second.err, Catch::StartsWith(base + ".key: already exists; remove it or choose "
                                                  "another name"));
  CHECK(sagebus::wire::read_key_file(base + ".key_secret").secret_key == keys.secret_key);

  const auto json = run({busctl_path(), "keygen", "--json", dir.path() + "/client"});
  CHECK(json.exit_code == 0);
  CHECK_THAT(json.out, Catch::StartsWith("{\"public_file\":\"" + dir.path() + "/client.key\""));
}
