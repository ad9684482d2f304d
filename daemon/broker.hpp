// Broker: the sage-busd event loop. It owns the ROUTER socket, the socket monitor and
// every table (registry, call table); one thread runs it and nothing else touches them,
// so there are no locks.
//
// Each tick is linear: poll the ROUTER and the monitor (timeout = the next call deadline
// or lease check, at most 1 s); receive a batch of messages and handle each (one handler
// per Header.kind); act on connections the monitor saw close; run timers (call deadlines,
// leases). Every send is non-blocking; a peer found gone is removed after the handler
// that found it, never while a table is being iterated.
//
// Construction binds the endpoints (throws BindError); run() loops until the stop flag
// is set (e.g. by a signal handler), then shuts down: every pending call is answered
// UNAVAILABLE and every client is sent GOODBYE. Not thread safe, except that `stop` may
// be set from any thread or signal handler.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "admin.hpp"
#include "config.hpp"
#include "metrics.hpp"
#include "monitor.hpp"
#include "pending.hpp"
#include "registry.hpp"
#include "sagebus/wire.pb.h"
#include "token_bucket.hpp"

namespace sagebus::broker {

class BindError : public std::runtime_error {
 public:
  BindError(std::string endpoint, int code, const std::string& what)
      : std::runtime_error(what), endpoint_(std::move(endpoint)), code_(code) {}
  const std::string& endpoint() const noexcept { return endpoint_; }
  int code() const noexcept { return code_; }  // the errno from zmq_bind

 private:
  std::string endpoint_;
  int code_;
};

class Broker {
 public:
  // Binds every endpoint of `config`; throws BindError naming the one that failed.
  explicit Broker(BrokerConfig config);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // The endpoints as bound ("tcp://127.0.0.1:*" resolved to its port).
  const std::vector<std::string>& endpoints() const noexcept { return identity_.endpoints; }

  // Runs the loop until `stop` is true, then shuts down (see the header comment).
  void run(const std::atomic<bool>& stop);

  const Metrics& metrics() const noexcept { return metrics_; }

 private:
  using Frames = std::vector<zmq::message_t>;
  using HeaderMap = google::protobuf::Map<std::string, std::string>;
  enum class Sent { ok, would_block, peer_gone };
  enum class Placement { done, wait };

  // The tick (broker.cpp)
  void tick_();
  std::chrono::milliseconds poll_timeout_();
  void receive_batch_();
  void handle_message_(Frames& frames);
  void handle_connection_events_();
  void check_leases_();
  void shutdown_();

  // Connections and registrations (broker.cpp)
  void on_hello_(const RoutingId& from, const zmq::message_t& header_frame);
  void on_heartbeat_(const RoutingId& from);
  void on_goodbye_(const RoutingId& from);
  void on_register_(const RoutingId& from);
  void on_unregister_(const RoutingId& from);
  void on_unknown_peer_(const RoutingId& from);
  void schedule_removal_(const RoutingId& rid, std::string why);
  void apply_removals_();
  void remove_client_(const RoutingId& rid, const std::string& why);

  // Calls (broker_calls.cpp)
  void on_request_(const RoutingId& from, Frames& frames);
  void on_reply_(const RoutingId& from, Frames& frames);
  void route_(Call& call);
  Placement place_(Call& call, Service* service);
  Sent dispatch_(Call& call, Instance& instance);
  void pump_(const std::string& service);
  void run_deadlines_();
  void instance_lost_(CallId id, const std::string& why);
  void forget_caller_(const RoutingId& rid);

  // Sending (broker.cpp). answer_caller_ is the only way a call's caller hears its
  // outcome; reply_ answers a message that is not a call in the table.
  Sent send_(const RoutingId& to, wire::Header& header, std::span<zmq::message_t> payload,
             bool copy_payload);
  bool answer_caller_(Call& call, wire::Status status, std::string_view message,
                      std::span<zmq::message_t> payload = {}, const HeaderMap* headers = nullptr);
  void answer_request_(const RoutingId& to, std::uint64_t id, wire::Status status,
                       std::string_view message, std::span<zmq::message_t> payload = {},
                       const HeaderMap* headers = nullptr);
  Sent reply_(const RoutingId& to, std::uint64_t id, wire::Status status, std::string_view message);
  // The one place an outcome's status becomes a counter.
  void count_outcome_(wire::Status status, Sent sent);

  BrokerConfig config_;
  BrokerIdentity identity_;
  zmq::context_t context_;
  zmq::socket_t router_;
  std::optional<ConnectionMonitor> monitor_;

  Registry registry_;
  PendingCalls calls_;
  Metrics metrics_;
  TokenBucket hello_limiter_{10000.0, 10000.0};

  TimePoint now_{};  // cached once per tick
  TimePoint next_lease_check_{};
  wire::Header in_;   // reused for every decoded header
  wire::Header out_;  // reused for every header the broker sends
  Frames frames_;
  std::vector<InstanceLoad> loads_;  // scratch for the balancer
  std::vector<std::pair<RoutingId, std::string>> removals_;
};

}  // namespace sagebus::broker
