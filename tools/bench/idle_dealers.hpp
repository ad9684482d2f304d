// Many idle ZeroMQ DEALER connections to one server, held by one thread of their own:
// the clients_10k load for sage-bus (each says HELLO and heartbeats, as the SDK would)
// and for the raw forwarder (each sends itself one message through it).
//
// A DEALER costs two descriptors (TCP and its mailbox), and RLIMIT_NOFILE's hard limit
// may be too low for 10,000 of them in one process (20,000 here, and unprivileged), so
// spawn_idle_dealers() spreads them over child processes (this executable again, with
// --idle-child) of kPerChild connections each.
//
// The IdleDealers constructor returns once every connection got its first answer, or
// throws std::runtime_error; the destructor closes them all. Not copyable; not meant to
// be used from several threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "curve.hpp"
#include "system.hpp"

namespace sagebus::bench {

struct IdleDealerProtocol {
  // The routing id of connection `i` (empty: let ZeroMQ choose).
  std::function<std::string(std::size_t i)> routing_id;
  // The first multipart message connection `i` sends; the first message it receives is
  // taken as the answer.
  std::function<std::vector<zmq::message_t>(std::size_t i)> hello;
  // Sent by every connection right after its hello, then once per `keepalive_interval`
  // (none when empty); `heard`: the server sent the connection something since its
  // previous keep-alive (true right after the hello).
  std::function<std::vector<zmq::message_t>(bool heard)> keepalive;
  std::chrono::milliseconds keepalive_interval{1000};
  // CURVE client keys for every connection (secured runs), or none.
  std::optional<CurveSet> curve;
};

// The protocols of the two systems that use DEALERs (system_sagebus.cpp, baseline_zmq.cpp),
// and the one named "sagebus" or "zmq".
IdleDealerProtocol sagebus_idle_protocol();
IdleDealerProtocol zmq_idle_protocol();
IdleDealerProtocol idle_protocol(std::string_view system);

inline constexpr std::size_t kPerChild = 4000;

// `count` idle connections to `endpoint` held by child processes of `self`; returns once
// all were answered, throws std::runtime_error when they were not. `curve_dir` not empty:
// they are CURVE clients with the keys there (curve.hpp).
std::unique_ptr<Handle> spawn_idle_dealers(const std::string& self, std::string_view system,
                                           const std::string& endpoint, std::size_t count,
                                           const std::string& curve_dir = {});

// The child's main (--idle-child SYSTEM,ENDPOINT,FIRST,COUNT [--curve DIR]): says "idle
// clients ready" on stderr and holds the connections until SIGTERM, or says why it failed
// and exits 1.
[[noreturn]] void run_idle_child(std::string_view system, const std::string& endpoint,
                                 std::size_t first, std::size_t count,
                                 const std::string& curve_dir);

class IdleDealers : public Handle {
 public:
  // Connections number first .. first + count - 1 (their names and routing ids).
  IdleDealers(std::string endpoint, std::size_t first, std::size_t count,
              IdleDealerProtocol protocol);
  ~IdleDealers() override;

 private:
  void run_();

  std::string endpoint_;
  std::size_t first_;
  std::size_t count_;
  IdleDealerProtocol protocol_;
  std::atomic<bool> stop_{false};
  std::atomic<int> state_{0};  // 0 connecting, 1 all answered, 2 failed
  std::string error_;          // written before state_ becomes 2
  std::thread thread_;
};

}  // namespace sagebus::bench
