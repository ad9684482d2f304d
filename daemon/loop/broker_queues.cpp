// The legacy-queue half of the Broker (docs/protocol.md, "Legacy queues") and its durable
// store (docs/operations.md, "The store"). LegacyQueues keeps the queues and decides; this
// file turns its QueueEffects into messages and store writes: the answers owed to putters
// and readers (once what they say is stored), and the publish of every item appended.
#include <spdlog/spdlog.h>

#include "loop/broker.hpp"
#include "sagebus/admin.pb.h"

namespace sagebus::broker {

// ---------------------------------------------------------------------------------------
// The store

void Broker::open_store_() {
  if (config_.store.empty()) {
    spdlog::info(
        "no store (--store): legacy queues live in memory, and their items are lost when "
        "sage-busd stops");
    return;
  }
  Recovery recovery;
  store_ = Store::open(config_.store, recovery);
  if (!recovery.moved_aside.empty())
    spdlog::error(
        "the store {} failed its check ({}); it was moved aside to {} and sage-busd starts "
        "with an empty store. The queues it held are in that file: see docs/operations.md, "
        "\"The store\", to look into it",
        config_.store, recovery.check_error, recovery.moved_aside);
  std::size_t handed_out = 0;
  for (const auto& item : recovery.items)
    if (item.deliveries > 0) ++handed_out;
  const std::size_t queues = recovery.queues.size(), items = recovery.items.size();
  queues_.set_durable_default(true);
  queues_.restore(recovery, Clock::now());
  spdlog::info(
      "store {}: {} queues and {} items read back in {} ms ({} were handed out before and "
      "will be redelivered)",
      config_.store, queues, items, recovery.took.count(), handed_out);
  store_fd_ = store_->notify_fd();
}

void Broker::collect_store_() {
  store_->collect(store_done_);
  for (StoreDone& done : store_done_) {
    auto it = tickets_.find(done.ticket);
    if (it == tickets_.end()) continue;
    StoreTicket ticket = std::move(it->second);
    tickets_.erase(it);
    if (ticket.compact) {
      if (!done.ok) spdlog::warn("store.compact failed: {}", done.error);
      // The answer carries the store's figures after it (admin.StoreStatus).
      admin::StoreStatus after;
      fill_store_status(*store_, after);
      const std::string bytes = after.SerializeAsString();
      for (auto& a : ticket.answers) {
        if (!done.ok) {
          a.status = wire::UNAVAILABLE;
          a.message = done.error;
        } else {
          a.message += ", " + std::to_string(after.bytes()) + " after";
          a.payload.emplace_back(bytes.data(), bytes.size());
        }
      }
    } else if (done.ok) {
      if (store_failing_)
        spdlog::info("the store {} writes again; puts are stored", store_->path());
      store_failing_ = false;
    } else {
      if (store_error_log_limiter_.take(now_))
        spdlog::error("{}; puts to durable queues are answered UNAVAILABLE until a write succeeds",
                      done.error);
      store_failing_ = true;
      // Acknowledgements and declarations stand in memory, and the store is given them
      // again with its next write; a reader is told it is not on disk yet.
      for (auto& a : ticket.answers)
        if (a.status == wire::OK && a.tag == 0)
          a.message = "done, but not yet stored (" + done.error + ")";
    }
    QueueEffects next;
    send_queue_answers_(ticket.answers, next);
    if (done.ok)
      queues_.committed(ticket.staged, next);
    else
      queues_.abandoned(ticket.staged, done.error, next);
    apply_(next);
  }
  store_done_.clear();
}

// ---------------------------------------------------------------------------------------
// Messages

bool Broker::check_queue_name_(const RoutingId& from) {
  if (auto error = queues_.check_name(in_.queue())) {
    answer_(from, in_.id(), wire::INVALID_ARGUMENT, *error);
    return false;
  }
  return true;
}

void Broker::on_queue_put_(ClientInfo& sender, Frames& frames) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  // An item may stay in its queue for long, so it owns its bytes: a frame libzmq read into
  // its shared receive buffer (one smaller than the buffer's 8 KiB) is copied, or it
  // would keep that whole buffer alive — 8 KiB per queued item of 64 bytes.
  constexpr std::size_t kSharedReceiveBuffer = 8192;
  Frames item;
  item.reserve(frames.size() - 2);
  for (std::size_t i = 2; i < frames.size(); ++i) {
    if (frames[i].size() < kSharedReceiveBuffer)
      item.emplace_back(frames[i].data(), frames[i].size());
    else
      item.push_back(std::move(frames[i]));
  }
  QueueEffects fx;
  queues_.put(from, in_.id(), in_.queue(), std::move(item), now_,
              now_ + std::chrono::milliseconds(in_.timeout_ms()), fx,
              std::chrono::milliseconds(in_.ttl_ms()));
  apply_(fx);
}

void Broker::on_queue_get_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  QueueEffects fx;
  queues_.get(from, in_.id(), in_.queue(), in_.tag(), now_,
              now_ + std::chrono::milliseconds(in_.timeout_ms()), fx);
  apply_(fx);
}

void Broker::on_queue_ack_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  QueueEffects fx;
  // Tags are broker-wide, so the queue name is not needed to find the item.
  if (queues_.ack(from, in_.tag(), fx))
    fx.answers.push_back({from, in_.id(), wire::OK, {}, 0, 0, {}});
  else
    fx.answers.push_back(
        {from,
         in_.id(),
         wire::NOT_FOUND,
         "tag " + std::to_string(in_.tag()) +
             " is not held by this connection (an item is held by the connection that got "
             "it, until that connection closes or the broker restarts; then it is redelivered)",
         0,
         0,
         {}});
  apply_(fx);
}

void Broker::on_queue_nack_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  QueueEffects fx;
  if (queues_.nack(from, in_.tag(), fx))
    fx.answers.push_back({from, in_.id(), wire::OK, {}, 0, 0, {}});
  else
    fx.answers.push_back({from,
                          in_.id(),
                          wire::NOT_FOUND,
                          "tag " + std::to_string(in_.tag()) +
                              " is not held by this connection (it went back to its queue "
                              "already, or the broker restarted)",
                          0,
                          0,
                          {}});
  apply_(fx);
}

void Broker::on_queue_size_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  answer_(from, in_.id(), wire::OK, {}, queues_.size(in_.queue()));
}

void Broker::on_queue_declare_(ClientInfo& sender, Frames&) {
  const RoutingId& from = sender.rid;
  if (!check_queue_name_(from)) return;
  QueueEffects fx;
  queues_.declare(from, in_.id(), in_.queue(), in_.transient(), now_, fx);
  apply_(fx);
}

bool Broker::answer_store_admin_(const RoutingId& from, std::uint64_t id,
                                 std::string_view request) {
  const std::string& method = in_.method();
  if (method != "queue.purge" && method != "store.compact") return false;
  if (method == "store.compact") {
    if (!store_) {
      answer_(from, id, wire::UNAVAILABLE,
              "sage-busd runs without a store (--store): nothing to compact");
      return true;
    }
    const std::uint64_t ticket = next_ticket_++;
    StoreTicket& t = tickets_[ticket];
    t.compact = true;
    const std::uint64_t before = store_->stats().bytes;
    t.answers.push_back(
        {from,
         id,
         wire::OK,
         "compacted " + store_->path() + "; it took " + std::to_string(before) + " bytes before",
         0,
         0,
         {}});
    store_->compact(ticket);
    return true;
  }
  admin::QueueRequest purge;
  if (auto refused = read_queue_request(method, request, purge)) {
    answer_(from, id, refused->status, refused->message);
    return true;
  }
  QueueEffects fx;
  admin::QueuePurged purged;
  purged.set_items(queues_.purge(purge.name(), fx));
  const std::string bytes = purged.SerializeAsString();
  Frames payload;
  payload.emplace_back(bytes.data(), bytes.size());
  fx.answers.push_back({from, id, wire::OK, {}, 0, 0, std::move(payload), purged.items()});
  if (purged.items() > 0)
    spdlog::info("queue '{}' purged: {} items removed", purge.name(), purged.items());
  apply_(fx);
  return true;
}

void Broker::apply_(QueueEffects& fx) {
  QueueEffects current = std::move(fx);
  for (;;) {
    metrics_.queue_puts += current.puts;
    metrics_.queue_gets += current.gets;
    metrics_.queue_redeliveries += current.redeliveries;
    for (std::size_t i = 0; i < kLimitCount; ++i)
      metrics_.limit_refusals[i] += current.refused[i];
    for (auto& p : current.publishes) {
      Published payload{std::span<zmq::message_t>(p.payload)};
      publish_(p.topic, payload, true);
    }
    QueueEffects next;
    if (!current.writes.empty() || !current.staged.empty()) {
      // Writes only come from durable queues, which only exist with a store.
      const std::uint64_t ticket = next_ticket_++;
      StoreTicket& t = tickets_[ticket];
      std::vector<QueueAnswer> now;
      for (auto& a : current.answers)
        (a.now ? now : t.answers).push_back(std::move(a));
      t.staged = std::move(current.staged);
      store_->submit(ticket, std::move(current.writes));
      send_queue_answers_(now, next);
    } else {
      send_queue_answers_(current.answers, next);
    }
    if (next.empty()) return;
    current = std::move(next);
  }
}

void Broker::send_queue_answers_(std::vector<QueueAnswer>& answers, QueueEffects& next) {
  for (auto& a : answers) {
    reply_head_(a.id, a.status, a.message, nullptr, a.count, a.tag);
    if (a.deliveries > 1) head_.varint(wire::Header::kRedeliveredFieldNumber, 1);
    if (a.deliveries > 0) head_.varint(wire::Header::kDeliveriesFieldNumber, a.deliveries);
    const Sent sent = outbox_.send(a.to, head_.frame(), a.payload);
    metrics_.count_outcome(a.status, sent == Sent::ok);
    // A reader that could not be told keeps nothing: its item goes back to the front
    // (and on to the next waiting reader, who is a different one, so this ends).
    if (sent != Sent::ok && a.tag != 0) {
      queues_.give_back(a.tag, next);
      if (metrics_.queue_gets > 0) --metrics_.queue_gets;
    }
  }
}

void Broker::run_queue_deadlines_() {
  QueueEffects fx;
  queues_.expire(now_, fx);
  if (!fx.empty()) apply_(fx);
}

}  // namespace sagebus::broker
