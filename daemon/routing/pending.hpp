// PendingCalls: the broker's call table. Each accepted REQUEST is a Call, known by a
// broker-wide dispatch id, from the moment it is accepted until the broker has nothing
// left to do for it. Pure bookkeeping: no sockets, and the clock is passed in.
//
// A point-to-point SEND is a Call too (kind `send`): its "instance" is the peer's
// connection, its dispatch is the DELIVER, and the peer's REPLY is routed and checked
// exactly like an instance's. While it is held for a peer that is not connected it is
// `waiting`, with the hold's end as its deadline; set_deadline() moves the deadline to
// the SEND's own when it is delivered.
//
// The invariant it enforces: each caller gets exactly one outcome. Claiming it
// (PendingCalls::claim_outcome) is the only way to that outcome and succeeds once per
// call; whoever gets `true` sends the answer, everyone after gets `false` and must send
// nothing.
//
// It also counts, per caller connection, the calls whose outcome that caller still awaits
// (pending_of: for the max-calls-per-client limit). A call stops counting when its outcome
// is claimed through the table or when it is erased, whichever comes first, so the count
// is exact whatever way a call ends. Connections are known by their ClientHandle
// (registry.hpp), and the counts are kept per handle slot: a handle that took over the
// slot of one gone starts at zero, and calls of the gone one no longer count anywhere.
//
// A call leaves the table when the broker is done with it, which is not always when the
// caller has its outcome: a dispatched call whose deadline passed stays (holding its
// instance's in-flight slot) until the instance replies late or is lost.
//
// A scatter-gather (a REQUEST with `all`) is a Call of kind `gather`, which holds the caller,
// the deadline and how many instances were asked (`asked`), and is never dispatched; each
// instance's part is a Call of kind `request` with no caller and `parent` = the gather's
// dispatch id, dispatched as any call, whose outcome the broker sends on to the gather's
// caller instead. A gather's parts are added right after it, one after another, so they are
// the calls gather.id + 1 .. gather.id + asked (PendingCalls::add: calls added one after another
// get consecutive ids) whose `parent` is the gather: found without a list of them.
//
// A caller names its calls by its own id: a CANCEL, or a CREDIT for a stream, finds the
// call by (caller connection, caller id) through an index of the request and gather calls
// (find_by_caller), kept as calls are added and erased. Its keys hold the caller's whole
// handle, so a call of a gone connection is never found for one that took its handle slot.
// A call cancelled while an instance held it is remembered for a while (the last
// kRecentCancels), so that the instance's REPLY or CHUNK sent before it heard of the cancel
// is told apart from one nobody was given (check_reply: `cancelled`).
//
// Used by the broker's loop thread only; not thread safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "loop/handle_table.hpp"
#include "routing/deadline_queue.hpp"

namespace sagebus::broker {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
// Whole milliseconds from `from` to `to`, negative when `to` is earlier: the unit of the
// broker's logs and admin answers.
inline std::int64_t millis_between(TimePoint from, TimePoint to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}
using RoutingId = std::string;
using CallId = std::uint64_t;
using ClientHandle = Handle;   // a connected client's, given by the Registry
using ServiceHandle = Handle;  // a service entry's, given by the Registry
struct MethodStats;

enum class CallState { waiting, dispatched };
// A gather's parts are `request`s with a `parent` (above).
enum class CallKind { request, send, gather };

class Call {
 public:
  CallId id = 0;  // the broker's dispatch id, assigned by PendingCalls::add
  CallKind kind = CallKind::request;
  ClientHandle caller;          // the caller's connection
  std::uint64_t caller_id = 0;  // the caller's own id for the call, echoed in its outcome
  std::string service;
  ServiceHandle service_entry;  // its service's registry entry, once placed (route_)
  std::string method;
  std::string routing_key;
  std::string traceparent;
  std::vector<std::pair<std::string, std::string>> headers;
  bool idempotent = false;
  bool wait_for_ready = false;
  bool stream = false;  // the caller reads a stream: CHUNKs, then one REPLY
  // Moved to the instance at dispatch; an idempotent call not yet retried sends copies
  // (which share the buffers) and keeps these for its retry.
  std::vector<zmq::message_t> payload;
  TimePoint accepted{};
  TimePoint deadline{};  // the current timer: for a held send, the hold's end

  // kind == send: the target connection's name, and the SEND's own deadline. A part of a
  // gather: its instance's connection name, which names its outcome to the caller.
  std::string peer;
  TimePoint send_deadline{};

  CallState state = CallState::waiting;
  ClientHandle instance;    // the connection it was dispatched to, when dispatched
  bool retried = false;     // dispatched a second time after losing its first instance
  std::string lost_reason;  // why its first instance was lost, for a retry that fails
  bool caller_lost = false;
  MethodStats* stats = nullptr;  // its service.method's metrics (calls, gathers; not parts)
  // A stream's flow control: the bytes of chunks its instance may still send (the
  // caller's window, at most wire::kMaxStreamWindow, less wire::chunk_cost of each chunk
  // forwarded: below 0 when the last one overran it), and chunks forwarded to the caller
  // so far. A gather's `chunks` are the outcomes of its parts sent to its caller so far.
  std::int64_t credit = 0;
  std::uint32_t asked = 0;  // a gather: its parts, one per instance asked
  std::uint64_t chunks = 0;
  CallId parent = 0;  // a part of a gather: the gather's dispatch id (0: none)

  // True exactly once: the caller of this method owns the caller's one outcome. The
  // broker claims through PendingCalls::claim_outcome, which also ends the call's count
  // in pending_of; claimed here directly, the call counts until it is erased.
  bool claim_outcome() noexcept {
    if (outcome_claimed_) return false;
    outcome_claimed_ = true;
    return true;
  }
  bool outcome_claimed() const noexcept { return outcome_claimed_; }

 private:
  friend class PendingCalls;
  // Makes it a default Call again, keeping the storage of its strings and vectors.
  void reset_() noexcept;

  bool outcome_claimed_ = false;
  bool counted_ = false;  // counted in PendingCalls::pending_of(caller)
  bool indexed_ = false;  // in PendingCalls' index by caller (a request or gather with a caller)
};

class PendingCalls {
 public:
  // Dispatch ids start at `first_id` and rise; see first_dispatch_id().
  explicit PendingCalls(std::size_t capacity, CallId first_id = 1)
      : capacity_(capacity), next_id_(first_id) {}

  bool full() const noexcept { return calls_.size() >= capacity_; }
  // How many more calls the table takes now (a gather needs one per part, and its own).
  std::size_t room() const noexcept {
    return calls_.size() < capacity_ ? capacity_ - calls_.size() : 0;
  }
  // A lower capacity keeps the calls already in the table; it refuses new ones.
  void set_capacity(std::size_t capacity) noexcept { capacity_ = capacity; }
  std::size_t size() const noexcept { return calls_.size(); }

  // Enters `call` with a fresh dispatch id and returns it, or nullptr when the table is
  // full. The reference stays valid until erase(id). Calls added one after another, with
  // nothing else added between them, have consecutive ids.
  Call* add(Call call) {
    return add_in_place([&](Call& blank) { blank = std::move(call); });
  }
  // The same for a call that `fill(Call&)` writes into a blank Call in place, which lends
  // it the storage of a call erased before (strings, payload vector): the broker's calls
  // then allocate nothing. `fill` is not called when the table is full.
  template <class Fill>
  Call* add_in_place(Fill&& fill) {
    if (full()) return nullptr;
    Table::node_type node = blank_node_();
    fill(node.mapped());
    return enter_(std::move(node));
  }
  Call* find(CallId id);
  const Call* find(CallId id) const;
  void erase(CallId id);
  // The request or gather that connection `caller` made under its own id `caller_id`, or
  // nullptr: none, or it was erased. (Two calls under one id, which an SDK never sends:
  // the first.)
  Call* find_by_caller(ClientHandle caller, std::uint64_t caller_id);
  // Erases a call that its caller cancelled (or left); when an instance held it, its
  // dispatch id and instance are remembered among the last kRecentCancels, for
  // check_reply.
  void erase_cancelled(CallId id);

  // Claims the caller's one outcome of `call` (Call::claim_outcome) and stops counting
  // the call as pending for its caller. True exactly once per call.
  bool claim_outcome(Call& call);
  // Calls and sends made by connection `caller` whose outcome it still awaits.
  std::size_t pending_of(ClientHandle caller) const;

  void set_dispatched(Call& call, ClientHandle instance);
  void set_waiting(Call& call);
  // Moves the call's deadline (its earlier one is forgotten).
  void set_deadline(Call& call, TimePoint deadline);

  enum class ReplyCheck {
    accepted,      // the reply comes from the instance the call was dispatched to
    unknown_id,    // no such call: never issued, or already finished
    wrong_sender,  // another connection, or the call is not dispatched
    cancelled,     // a call cancelled lately (erase_cancelled) while `from` held it
  };
  // Whether a REPLY (or CHUNK) with dispatch id `id` from connection `from` belongs to a
  // call. Changes nothing; on `accepted`, *out points at the call.
  ReplyCheck check_reply(CallId id, ClientHandle from, Call** out);

  // The earliest deadline of a call whose caller still awaits its outcome.
  std::optional<TimePoint> next_deadline();
  // Ids of the calls whose deadline is at or before `now` and whose caller still awaits
  // its outcome, earliest first. Each id is returned once.
  std::vector<CallId> take_expired(TimePoint now);

  // Every call, for scans on rare events (a client lost) and for admin counts.
  template <class F>
  void for_each(F&& f) {
    for (auto& [id, call] : calls_)
      f(call);
  }
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [id, call] : calls_)
      f(call);
  }

  // Entries in the deadline queue, stale ones included (for tests of lazy deletion).
  std::size_t heap_size() const noexcept { return deadlines_.size(); }
  // Entries in the index by caller (for tests).
  std::size_t indexed() const noexcept { return by_caller_.size(); }

  // Cancelled dispatches remembered for check_reply.
  static constexpr std::size_t kRecentCancels = 4096;

 private:
  using Entry = std::pair<TimePoint, CallId>;
  using Table = std::unordered_map<CallId, Call>;
  // A node of calls_ holding a default Call, not in the table.
  Table::node_type blank_node_();
  Call* enter_(Table::node_type node);
  void drop_stale_top_();
  void compact_heap_();
  void uncount_(Call& call);
  void index_(Call& call);
  void unindex_(Call& call);

  // Erased calls' nodes, blanked and kept for add(): a call then costs no allocation and
  // no free. As many as a burst of calls ends in one tick, in the common case; the rest
  // are freed.
  static constexpr std::size_t kSpareNodes = 64;

  std::size_t capacity_;
  CallId next_id_;
  Table calls_;
  std::vector<Table::node_type> spare_;
  Table scratch_;  // where blank_node_() makes a node when there is no spare
  // Indexed by the caller's handle slot: whose count it is, and the count.
  struct CallerCount {
    ClientHandle caller;
    std::size_t pending = 0;
  };
  std::vector<CallerCount> pending_by_caller_;
  // The index by caller: (caller's handle, its id for the call) -> dispatch id. Its nodes
  // are reused as the call table's are, so that a call costs no allocation here either.
  struct CallerKey {
    ClientHandle caller;
    std::uint64_t id = 0;
    friend bool operator==(const CallerKey&, const CallerKey&) = default;
  };
  struct CallerKeyHash {
    std::size_t operator()(const CallerKey& key) const noexcept;
  };
  using ByCaller = std::unordered_map<CallerKey, CallId, CallerKeyHash>;
  ByCaller by_caller_;
  std::vector<ByCaller::node_type> spare_keys_;
  ByCaller scratch_keys_;  // where index_ makes a node when there is no spare
  // Cancelled dispatches, a ring of the last kRecentCancels (grown as cancels come).
  struct Cancelled {
    CallId id = 0;
    ClientHandle instance;
  };
  std::vector<Cancelled> cancelled_;
  std::size_t next_cancelled_ = 0;
  // Deadlines, earliest first (deadline_queue.hpp: calls of one timeout cost no heap
  // moves). Finished calls are not searched for and removed; their entries (and those of
  // moved deadlines) are skipped when they reach the top, and the queue is rebuilt when
  // stale entries outnumber live calls.
  DeadlineQueue<TimePoint, CallId> deadlines_;
};

// The first dispatch id of a broker started at `started` (system clock): its Unix time
// in ms above 20 bits of counter, below the top bit that the SDK's own ids carry. A
// restarted broker therefore never reuses an id the one before it gave a dispatch, so a
// reply from a handler that outlived the old broker cannot answer a new call.
CallId first_dispatch_id(std::chrono::system_clock::time_point started);

}  // namespace sagebus::broker
