#include "routing/topics.hpp"

#include <algorithm>
#include <functional>

namespace sagebus::broker {

struct SubscriptionTable::Node {
  std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>> children;
  std::unique_ptr<Node> star;       // the '*' child
  std::vector<Subscription*> here;  // patterns that end at this node
  std::vector<Subscription*> rest;  // patterns that continue with a final '>'

  bool empty() const noexcept { return children.empty() && !star && here.empty() && rest.empty(); }
};

namespace {

using Node = SubscriptionTable::Node;

void collect(Node& node, const std::vector<std::string_view>& tokens, std::size_t i,
             std::vector<Subscription*>& out) {
  // '>' takes one or more tokens: at least token i must be left.
  if (i < tokens.size()) out.insert(out.end(), node.rest.begin(), node.rest.end());
  if (i == tokens.size()) {
    out.insert(out.end(), node.here.begin(), node.here.end());
    return;
  }
  if (auto it = node.children.find(tokens[i]); it != node.children.end())
    collect(*it->second, tokens, i + 1, out);
  if (node.star) collect(*node.star, tokens, i + 1, out);
}

// Removes `sub` from the node its pattern leads to; prunes nodes left empty. Returns
// whether `node` itself is now empty.
bool remove_from(Node& node, const std::vector<std::string_view>& tokens, std::size_t i,
                 const Subscription* sub) {
  auto drop = [&](std::vector<Subscription*>& v) {
    auto it = std::find(v.begin(), v.end(), sub);
    if (it != v.end()) v.erase(it);
  };
  if (i == tokens.size()) {
    drop(node.here);
  } else if (tokens[i] == ">") {
    drop(node.rest);
  } else if (tokens[i] == "*") {
    if (node.star && remove_from(*node.star, tokens, i + 1, sub)) node.star.reset();
  } else if (auto it = node.children.find(tokens[i]); it != node.children.end()) {
    if (remove_from(*it->second, tokens, i + 1, sub)) node.children.erase(it);
  }
  return node.empty();
}

}  // namespace

void Subscription::add_credit(std::uint32_t more) noexcept {
  credit =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(std::uint64_t{credit} + more, kMaxCredit));
}

SubscriptionTable::SubscriptionTable() : root_(std::make_unique<Node>()) {}
SubscriptionTable::~SubscriptionTable() = default;

void SubscriptionTable::tokenize_(std::string_view text) {
  tokens_.clear();
  for (;;) {
    const auto dot = text.find('.');
    tokens_.push_back(text.substr(0, dot));
    if (dot == std::string_view::npos) return;
    text.remove_prefix(dot + 1);
  }
}

void SubscriptionTable::insert_(Subscription& sub) {
  remembered_.clear();
  tokenize_(sub.pattern);
  Node* node = root_.get();
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const std::string_view token = tokens_[i];
    if (token == ">") {  // valid patterns have it last only
      node->rest.push_back(&sub);
      return;
    }
    if (token == "*") {
      if (!node->star) node->star = std::make_unique<Node>();
      node = node->star.get();
      continue;
    }
    auto it = node->children.find(token);
    if (it == node->children.end())
      it = node->children.emplace(std::string(token), std::make_unique<Node>()).first;
    node = it->second.get();
  }
  node->here.push_back(&sub);
}

void SubscriptionTable::erase_(const Subscription& sub) {
  remembered_.clear();
  tokenize_(sub.pattern);
  remove_from(*root_, tokens_, 0, &sub);  // the root stays, even when empty
}

SubscriptionTable::Added SubscriptionTable::subscribe(const RoutingId& client, std::uint64_t id,
                                                      std::string_view pattern,
                                                      std::uint32_t credit,
                                                      std::size_t max_per_client) {
  const std::uint32_t window =
      credit == 0 ? Subscription::kDefaultCredit : std::min(credit, Subscription::kMaxCredit);
  if (Subscription* existing = find(client, id)) {
    if (existing->pattern != pattern) {
      erase_(*existing);
      existing->pattern = std::string(pattern);
      insert_(*existing);
    }
    existing->credit = window;
    return Added::replaced;
  }
  if (count(client) >= max_per_client) return Added::too_many;
  auto it = by_client_.find(client);
  if (it == by_client_.end()) it = by_client_.try_emplace(client).first;
  Subscription& sub = it->second[id];
  sub.client = client;
  sub.id = id;
  sub.pattern = std::string(pattern);
  sub.credit = window;
  insert_(sub);
  ++size_;
  return Added::added;
}

bool SubscriptionTable::unsubscribe(const RoutingId& client, std::uint64_t id) {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return false;
  auto sub = it->second.find(id);
  if (sub == it->second.end()) return false;
  erase_(sub->second);
  it->second.erase(sub);
  --size_;
  if (it->second.empty()) by_client_.erase(it);
  return true;
}

Subscription* SubscriptionTable::find(const RoutingId& client, std::uint64_t id) {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return nullptr;
  auto sub = it->second.find(id);
  return sub == it->second.end() ? nullptr : &sub->second;
}

std::size_t SubscriptionTable::remove_client(const RoutingId& client) {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return 0;
  const std::size_t n = it->second.size();
  for (const auto& [id, sub] : it->second)
    erase_(sub);
  by_client_.erase(it);
  size_ -= n;
  return n;
}

std::size_t SubscriptionTable::count(const RoutingId& client) const {
  auto it = by_client_.find(client);
  return it == by_client_.end() ? 0 : it->second.size();
}

void SubscriptionTable::match(std::string_view topic, std::vector<Subscription*>& out) {
  tokenize_(topic);
  collect(*root_, tokens_, 0, out);
}

const std::vector<Subscription*>& SubscriptionTable::matching(std::string_view topic) {
  if (auto it = remembered_.find(topic); it != remembered_.end()) return it->second;
  if (remembered_.size() >= kMaxRememberedTopics) remembered_.clear();
  auto& matched = remembered_.try_emplace(std::string(topic)).first->second;
  match(topic, matched);
  return matched;
}

void RecentTopics::count(std::string_view topic) {
  if (capacity_ == 0) return;
  if (auto it = index_.find(topic); it != index_.end()) {
    order_.splice(order_.begin(), order_, it->second);  // iterators stay valid
    ++it->second->second;
    return;
  }
  if (order_.size() >= capacity_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
  order_.emplace_front(std::string(topic), 1);
  index_.emplace(order_.front().first, order_.begin());
}

}  // namespace sagebus::broker
