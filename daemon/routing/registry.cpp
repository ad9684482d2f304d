#include "routing/registry.hpp"

#include <algorithm>
#include <cstring>

#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/host_clock.hpp"

namespace sagebus::broker {

bool Instance::has_method(std::string_view method) const {
  // Asked for every instance on every call. Most services have a few methods, where
  // equality (lengths first, then bytes) is cheaper than the ordering a binary search needs.
  constexpr std::size_t kScanned = 8;
  if (methods.size() <= kScanned)
    return std::find(methods.begin(), methods.end(), method) != methods.end();
  return std::binary_search(methods.begin(), methods.end(), method, std::less<>());
}

Instance* Service::find(ClientHandle client) {
  for (auto& i : instances)
    if (i.handle == client) return &i;
  return nullptr;
}

std::size_t Service::live_instances() const {
  return static_cast<std::size_t>(
      std::count_if(instances.begin(), instances.end(), [](const auto& i) { return !i.draining; }));
}

namespace {

// Up to 8 bytes as one word, without a library call: two overlapping loads of 4 bytes
// from each end (or, below 4 bytes, the first, middle and last byte) cover every byte,
// so two ids of the same length have the same word only when they are equal.
std::uint64_t pack(std::string_view rid) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(rid.data());
  const std::size_t n = rid.size();
  if (n >= 4) {
    std::uint32_t first = 0;
    std::uint32_t last = 0;
    std::memcpy(&first, p, 4);
    std::memcpy(&last, p + n - 4, 4);
    return (std::uint64_t{last} << 32) | first;
  }
  if (n == 0) return 0;
  return (std::uint64_t{p[0]} << 16) | (std::uint64_t{p[n / 2]} << 8) | p[n - 1];
}

}  // namespace

std::size_t RoutingIdHash::operator()(std::string_view rid) const noexcept {
  if (rid.size() > sizeof(std::uint64_t)) return std::hash<std::string_view>{}(rid);
  std::uint64_t word = pack(rid) ^ rid.size();
  word *= 0x9e3779b97f4a7c15ULL;  // Fibonacci hashing; the high bits are the mixed ones
  return static_cast<std::size_t>(word ^ (word >> 32));
}

bool RoutingIdEqual::operator()(std::string_view a, std::string_view b) const noexcept {
  if (a.size() != b.size()) return false;
  if (a.size() > sizeof(std::uint64_t)) return a == b;
  return pack(a) == pack(b);
}

bool Registry::hello(const RoutingId& rid, const wire::Hello& hello, int fd, TimePoint now) {
  auto [it, created] = clients_.try_emplace(rid);
  ClientInfo& c = it->second;
  if (created) {
    c.rid = rid;
    c.handle = handles_.add(&c);
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
  c.batches = hello.batches();
  c.same_host = wire::same_host(hello.host());
  c.sdk_version = hello.sdk_version().substr(0, wire::kMaxNameBytes);
  c.last_seen = now;
  c.idle = false;  // a HELLO, like any message but an idle HEARTBEAT, takes the short lease
  if (fd >= 0 && fd != c.fd) {
    if (c.fd >= 0) by_fd_.erase(c.fd);
    c.fd = fd;
    by_fd_[fd] = rid;
  }
  // Instances copy the client's identity for listings and the hash ring.
  for (const auto& service_name : c.services) {
    if (Service* s = service(service_name)) {
      if (Instance* i = s->find(c.handle)) {
        if (i->instance_id != c.instance_id) s->balancer.membership_changed();
        i->client_name = c.name;
        i->instance_id = c.instance_id;
        i->same_host = c.same_host;
        i->batches = c.batches;
      }
    }
  }
  return created;
}

ClientInfo* Registry::client(std::string_view rid) {
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

std::vector<RoutingId> Registry::expired(TimePoint now, std::chrono::milliseconds lease,
                                         std::chrono::milliseconds idle_lease) const {
  std::vector<RoutingId> out;
  for (const auto& [rid, c] : clients_)
    if (now - c.last_seen > (c.idle ? idle_lease : lease)) out.push_back(rid);
  return out;
}

void Registry::extend_leases(Clock::duration by) {
  for (auto& [rid, c] : clients_)
    c.last_seen += by;
}

std::vector<std::string> Registry::remove_client(const RoutingId& rid) {
  auto it = clients_.find(rid);
  if (it == clients_.end()) return {};
  const ClientHandle handle = it->second.handle;
  handles_.remove(handle);
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
    std::erase_if(s->instances, [&](const Instance& i) { return i.handle == handle; });
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
                                    [&](const Instance& i) { return i.handle != c->handle; });
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

  Instance* inst = svc.find(c->handle);
  const bool created = inst == nullptr;
  if (created) {
    inst = &svc.instances.emplace_back();
    inst->client = rid;
    inst->handle = c->handle;
    c->services.push_back(name);
  }
  inst->client_name = c->name;
  inst->instance_id = c->instance_id;
  inst->same_host = c->same_host;
  inst->batches = c->batches;
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
  const ClientInfo* c = client(rid);
  Service* s = c == nullptr ? nullptr : service(name);
  Instance* inst = s == nullptr ? nullptr : s->find(c->handle);
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
      if (Instance* i = s->find(c->handle)) i->draining = true;
      s->balancer.membership_changed();
    }
  }
}

void Registry::remove_instance(const std::string& name, const RoutingId& rid) {
  ClientInfo* c = client(rid);
  if (c == nullptr) return;
  if (Service* s = service(name)) {
    std::erase_if(s->instances, [&](const Instance& i) { return i.handle == c->handle; });
    s->balancer.membership_changed();
  }
  std::erase(c->services, name);
}

Service* Registry::service(std::string_view name) {
  if (Service* last = service(last_found_); last != nullptr && last->name == name) return last;
  auto it = services_.find(name);
  if (it == services_.end()) return nullptr;
  last_found_ = it->second.handle;
  return &it->second;
}

Service& Registry::ensure_service(const std::string& name) {
  auto [it, created] = services_.try_emplace(name);
  if (created) {
    it->second.name = name;
    it->second.handle = service_handles_.add(&it->second);
  }
  return it->second;
}

void Registry::prune(const std::string& name) {
  auto it = services_.find(name);
  if (it != services_.end() && it->second.instances.empty() && it->second.waiting.empty()) {
    service_handles_.remove(it->second.handle);
    services_.erase(it);
  }
}

std::size_t Registry::instance_count() const {
  std::size_t n = 0;
  for (const auto& [name, s] : services_)
    n += s.instances.size();
  return n;
}

}  // namespace sagebus::broker
