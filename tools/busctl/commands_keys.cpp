// busctl keygen: a new CURVE key pair in certificate files, made here without a broker.
#include "commands.hpp"
#include "encoding.hpp"
#include "sagebus/wire/curve_keys.hpp"

namespace busctl {

void keygen(const Options& options, const std::string& name, std::ostream& out) {
  const sagebus::wire::CurveKeys keys = sagebus::wire::generate_curve_keys();
  sagebus::wire::write_key_pair(name, keys);
  const std::string public_file = name + ".key";
  const std::string secret_file = name + ".key_secret";
  if (options.json) {
    out << "{\"public_file\":" << json_quote(public_file)
        << ",\"secret_file\":" << json_quote(secret_file)
        << ",\"public_key\":" << json_quote(keys.public_key) << "}\n";
    return;
  }
  out << "public certificate: " << public_file << "\n"
      << "secret certificate: " << secret_file << " (mode 0600: keep it to its owner)\n"
      << "public key:         " << keys.public_key << "\n";
}

}  // namespace busctl
