// CURVE keys and certificate files (proto/include/sagebus/wire/curve_keys.hpp): keys
// generated, checked and derived; certificates written in czmq's layout with safe modes,
// never over an existing file; certificates of czmq and pyzmq read; every malformed or
// unsafe file refused with its path and line.
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "sagebus/wire/curve_keys.hpp"

using namespace sagebus::wire;

namespace {

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sagebus-keys-XXXXXX");
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const std::string& path, const std::string& text, mode_t mode = 0600) {
  std::ofstream(path) << text;
  std::filesystem::permissions(path, static_cast<std::filesystem::perms>(mode));
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// The message of the KeyFileError that `fn` throws.
template <typename Fn>
std::string key_file_error(Fn fn) {
  try {
    fn();
  } catch (const KeyFileError& e) {
    return e.what();
  }
  FAIL("no KeyFileError");
  return {};
}

// A certificate as pyzmq's zmq.auth writes it, with metadata and extra comments.
std::string pyzmq_certificate(const CurveKeys& keys) {
  std::string text =
      "#   ****  Generated on 2024-03-01 10:20:30.123456 by pyzmq  ****\n"
      "#   ZeroMQ CURVE **Secret** Certificate\n"
      "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
      "\n"
      "metadata\n"
      "    name = \"retriever\"\n"
      "    email = \"ops@example.com\"\n"
      "# the keys\n"
      "curve\n"
      "    public-key = \"" +
      keys.public_key + "\"\n";
  if (!keys.secret_key.empty()) text += "    secret-key = \"" + keys.secret_key + "\"\n";
  return text;
}

}  // namespace

TEST_CASE("generated keys are valid Z85 and the public key derives from the secret one",
          "[curve_keys]") {
  const CurveKeys keys = generate_curve_keys();
  CHECK(keys.public_key.size() == 40);
  CHECK(valid_curve_key(keys.public_key));
  CHECK(valid_curve_key(keys.secret_key));
  CHECK(curve_public_key(keys.secret_key) == keys.public_key);
  CHECK(generate_curve_keys().public_key != keys.public_key);
}

TEST_CASE("a valid key is exactly 40 characters of Z85", "[curve_keys]") {
  const std::string key = generate_curve_keys().public_key;
  CHECK_FALSE(valid_curve_key(""));
  CHECK_FALSE(valid_curve_key(key.substr(0, 39)));
  CHECK_FALSE(valid_curve_key(key + "0"));
  CHECK_FALSE(valid_curve_key(key.substr(0, 39) + "~"));  // not in Z85's alphabet
  CHECK_FALSE(valid_curve_key(key.substr(0, 39) + "\""));
  CHECK_FALSE(valid_curve_key(key.substr(0, 35) + std::string(5, '\0')));
  CHECK_FALSE(valid_curve_key(std::string(40, '#')));  // Z85 characters, more than 32 bytes
  CHECK_THROWS_AS(curve_public_key("not a key"), std::invalid_argument);
}

TEST_CASE("a written key pair reads back: the public file alone, the secret file whole",
          "[curve_keys]") {
  TempDir dir;
  const CurveKeys keys = generate_curve_keys();
  write_key_pair(dir / "broker", keys);

  const CurveKeys public_only = read_key_file(dir / "broker.key");
  CHECK(public_only.public_key == keys.public_key);
  CHECK(public_only.secret_key.empty());
  const CurveKeys both = read_key_file(dir / "broker.key_secret");
  CHECK(both.public_key == keys.public_key);
  CHECK(both.secret_key == keys.secret_key);
}

TEST_CASE("the public certificate is 0644 and the secret one 0600, whatever the umask",
          "[curve_keys]") {
  TempDir dir;
  for (const mode_t umask_value : {mode_t{0}, mode_t{022}, mode_t{077}}) {
    INFO("umask " << umask_value);
    const std::string base = dir / ("pair" + std::to_string(umask_value));
    const mode_t previous = ::umask(umask_value);
    write_key_pair(base, generate_curve_keys());
    ::umask(previous);
    CHECK(mode_of(base + ".key") == 0644);
    CHECK(mode_of(base + ".key_secret") == 0600);
  }
}

TEST_CASE("certificates are written in czmq's layout", "[curve_keys]") {
  TempDir dir;
  const CurveKeys keys = generate_curve_keys();
  write_key_pair(dir / "node", keys);

  const std::string public_text = read_text(dir / "node.key");
  CHECK_THAT(public_text, Catch::StartsWith("#   ****  Generated on "));
  CHECK_THAT(public_text, Catch::Contains(" UTC by sage-bus  ****\n"
                                          "#   ZeroMQ CURVE Public Certificate\n"));
  CHECK_THAT(public_text, Catch::EndsWith("directory, in the .curve subdirectory.\n"
                                          "\n"
                                          "metadata\n"
                                          "curve\n"
                                          "    public-key = \"" +
                                          keys.public_key + "\"\n"));
  const std::string secret_text = read_text(dir / "node.key_secret");
  CHECK_THAT(secret_text,
             Catch::EndsWith("#   ZeroMQ CURVE **Secret** Certificate\n"
                             "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its "
                             "permissions.\n"
                             "\n"
                             "metadata\n"
                             "curve\n"
                             "    public-key = \"" +
                             keys.public_key +
                             "\"\n"
                             "    secret-key = \"" +
                             keys.secret_key + "\"\n"));
}

TEST_CASE("writing refuses to replace either file and then writes neither", "[curve_keys]") {
  TempDir dir;
  const CurveKeys first = generate_curve_keys();
  write_key_pair(dir / "a", first);

  SECTION("both exist: both stay as they were") {
    const auto message = key_file_error([&] { write_key_pair(dir / "a", generate_curve_keys()); });
    CHECK_THAT(message, Catch::StartsWith(dir / "a.key: already exists;"));
    CHECK_THAT(message, Catch::Contains("remove it or choose another name"));
    CHECK(read_key_file(dir / "a.key_secret").secret_key == first.secret_key);
    CHECK(read_key_file(dir / "a.key").public_key == first.public_key);
  }
  SECTION("only the public one exists: the secret one is not created") {
    std::filesystem::rename(dir / "a.key", dir / "b.key");
    const auto message = key_file_error([&] { write_key_pair(dir / "b", generate_curve_keys()); });
    CHECK_THAT(message, Catch::StartsWith(dir / "b.key: already exists"));
    CHECK_FALSE(std::filesystem::exists(dir / "b.key_secret"));
  }
  SECTION("only the secret one exists: the public one is not created") {
    std::filesystem::rename(dir / "a.key_secret", dir / "c.key_secret");
    const auto message = key_file_error([&] { write_key_pair(dir / "c", generate_curve_keys()); });
    CHECK_THAT(message, Catch::StartsWith(dir / "c.key_secret: already exists"));
    CHECK_FALSE(std::filesystem::exists(dir / "c.key"));
  }
  SECTION("a directory that does not exist") {
    const auto message = key_file_error([&] { write_key_pair(dir / "no/d", first); });
    CHECK_THAT(message, Catch::Contains("cannot create it"));
  }
}

TEST_CASE("a pair that does not belong together is not written", "[curve_keys]") {
  TempDir dir;
  CHECK_THROWS_AS(write_key_pair(dir / "x", {generate_curve_keys().public_key,
                                             generate_curve_keys().secret_key}),
                  std::invalid_argument);
  CHECK_THROWS_AS(write_key_pair(dir / "x", {generate_curve_keys().public_key, ""}),
                  std::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(dir / "x.key_secret"));
}

TEST_CASE("certificates written by pyzmq, with metadata and comments, read", "[curve_keys]") {
  TempDir dir;
  const CurveKeys keys = generate_curve_keys();
  write_text(dir / "client.key_secret", pyzmq_certificate(keys), 0600);
  write_text(dir / "client.key", pyzmq_certificate({keys.public_key, ""}), 0644);

  const CurveKeys secret = read_key_file(dir / "client.key_secret");
  CHECK(secret.public_key == keys.public_key);
  CHECK(secret.secret_key == keys.secret_key);
  const CurveKeys public_only = read_key_file(dir / "client.key");
  CHECK(public_only.public_key == keys.public_key);
  CHECK(public_only.secret_key.empty());
}

TEST_CASE("malformed certificates are refused naming the file and the line", "[curve_keys]") {
  TempDir dir;
  const CurveKeys keys = generate_curve_keys();
  const std::string path = dir / "bad.key";
  auto error_for = [&](const std::string& text) {
    write_text(path, text, 0600);
    return key_file_error([&] { read_key_file(path); });
  };

  CHECK_THAT(key_file_error([&] { read_key_file(dir / "missing.key"); }),
             Catch::StartsWith(dir / "missing.key: cannot open it: No such file or directory"));
  CHECK_THAT(error_for(""), Catch::StartsWith(path + ": no public-key in a curve section"));
  CHECK_THAT(error_for("metadata\n    public-key = \"" + keys.public_key + "\"\n"),
             Catch::StartsWith(path + ": no public-key in a curve section"));
  CHECK_THAT(error_for("# comment\ncurve\n    public-key = \"tooshort\"\n"),
             Catch::StartsWith(path + ":3: public-key is not a CURVE key"));
  CHECK_THAT(error_for("curve\n    public-key = \"" + keys.public_key + "\"\n    secret-key = \"" +
                       keys.secret_key.substr(0, 39) + "~\"\n"),
             Catch::StartsWith(path + ":3: secret-key is not a CURVE key"));
  CHECK_THAT(error_for("curve\n    public-key = \"" + keys.public_key + "\n"),
             Catch::StartsWith(path + ":2: the value of public-key has no closing \""));
  CHECK_THAT(error_for("metadata\ncurve\n    public-key = \"" + keys.public_key + "\" extra\n"),
             Catch::StartsWith(path + ":3: unexpected text 'extra' after public-key"));
  CHECK_THAT(error_for("metadata\n\n  = \"x\"\n"),
             Catch::StartsWith(path + ":3: expected a name, found '= \"x\"'"));
  CHECK_THAT(error_for("curve\n    public-key = \"" + keys.public_key + "\"\n    public-key = \"" +
                       keys.public_key + "\"\n"),
             Catch::StartsWith(path + ":3: a second public-key (the first is on line 2)"));
  CHECK_THAT(key_file_error([&] { read_key_file(dir.path()); }),
             Catch::StartsWith(dir.path() + ": is not a regular file"));
}

TEST_CASE("a secret certificate readable by group or others is refused", "[curve_keys]") {
  TempDir dir;
  write_key_pair(dir / "loose", generate_curve_keys());
  const std::string path = dir / "loose.key_secret";
  std::filesystem::permissions(path, std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  const auto message = key_file_error([&] { read_key_file(path); });
  CHECK_THAT(message, Catch::StartsWith(path +
                                        ": holds a secret key but is accessible by group "
                                        "or others (mode 0640); chmod 600 " +
                                        path));
  // A public certificate is meant to be shared.
  std::filesystem::permissions(dir / "loose.key", std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  CHECK_NOTHROW(read_key_file(dir / "loose.key"));
}

TEST_CASE("a secret key that is not the public key's is refused", "[curve_keys]") {
  TempDir dir;
  const CurveKeys one = generate_curve_keys();
  const CurveKeys other = generate_curve_keys();
  const std::string path = dir / "mixed.key_secret";
  write_text(path, pyzmq_certificate({one.public_key, other.secret_key}), 0600);
  CHECK_THAT(key_file_error([&] { read_key_file(path); }),
             Catch::StartsWith(path + ":11: secret-key does not belong to public-key (line 10)"));
}

TEST_CASE("a key is given as Z85 text or as a certificate's path", "[curve_keys]") {
  TempDir dir;
  const CurveKeys keys = generate_curve_keys();
  write_key_pair(dir / "peer", keys);

  const CurveKeys from_text = key_or_file(keys.public_key);
  CHECK(from_text.public_key == keys.public_key);
  CHECK(from_text.secret_key.empty());
  CHECK(key_or_file(dir / "peer.key").public_key == keys.public_key);
  CHECK(key_or_file(dir / "peer.key_secret").secret_key == keys.secret_key);
  CHECK_THROWS_AS(key_or_file(dir / "nothing.key"), KeyFileError);
}
