#include "registry.hpp"

#include <algorithm>

#include "sagebus/wire/frame.hpp"

namespace sagebus::broker {

bool Instance::has_method(std::string_view method) const {
  return std::binary_search(methods.begin(), methods.end(), method, std::less<>());
}

Instance* Service::find(const RoutingId& client) {
  for (auto& i : instances)
    if (i.client == client) return &i;
  return nullptr;
}

std::size_t Service::live_instances() const {
  return static_cast<std::size_t>(
      std::count_if(instances.begin(), instances.end(), [](const auto& i) { return !i.draining; }));
}

bool Registry::hello(const RoutingId& rid, const wire::Hello& hello, int fd, TimePoint now) {
  auto [it, created] = clients_.try_emplace(rid);
  ClientInfo& c = it->second;
  if (created) {
    c.rid = rid;
    c.connected_at = now;
  }
  const std::string name = hello.name().substr(0, wire::kMaxNameBytes);
  if (!created && c.name != name) {
    auto owner = by_name_.find(c.name);
    if (owner != by_name_.end() && owner->second == rid) by_name_.erase(owner);
  }
  c.name = name;
  by_name_[name] = rid;
  c.instance_id = hello.instance_id().substr(0, wire::kMaxNameBytes);
  c.event_batches = hello.event_batches();
  c.sdk_version = hello.sdk_version().substr(0, wire::kMaxNameBytes);
  c.last_seen = now;
  if (fd >= 0 && fd != c.fd) {
    if (c.fd >= 0) by_fd_.erase(c.fd);
    c.fd = fd;
    by_fd_[fd] = rid;
  }
  // Instances copy the client's identity for listings and the hash ring.
  for (const auto& service_name : c.services) {
    if (Service* s = service(service_name)) {
      if (Instance* i = s->find(rid)) {
        if (i->instance_id != c.instance_id) s->balancer.membership_changed();
        i->client_name = c.name;
        i->instance_id = c.instance_id;
      }
    }
  }
  return created;
}

ClientInfo* Registry::client(const RoutingId& rid) {
  auto it = clients_.find(rid);
  return it == clients_.end() ? nullptr : &it->second;
}

std::optional<RoutingId> Registry::client_by_name(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<RoutingId> Registry::client_by_fd(int fd) const {
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return std::nullopt;
  return it->second;
}

std::vector<RoutingId> Registry::expired(TimePoint now, std::chrono::milliseconds lease) const {
  std::vector<RoutingId> out;
  for (const auto& [rid, c] : clients_)
    if (now - c.last_seen > lease) out.push_back(rid);
  return out;
}

void Registry::extend_leases(Clock::duration by) {
  for (auto& [rid, c] : clients_)
    c.last_seen += by;
}

std::vector<std::string> Registry::remove_client(const RoutingId& rid) {
  auto it = clients_.find(rid);
  if (it == clients_.end()) return {};
  std::vector<std::string> left = std::move(it->second.services);
  if (it->second.fd >= 0) {
    auto f = by_fd_.find(it->second.fd);
    if (f != by_fd_.end() && f->second == rid) by_fd_.erase(f);
  }
  if (auto owner = by_name_.find(it->second.name); owner != by_name_.end() && owner->second == rid)
    by_name_.erase(owner);
  clients_.erase(it);
  for (const auto& name : left) {
    Service* s = service(name);
    if (s == nullptr) continue;
    std::erase_if(s->instances, [&](const Instance& i) { return i.client == rid; });
    s->balancer.membership_changed();
  }
  return left;
}

RegisterResult Registry::register_instance(const RoutingId& rid, const std::string& name,
                                           const wire::Registration& reg) {
  ClientInfo* c = client(rid);
  if (c == nullptr) return {wire::INTERNAL, "register from an unknown connection", false};
  if (auto error = wire::check_name("service name", name))
    return {wire::INVALID_ARGUMENT, *error, false};
  if (name.front() == '$')
    return {wire::PERMISSION_DENIED,
            "service name '" + name + "' is reserved: names starting with '$' belong to the broker",
            false};
  if (reg.methods().empty())
    return {wire::INVALID_ARGUMENT, "registration of '" + name + "' lists no methods", false};
  for (const auto& m : reg.methods())
    if (auto error = wire::check_name("method name", m))
      return {wire::INVALID_ARGUMENT, *error, false};
  if (reg.max_inflight() == 0)
    return {wire::INVALID_ARGUMENT, "registration of '" + name + "' has max_inflight 0", false};
  if (!wire::Strategy_IsValid(reg.strategy()))
    return {wire::INVALID_ARGUMENT, "registration of '" + name + "' has an unknown strategy",
            false};

  Service* s = service(name);
  if (s != nullptr) {
    const bool others = std::any_of(s->instances.begin(), s->instances.end(),
                                    [&](const Instance& i) { return i.client != rid; });
    if (others && s->strategy() != reg.strategy())
      return {wire::INVALID_ARGUMENT,
              "service '" + name + "' uses strategy " +
                  std::string(wire::strategy_name(s->strategy())) +
                  "; its live instances disagree with " +
                  std::string(wire::strategy_name(reg.strategy())),
              false};
  }
  Service& svc = ensure_service(name);
  if (svc.strategy() != reg.strategy()) svc.balancer = Balancer(reg.strategy());

  Instance* inst = svc.find(rid);
  const bool created = inst == nullptr;
  if (created) {
    inst = &svc.instances.emplace_back();
    inst->client = rid;
    c->services.push_back(name);
  }
  inst->client_name = c->name;
  inst->instance_id = c->instance_id;
  inst->methods.assign(reg.methods().begin(), reg.methods().end());
  std::sort(inst->methods.begin(), inst->methods.end());
  inst->methods.erase(std::unique(inst->methods.begin(), inst->methods.end()), inst->methods.end());
  inst->version = reg.version();
  inst->max_inflight = reg.max_inflight();
  inst->draining = false;
  svc.balancer.membership_changed();
  return {wire::OK, {}, created};
}

bool Registry::unregister_instance(const RoutingId& rid, const std::string& name) {
  Service* s = service(name);
  Instance* inst = s == nullptr ? nullptr : s->find(rid);
  if (inst == nullptr) return false;
  inst->draining = true;
  s->balancer.membership_changed();
  if (inst->in_flight == 0) remove_instance(name, rid);
  return true;
}

void Registry::drain_client(const RoutingId& rid) {
  ClientInfo* c = client(rid);
  if (c == nullptr) return;
  for (const auto& name : c->services) {
    if (Service* s = service(name)) {
      if (Instance* i = s->find(rid)) i->draining = true;
      s->balancer.membership_changed();
    }
  }
}

void Registry::remove_instance(const std::string& name, const RoutingId& rid) {
  if (Service* s = service(name)) {
    std::erase_if(s->instances, [&](const Instance& i) { return i.client == rid; });
    s->balancer.membership_changed();
  }
  if (ClientInfo* c = client(rid)) std::erase(c->services, name);
}

Service* Registry::service(std::string_view name) {
  auto it = services_.find(name);
  return it == services_.end() ? nullptr : &it->second;
}

Service& Registry::ensure_service(const std::string& name) {
  auto [it, created] = services_.try_emplace(name);
  if (created) it->second.name = name;
  return it->second;
}

void Registry::prune(const std::string& name) {
  auto it = services_.find(name);
  if (it != services_.end() && it->second.instances.empty() && it->second.waiting.empty())
    services_.erase(it);
}

std::size_t Registry::instance_count() const {
  std::size_t n = 0;
  for (const auto& [name, s] : services_)
    n += s.instances.size();
  return n;
}

}  // namespace sagebus::broker
