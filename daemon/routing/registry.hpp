// Registry: who is connected and what they serve. Clients by routing id (with their
// lease and the fd of their connection), by handle and by name, service instances, and
// services (their strategy, instances, wait queue and balancer).
//
// Each client gets a ClientHandle at its first HELLO (loop/handle_table.hpp) and keeps it until
// it is removed: the broker finds a message's client once, by routing id, and from then on
// refers to it by handle (calls record their caller and instance so). A handle kept after
// its client was removed resolves to nothing, even when a new client arrives with the
// same routing id; a HELLO again from a client still known keeps its handle. Each service
// entry gets a ServiceHandle likewise, from its creation to its pruning (a call placed in
// it remembers it).
//
// A name belongs to at most one client. The registry records names; the broker decides
// whether a HELLO may take a name (docs/protocol.md, "Connection names").
//
// The registration rules of docs/protocol.md live here: register_instance() answers
// exactly the status the REGISTER gets. The registry never sends anything and never
// touches calls; the broker decides what happens to calls when an instance leaves.
//
// A ClientInfo stays at its address until its client is removed. Other pointers and
// references into the registry are valid until the next call that adds or removes a
// client, instance or service. Used by the broker's loop thread only; not thread safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "loop/handle_table.hpp"
#include "routing/balancer.hpp"
#include "routing/pending.hpp"
#include "sagebus/wire.pb.h"

namespace sagebus::broker {

struct Principal;

struct ClientInfo {
  RoutingId rid;
  ClientHandle handle;
  std::string name;
  std::string instance_id;
  std::string sdk_version;
  int fd = -1;  // the connection's socket in this process, -1 when unknown
  // Its HELLO said it reads EVENT_BATCH, BATCH.
  bool event_batches = false;
  bool batches = false;
  // Its HELLO named this host's boot id: it shares the broker's steady clock, and its
  // REQUESTs' deadline_us counts (sagebus/wire/host_clock.hpp).
  bool same_host = false;
  TimePoint connected_at{};
  TimePoint last_seen{};
  // Its last message was a HEARTBEAT that said idle: it holds the idle lease.
  bool idle = false;
  std::vector<std::string> services;  // services it has an instance of
  // With auth: whose key the connection was accepted with (security/auth.hpp; the broker
  // points it at the principal of the rules now in force), and that key, in Z85.
  const Principal* principal = nullptr;
  std::string principal_name;
  std::string key;
};

struct Instance {
  RoutingId client;     // where calls are sent
  ClientHandle handle;  // which client it is
  std::string client_name;
  std::string instance_id;
  std::vector<std::string> methods;  // sorted, unique
  std::string version;
  std::uint32_t max_inflight = 1;
  std::uint32_t in_flight = 0;
  bool same_host = false;  // its client's (ClientInfo::same_host): REQUESTs carry deadline_us
  bool batches = false;    // its client's (ClientInfo::batches): REQUESTs may go in a BATCH
  std::uint64_t served = 0;
  bool draining = false;  // unregistered (or its peer found gone): never chosen again

  bool has_method(std::string_view method) const;
};

struct Service {
  std::string name;
  ServiceHandle handle;  // from its entry's creation to its pruning
  std::vector<Instance> instances;
  std::deque<CallId> waiting;  // FIFO of calls queued for capacity or for an instance
  Balancer balancer;

  wire::Strategy strategy() const noexcept { return balancer.strategy(); }
  Instance* find(ClientHandle client);
  std::size_t live_instances() const;
};

// Hash and equality of routing ids that take a view of the frame, so that finding a client
// builds no std::string. libzmq's own ids (a zero byte and a 32-bit counter, unless a peer
// sets one) fit in one word, which is mixed and compared whole instead of byte by byte.
struct RoutingIdHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view rid) const noexcept;
};
struct RoutingIdEqual {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept;
};

struct RegisterResult {
  wire::Status status = wire::OK;
  std::string message;
  bool created = false;  // a new instance, rather than an update of this connection's
};

class Registry {
 public:
  using Clients = std::unordered_map<RoutingId, ClientInfo, RoutingIdHash, RoutingIdEqual>;

  // Records a HELLO. Returns true for a new client, false for a refresh of a known one
  // (its registrations and handle are kept). The name must not belong to another client.
  bool hello(const RoutingId& rid, const wire::Hello& hello, int fd, TimePoint now);
  // The client with routing id `rid`, or nullptr.
  ClientInfo* client(std::string_view rid);
  // The client of `handle`, or nullptr when it was removed (or the handle is null).
  ClientInfo* client(ClientHandle handle) const noexcept { return handles_.get(handle); }
  // The client that has `name`, if any.
  std::optional<RoutingId> client_by_name(std::string_view name) const;
  const Clients& clients() const noexcept { return clients_; }

  // The client whose connection uses `fd`, if any.
  std::optional<RoutingId> client_by_fd(int fd) const;
  void forget_fd(int fd) { by_fd_.erase(fd); }

  // Clients whose last message is older than their lease: `idle_lease` for those that
  // hold it (ClientInfo::idle), else `lease`.
  std::vector<RoutingId> expired(TimePoint now, std::chrono::milliseconds lease,
                                 std::chrono::milliseconds idle_lease) const;
  // Moves every client's last_seen `by` later: time the broker itself was not reading
  // (stopped, starved of CPU) must not count against the leases of its clients.
  void extend_leases(Clock::duration by);

  // Removes the client and all its instances. Returns the services it had instances of.
  std::vector<std::string> remove_client(const RoutingId& rid);

  RegisterResult register_instance(const RoutingId& rid, const std::string& service,
                                   const wire::Registration& registration);
  // Stops new calls to the instance; removes it at once when it holds none. Returns
  // false when the connection had no instance of `service`.
  bool unregister_instance(const RoutingId& rid, const std::string& service);
  // Marks every instance of the client draining (its connection was found gone).
  void drain_client(const RoutingId& rid);
  // Removes one instance (a draining instance that finished its last call).
  void remove_instance(const std::string& service, const RoutingId& rid);

  // The service entry called `name`, or nullptr. The entry found last is remembered, so
  // that calls to one service in a row compare one name instead of searching the map.
  Service* service(std::string_view name);
  // The service entry of `handle`, or nullptr once that entry was pruned (even when a new
  // entry of the same name exists): a call remembers its service so, instead of looking
  // its name up again for its reply.
  Service* service(ServiceHandle handle) const noexcept { return service_handles_.get(handle); }
  // The service entry, created (with no instance) for calls that wait for one.
  Service& ensure_service(const std::string& name);
  // Erases the entry when it has neither instances nor waiting calls.
  void prune(const std::string& name);
  const std::map<std::string, Service, std::less<>>& services() const noexcept { return services_; }
  std::size_t instance_count() const;

 private:
  Clients clients_;  // node-based: a ClientInfo never moves
  HandleTable<ClientInfo> handles_;
  std::unordered_map<int, RoutingId> by_fd_;
  std::map<std::string, RoutingId, std::less<>> by_name_;
  std::map<std::string, Service, std::less<>> services_;  // node-based: a Service never moves
  HandleTable<Service> service_handles_;
  ServiceHandle last_found_;  // by service(name); resolves to nothing once pruned
};

}  // namespace sagebus::broker
