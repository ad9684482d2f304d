#include "sagebus/wire/curve_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>

namespace sagebus::wire {

namespace {

constexpr std::size_t kKeyChars = 40;
// A certificate is a few hundred bytes; anything this large is not one.
constexpr off_t kMaxKeyFileBytes = 64 * 1024;

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  // Closes now, so that an error of close() (a delayed write error) can be reported.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

[[noreturn]] void fail(const std::string& path, std::size_t line, const std::string& problem) {
  throw KeyFileError(path + ":" + std::to_string(line) + ": " + problem);
}

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw KeyFileError(path + ": " + problem);
}

std::string errno_text(int error) {
  return std::strerror(error);
}

std::string octal_mode(mode_t mode) {
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return text.data();
}

// ZPL name characters, as czmq's zconfig reads them.
bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '$' || c == '-' || c == '_' ||
         c == '@' || c == '.' || c == '&' || c == '+' || c == '/';
}

bool blank(char c) {
  return c == ' ' || c == '\t';
}

std::string_view skip_blanks(std::string_view text) {
  while (!text.empty() && blank(text.front()))
    text.remove_prefix(1);
  return text;
}

struct Found {
  std::string value;
  std::size_t line = 0;
};

struct Certificate {
  std::optional<Found> public_key;
  std::optional<Found> secret_key;
};

// Parses ZPL: a name at column 0 opens a section, an indented `name = "value"` belongs to
// the last section. Only the curve section's two keys are kept.
Certificate parse_certificate(const std::string& path, std::string_view text) {
  Certificate certificate;
  std::string section;
  std::size_t line_number = 0;
  while (!text.empty()) {
    const auto eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    ++line_number;
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
      line.remove_suffix(1);
    std::size_t indent = 0;
    while (indent < line.size() && blank(line[indent]))
      ++indent;
    std::string_view rest = line.substr(indent);
    if (rest.empty() || rest.front() == '#') continue;

    std::size_t name_end = 0;
    while (name_end < rest.size() && name_char(rest[name_end]))
      ++name_end;
    const std::string name(rest.substr(0, name_end));
    if (name.empty())
      fail(path, line_number,
           "expected a name, found '" + std::string(rest) +
               "'; a certificate line is NAME or NAME = \"VALUE\"");
    rest = skip_blanks(rest.substr(name_end));

    std::string value;
    if (!rest.empty() && rest.front() == '=') {
      rest = skip_blanks(rest.substr(1));
      if (!rest.empty() && (rest.front() == '"' || rest.front() == '\'')) {
        const auto close = rest.find(rest.front(), 1);
        if (close == std::string_view::npos)
          fail(path, line_number,
               std::string("the value of ") + name + " has no closing " + rest.front() +
                   "; write it as " + name + " = \"VALUE\"");
        value = rest.substr(1, close - 1);
        rest.remove_prefix(close + 1);
      } else {
        // Unquoted, as zconfig reads it: up to a comment. Z85 has '#', so keys are quoted.
        const auto hash = rest.find('#');
        auto unquoted = rest.substr(0, hash);
        while (!unquoted.empty() && blank(unquoted.back()))
          unquoted.remove_suffix(1);
        value = unquoted;
        rest.remove_prefix(hash == std::string_view::npos ? rest.size() : hash);
      }
    }
    rest = skip_blanks(rest);
    if (!rest.empty() && rest.front() != '#')
      fail(path, line_number,
           "unexpected text '" + std::string(rest) + "' after " + name +
               "; a certificate line is NAME or NAME = \"VALUE\"");

    if (indent == 0) {
      section = name;
      continue;
    }
    if (section != "curve") continue;
    auto* slot = name == "public-key"   ? &certificate.public_key
                 : name == "secret-key" ? &certificate.secret_key
                                        : nullptr;
    if (!slot) continue;
    if (*slot)
      fail(path, line_number,
           "a second " + name + " (the first is on line " + std::to_string((*slot)->line) +
               "); a certificate holds one key pair: remove one");
    *slot = Found{std::move(value), line_number};
  }
  return certificate;
}

std::string generated_comment() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::array<char, 32> date{};
  std::strftime(date.data(), date.size(), "%Y-%m-%d %H:%M:%S UTC", &utc);
  return std::string("#   ****  Generated on ") + date.data() + " by sage-bus  ****\n";
}

// czmq's layout (zcert_save_public, zcert_save_secret): its header comments, a blank
// line, an empty metadata section and the curve section indented by four spaces.
std::string public_certificate(const CurveKeys& keys) {
  return generated_comment() +
         "#   ZeroMQ CURVE Public Certificate\n"
         "#   Exchange securely, or use a secure mechanism to verify the contents\n"
         "#   of this file after exchange. Store public certificates in your home\n"
         "#   directory, in the .curve subdirectory.\n"
         "\n"
         "metadata\n"
         "curve\n"
         "    public-key = \"" +
         keys.public_key + "\"\n";
}

std::string secret_certificate(const CurveKeys& keys) {
  return generated_comment() +
         "#   ZeroMQ CURVE **Secret** Certificate\n"
         "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
         "\n"
         "metadata\n"
         "curve\n"
         "    public-key = \"" +
         keys.public_key +
         "\"\n"
         "    secret-key = \"" +
         keys.secret_key + "\"\n";
}

// Creates `path`, which must not exist, with exactly `mode` (whatever the umask).
int create_exclusive(const std::string& path, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    const int error = errno;
    if (error == EEXIST) fail(path, "already exists; remove it or choose another name");
    fail(path, "cannot create it: " + errno_text(error) +
                   "; check that its directory exists and is writable");
  }
  if (::fchmod(fd, mode) != 0) {
    const int error = errno;
    ::close(fd);
    ::unlink(path.c_str());
    fail(path, "cannot set its mode to " + octal_mode(mode) + ": " + errno_text(error));
  }
  return fd;
}

void write_all(FileDescriptor& fd, const std::string& path, std::string_view text) {
  while (!text.empty()) {
    const auto written = ::write(fd.get(), text.data(), text.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) fail(path, "cannot write it: " + errno_text(errno));
    text.remove_prefix(static_cast<std::size_t>(written));
  }
  if (::fsync(fd.get()) != 0 || fd.close() != 0)
    fail(path, "cannot write it: " + errno_text(errno));
}

// Whether something is at `path`; when that cannot be told, creating it will say why.
bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

bool valid_curve_key(std::string_view key) noexcept {
  // zmq_z85_decode reads up to a NUL: an embedded one would make a shorter key valid.
  if (key.size() != kKeyChars || key.find('\0') != std::string_view::npos) return false;
  std::array<char, kKeyChars + 1> text{};
  key.copy(text.data(), kKeyChars);
  std::array<std::uint8_t, 32> bytes{};
  return zmq_z85_decode(bytes.data(), text.data()) != nullptr;
}

CurveKeys generate_curve_keys() {
  std::array<char, kKeyChars + 1> public_key{};
  std::array<char, kKeyChars + 1> secret_key{};
  if (zmq_curve_keypair(public_key.data(), secret_key.data()) != 0)
    throw std::runtime_error(std::string("cannot generate a CURVE key pair: ") +
                             zmq_strerror(zmq_errno()) + " (is libzmq built with CURVE?)");
  return {public_key.data(), secret_key.data()};
}

std::string curve_public_key(std::string_view secret_key) {
  if (!valid_curve_key(secret_key))
    throw std::invalid_argument("not a CURVE secret key: 40 characters of Z85 expected");
  const std::string secret(secret_key);
  std::array<char, kKeyChars + 1> public_key{};
  if (zmq_curve_public(public_key.data(), secret.c_str()) != 0)
    throw std::invalid_argument(std::string("cannot derive the public key: ") +
                                zmq_strerror(zmq_errno()));
  return public_key.data();
}

CurveKeys read_key_file(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0)
    fail(path, "cannot open it: " + errno_text(errno) + "; check the path and its permissions");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(path, "cannot stat it: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) fail(path, "is not a regular file; give the path of a certificate");
  if (st.st_size > kMaxKeyFileBytes)
    fail(path, "is " + std::to_string(st.st_size) +
                   " bytes long, too long for a certificate; give the path of a .key or "
                   ".key_secret file");
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const auto n = ::read(fd.get(), text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "cannot read it: " + errno_text(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);

  const Certificate certificate = parse_certificate(path, text);
  if (!certificate.public_key)
    fail(path,
         "no public-key in a curve section; give a CURVE certificate such as "
         "`busctl keygen` writes");
  CurveKeys keys{certificate.public_key->value, {}};
  if (!valid_curve_key(keys.public_key))
    fail(path, certificate.public_key->line,
         "public-key is not a CURVE key (40 characters of Z85); regenerate the certificate");
  if (!certificate.secret_key) return keys;

  if ((st.st_mode & 077) != 0)
    fail(path, "holds a secret key but is accessible by group or others (mode " +
                   octal_mode(st.st_mode) + "); chmod 600 " + path);
  keys.secret_key = certificate.secret_key->value;
  if (!valid_curve_key(keys.secret_key))
    fail(path, certificate.secret_key->line,
         "secret-key is not a CURVE key (40 characters of Z85); regenerate the certificate");
  if (curve_public_key(keys.secret_key) != keys.public_key)
    fail(path, certificate.secret_key->line,
         "secret-key does not belong to public-key (line " +
             std::to_string(certificate.public_key->line) +
             "); the file mixes two key pairs: regenerate it");
  return keys;
}

void write_key_pair(const std::string& base, const CurveKeys& keys) {
  if (!valid_curve_key(keys.public_key) || !valid_curve_key(keys.secret_key) ||
      curve_public_key(keys.secret_key) != keys.public_key)
    throw std::invalid_argument("write_key_pair: not a CURVE key pair");
  const std::string public_path = base + ".key";
  const std::string secret_path = base + ".key_secret";
  // Both are checked before either is created, so that a refusal writes nothing; O_EXCL
  // below still catches a file that appears in between.
  for (const auto* path : {&public_path, &secret_path})
    if (exists(*path)) fail(*path, "already exists; remove it or choose another name");

  FileDescriptor secret_fd(create_exclusive(secret_path, 0600));
  std::optional<FileDescriptor> public_fd;
  try {
    public_fd.emplace(create_exclusive(public_path, 0644));
  } catch (...) {
    ::unlink(secret_path.c_str());
    throw;
  }
  try {
    write_all(secret_fd, secret_path, secret_certificate(keys));
    write_all(*public_fd, public_path, public_certificate(keys));
  } catch (...) {
    ::unlink(secret_path.c_str());
    ::unlink(public_path.c_str());
    throw;
  }
}

CurveKeys key_or_file(const std::string& key_or_path) {
  if (valid_curve_key(key_or_path)) return {key_or_path, {}};
  return read_key_file(key_or_path);
}

}  // namespace sagebus::wire
