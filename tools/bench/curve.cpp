#include "curve.hpp"

namespace sagebus::bench {

CurveSet make_curve_set(const std::string& dir) {
  CurveSet keys{wire::generate_curve_keys(), wire::generate_curve_keys()};
  wire::write_key_pair(dir + "/server", keys.server);
  wire::write_key_pair(dir + "/client", keys.client);
  return keys;
}

CurveSet read_curve_set(const std::string& dir) {
  return {wire::read_key_file(dir + "/server.key_secret"),
          wire::read_key_file(dir + "/client.key_secret")};
}

void curve_server(zmq::socket_t& socket, const CurveSet& keys) {
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, keys.server.secret_key);
}

void curve_client(zmq::socket_t& socket, const CurveSet& keys) {
  socket.set(zmq::sockopt::curve_serverkey, keys.server.public_key);
  socket.set(zmq::sockopt::curve_publickey, keys.client.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.client.secret_key);
}

}  // namespace sagebus::bench
