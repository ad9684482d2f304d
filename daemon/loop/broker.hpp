// Broker: the sage-busd event loop. It owns the ROUTER socket, the socket monitor and
// every table (registry, call table, subscriptions, legacy queues, held messages); one
// thread runs it and nothing else touches them, so there are no locks.
//
// Each tick is linear: poll the ROUTER and the monitor (timeout = the next call or queue
// deadline or lease check, at most 1 s); receive a batch of messages and handle each (one
// handler per Header.kind, dispatched in handle_message_ from the table of kinds), then
// end the round: send the batches of events and replies the messages produced (the
// outbox, outbox.hpp, through which every message to a connection goes); act on
// connections the monitor saw close; run timers (call and send deadlines, queue waits,
// leases), and end their round too. Every send is non-blocking; a peer found gone is
// removed after the handler that found it, never while a table is being iterated.
//
// What the broker does with each kind is one row of broker_kinds.cpp (whom it is taken
// from, its handler, whether it is taken while draining, when its payload is held to
// max-payload, what a refused sender is told), beside the facts both sides share
// (sagebus/wire/kinds.hpp). The handlers live in one file per message family: broker.cpp
// (connections, names, registrations), broker_calls.cpp (requests), broker_streams.cpp
// (streams' chunks and credit, cancellation), broker_gather.cpp (scatter-gather: a REQUEST
// with `all`), broker_pubsub.cpp (publish-subscribe),
// broker_sends.cpp (point-to-point), broker_queues.cpp (legacy queues).
//
// Construction reads the auth rules file, if any, and binds the endpoints, each with its
// broker key under auth (throws AuthConfigError, std::runtime_error, BindError); run()
// loops until asked to stop (Requests, set by signal handlers). The first stop request
// drains (operations/drain.cpp): new calls, sends and queue operations are answered
// UNAVAILABLE while the calls already accepted may finish, up to drain_timeout_ms. Then,
// or at a second stop request, it shuts down: every call still pending is answered
// UNAVAILABLE and every client is sent GOODBYE. A reload request re-reads the
// configuration and applies what can change while running (operations/reload.cpp). Not
// thread safe, except that Requests may be set from any thread or signal handler.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "loop/event_header.hpp"
#include "loop/idle_spin.hpp"
#include "loop/monitor.hpp"
#include "loop/outbox.hpp"
#include "loop/token_bucket.hpp"
#include "operations/admin.hpp"
#include "operations/config.hpp"
#include "operations/http.hpp"
#include "operations/metrics.hpp"
#include "routing/pending.hpp"
#include "routing/published.hpp"
#include "routing/queues.hpp"
#include "routing/registry.hpp"
#include "routing/topics.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/header_writer.hpp"
#include "security/auth.hpp"
#include "security/zap_handler.hpp"

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

// What signal handlers ask of the loop; it acts on them between ticks.
struct Requests {
  std::atomic<int> stop{0};         // stop signals received: 1 drains, 2 stops at once
  std::atomic<int> stop_signal{0};  // the last one, for the log
  std::atomic<bool> reload{false};
  static_assert(std::atomic<int>::is_always_lock_free);
};

// What a principal's rules are asked about a message: a verb on a subject
// (security/auth.hpp), as the table of kinds' guards write them (broker_kinds.cpp).
struct Permission {
  Verb verb;
  std::string_view subject;
};

// Re-reads the configuration (file and command line) for a reload.
using Reloader = std::function<ConfigRead()>;

class Broker {
 public:
  // Binds every endpoint of `config`; throws BindError naming the one that failed. With
  // auth, each endpoint serves the broker key the rules file gives it
  // (AuthConfig::broker_keys_for); throws AuthConfigError for a rules file that does not
  // read, and std::runtime_error naming the endpoint when its [broker.endpoint-keys] names
  // one that `config` does not bind.
  explicit Broker(BrokerConfig config);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // The endpoints as bound ("tcp://127.0.0.1:*" resolved to its port).
  const std::vector<std::string>& endpoints() const noexcept { return identity_.endpoints; }

  // Runs the loop until asked to stop, then drains and shuts down (see above).
  void run(Requests& requests, const Reloader& reloader);
  bool draining() const noexcept { return draining_; }

  const Metrics& metrics() const noexcept { return metrics_; }

  // Handles one message as if the ROUTER had just received it (frames[0] is the sender's
  // routing id), then runs what the tick runs after a message: removals and timers. Frames
  // beyond kKeptFrames are dropped, as the ROUTER's reader drops them. For the fuzz target
  // (tests/fuzz); an exception escapes, where the loop would log it.
  void handle_for_test(std::vector<zmq::message_t>& frames);

 private:
  using Frames = std::vector<zmq::message_t>;
  using HeaderMap = google::protobuf::Map<std::string, std::string>;
  enum class Placement { done, wait };

  // The broker's row of a message kind (broker_kinds.cpp).
  using Handler = void (Broker::*)(ClientInfo& sender, Frames& frames);
  enum class Admit : std::uint8_t {
    stranger,  // from any peer, before the broker knows it: HELLO, taken by on_hello_
    client,    // from a connection that said HELLO, taken by the row's handler
    never,     // from nobody: clients may not send it
  };
  enum class Draining : std::uint8_t {
    taken,
    refused,     // answered UNAVAILABLE with the row's draining_refusal
    admin_only,  // likewise, unless addressed to the broker itself ("$broker")
  };
  enum class PayloadLimit : std::uint8_t {
    none,        // carries no payload
    on_arrival,  // held to max-payload before its handler runs
    in_handler,  // held to it by its handler: a REPLY once its call is found, a BATCH's
                 // records one by one
  };
  // What the auth rules are asked before a message of a kind is handled: a verb and its
  // subject, written from the header (into `scratch` when it is not a field as is).
  using Guard = Permission (*)(const wire::Header& header, std::string& scratch);
  struct KindRow {
    wire::Kind kind;
    Admit admit;
    Handler handler;  // for Admit::client
    Draining draining;
    std::string_view draining_refusal;
    PayloadLimit payload;
    // Sent in a HELLO_REQUIRED to a peer that has not said HELLO; empty: not answered.
    std::string_view stranger_refusal;
    // With auth: what the sender's rules must allow (nullptr: nothing, or its handler asks
    // them itself: a HELLO's name, each record of a PUBLISH_BATCH).
    Guard guard;
  };
  // The row of `kind`, of every number a header may carry.
  static const KindRow& kind_row_(wire::Kind kind) noexcept;

  // The tick (broker.cpp)
  void tick_();
  std::chrono::milliseconds poll_timeout_();
  void receive_batch_();
  // `in_batch`: a record of a BATCH, which may not be a HELLO or a BATCH itself.
  void handle_message_(Frames& frames, bool in_batch = false);
  // Each record of a BATCH, handled as the message it holds (docs/protocol.md, "Batches").
  void on_batch_(ClientInfo& from, Frames& frames);
  void handle_connection_events_();
  // What a tick runs after reading messages and closed connections: call and queue
  // deadlines, each followed by the removals it scheduled.
  void after_messages_();
  void check_leases_();
  void shutdown_();
  void start_http_();
  std::string answer_http_(const std::string& what, int& status);
  AdminSources admin_sources_() const;
  // Whether the message's payload (frames after the header) is over max-payload; if so,
  // it has been refused: answered INVALID_ARGUMENT where it expects an answer, and counted.
  bool refuse_payload_(const RoutingId& from, const Frames& frames, const KindRow& row);
  // Answers the message being handled `status`, `why`, if its kind answers a refusal: a
  // PUBLISH when it asked for confirmation, never a PUBLISH_BATCH (whose handler answers
  // what it refuses itself), a HELLO by a REPLY.
  void refuse_(const RoutingId& from, wire::Status status, std::string_view why);

  // Draining (operations/drain.cpp)
  void start_drain_(int signal);
  // Whether the drain is over (nothing left in flight, or out of time); logs how it ended.
  bool drain_over_(bool cut_short);
  std::size_t calls_in_flight_() const;
  // While draining: answers a message its row refuses then UNAVAILABLE; true if so.
  bool refuse_while_draining_(const RoutingId& from, const KindRow& row);

  // Authorisation (security/permissions.cpp). Each with auth only.
  // Whether the message is sent by the principal its connection was accepted as (libzmq
  // stamps User-Id on every frame); a mismatch is dropped and logged.
  bool from_its_principal_(const ClientInfo& client, const zmq::message_t& header_frame);
  // Whether the sender's rules forbid what the message asks (row.guard); if so, it has
  // been refused: answered PERMISSION_DENIED where its kind answers, counted and logged.
  bool refuse_unpermitted_(const ClientInfo& client, const KindRow& row);
  // Refuses `verb` on `subject` to `principal` on connection `to` (named `who`): counts,
  // logs (rate-limited) and answers PERMISSION_DENIED where the message being handled
  // expects an answer (refuse_).
  void deny_(const RoutingId& to, std::string_view who, const Principal& principal, Verb verb,
             std::string_view subject);
  // Whether `client`'s rules allow `verb` on `subject` (a pattern, for subscribe).
  bool allows_(const ClientInfo& client, Verb verb, std::string_view subject) const;
  // At HELLO: the principal the connection was accepted as, if its key still names it.
  const Principal* principal_of_(const zmq::message_t& header_frame, std::string& key) const;
  // After a reload: points every client at its principal under the new rules, and takes
  // away what they no longer allow (connections, registrations, subscriptions).
  void revoke_();

  // Reloading (operations/reload.cpp)
  void reload_(const Reloader& reloader);
  // Reads the rules file anew (reload_) and applies it (revoke_), true if it read; else
  // it logs why and keeps the rules in force.
  bool reload_auth_();
  // Applies what may change while running; returns how many keys changed and were kept.
  std::pair<int, int> apply_config_(const BrokerConfig& next);

  // Connections and registrations (broker.cpp)
  void on_hello_(const RoutingId& from, const zmq::message_t& header_frame);
  void on_heartbeat_(ClientInfo& client, Frames& frames);
  void on_goodbye_(ClientInfo& sender, Frames& frames);
  void on_register_(ClientInfo& sender, Frames& frames);
  void on_unregister_(ClientInfo& sender, Frames& frames);
  // A message from a peer that has not said HELLO: answered HELLO_REQUIRED as its row says.
  void on_unknown_peer_(const RoutingId& from, const KindRow& row);
  // Whether the HELLO may take its name; frees it from an older connection on takeover.
  bool claim_name_(const RoutingId& from);
  void schedule_removal_(const RoutingId& rid, std::string why);
  void apply_removals_();
  void remove_client_(const RoutingId& rid, const std::string& why);

  // Calls (broker_calls.cpp)
  void on_request_(ClientInfo& caller, Frames& frames);
  void accept_call_(Call& c, const ClientInfo& caller, Frames& frames, MethodStats* stats);
  void after_cancel_(std::string_view kind, CallId id, const ClientInfo& from);
  void on_reply_(ClientInfo& from, Frames& frames);
  // Answers a REQUEST or SEND OVERLOADED when its caller has max-calls-per-client pending
  // or the call table is full; true if so. `what` names them ("calls", "sends").
  bool refuse_call_(const ClientInfo& from, std::string_view what);
  // Passes an instance's or peer's REPLY on to the call's caller; a payload over
  // max-payload is refused, and the caller told so (HANDLER_ERROR) instead.
  void forward_reply_(Call& call, Frames& frames);
  void route_(Call& call);
  Placement place_(Call& call, Service* service);
  Sent dispatch_(Call& call, Instance& instance);
  void undelivered_(const RoutingId& to, std::span<const CallId> calls, Sent sent);
  void refuse_full_(Call& call, const Instance& instance);
  // Places the calls waiting for `service`, in order, as far as its instances have room.
  void pump_(const std::string& service);
  void pump_(Service* service);
  void run_deadlines_();
  void instance_lost_(CallId id, const std::string& why);
  // Ends the calls of a caller that left: each request still open is cancelled
  // (drop_call_), a held send forgotten; a dispatched send stays until its peer answers.
  void forget_caller_(ClientHandle caller);
  // After an instance ended a call (replied, or the call was cancelled): an unregistered
  // instance leaves with its last call.
  void leave_if_drained_(const Service& service, const Instance& instance);
  // "; trace <trace id>" for a call with a trace context, else "": for the debug lines
  // about calls.
  static std::string trace_note_(const Call& call);

  // Scatter-gather (broker_gather.cpp): a REQUEST with `all` is a Call of kind `gather`
  // and one part per instance asked (routing/pending.hpp), whose outcomes answer_caller_
  // hands to part_outcome_.
  void gather_(ClientInfo& caller, Frames& frames, MethodStats* stats);
  // A part's outcome, claimed: a CHUNK naming its instance to the gather's caller, then,
  // after the last part's, the gather's final REPLY. Nothing when the gather has ended.
  void part_outcome_(Call& part, wire::Status status, std::string_view message,
                     std::span<zmq::message_t> payload, const HeaderMap* headers);
  // The gather's deadline: each part without an outcome gets DEADLINE_EXCEEDED (and stays
  // on its instance until its late reply), then the gather ends.
  void expire_gather_(Call& gather);
  // Ends a gather whose caller's outcome is claimed (drop_call_): every part without an
  // outcome is dropped as a cancelled call (its instance is sent CANCEL `why`).
  void drop_gather_(Call& gather, std::string_view why);

  // Streams and cancellation (broker_streams.cpp)
  void on_chunk_(ClientInfo& from, Frames& frames);
  void on_cancel_(ClientInfo& caller, Frames& frames);
  // A CREDIT without a subscription: more chunks for the sender's stream of that id.
  void on_stream_credit_(ClientInfo& caller);
  // Ends a call whose caller's outcome is claimed, without a word to the caller: out of its
  // service's wait queue, or off its instance, which is sent CANCEL `why` and may take new
  // work at once (its slot is freed, its service pumped). Erases the call.
  void drop_call_(Call& call, std::string_view why);
  // Ends a stream the broker cannot carry on: the caller's final outcome `status`
  // `message` (if still unclaimed), and drop_call_ with `why` for the instance.
  void end_stream_(Call& call, wire::Status status, std::string_view message, std::string_view why);
  // Streams whose chunks were in a batch to their caller `to` that did not go.
  void chunks_undelivered_(const RoutingId& to, std::span<const CallId> calls, Sent sent);

  // Publish-subscribe (broker_pubsub.cpp)
  void on_subscribe_(ClientInfo& sender, Frames& frames);
  void on_unsubscribe_(ClientInfo& sender, Frames& frames);
  void on_credit_(ClientInfo& sender, Frames& frames);
  void on_publish_(ClientInfo& sender, Frames& frames);
  void on_publish_batch_(ClientInfo& sender, Frames& frames);
  // Sends an EVENT to every subscription matching `topic`, or puts it in the connection's
  // EVENT_BATCH; returns how many matched. With `consume`, the last EVENT takes the
  // payload frames instead of a shared copy.
  std::size_t publish_(std::string_view topic, Published& payload, bool consume);

  // Point-to-point (broker_sends.cpp). A SEND is a Call of kind `send`.
  void on_send_(ClientInfo& sender, Frames& frames);
  Sent deliver_(Call& call, const ClientInfo& peer);
  void release_held_(const ClientInfo& peer);
  void on_send_reply_(Call& call, Frames& frames);
  void send_expired_(Call& call);
  void peer_lost_(CallId id, const std::string& why);
  void forget_held_(const Call& call);

  // Legacy queues (broker_queues.cpp)
  void on_queue_put_(ClientInfo& sender, Frames& frames);
  void on_queue_get_(ClientInfo& sender, Frames& frames);
  void on_queue_ack_(ClientInfo& sender, Frames& frames);
  void on_queue_size_(ClientInfo& sender, Frames& frames);
  void on_queue_declare_(ClientInfo& sender, Frames& frames);
  void on_queue_nack_(ClientInfo& sender, Frames& frames);
  bool check_queue_name_(const RoutingId& from);
  // Publishes and sends what a queue operation produced. Answers of effects with store
  // writes wait for the store to commit them (collect_store_).
  void apply_(QueueEffects& fx);
  // Sends `answers`; an item whose answer could not be sent is given back (into `next`).
  void send_queue_answers_(std::vector<QueueAnswer>& answers, QueueEffects& next);
  void run_queue_deadlines_();
  // The $broker methods that change queues or the store: queue.purge, store.compact.
  // Returns false for any other method.
  bool answer_store_admin_(const RoutingId& from, std::uint64_t id, std::string_view request);
  // The durable store (broker_queues.cpp): opened and read back before binding; the
  // tickets it has committed (or failed) are settled when its fd says so.
  void open_store_();
  void collect_store_();

  // Answering (broker.cpp). Every message goes out through outbox_ (outbox.hpp), which
  // alone decides what travels in a batch. answer_caller_ is the only way a call's caller
  // hears its outcome; answer_ answers any other message, counting its outcome, and
  // reply_ answers one that is not counted as a reply (a refused HELLO, REGISTER...).
  // A part of a gather is answered through part_outcome_; `count` goes on the REPLY (a
  // gather's: the instances asked).
  bool answer_caller_(Call& call, wire::Status status, std::string_view message,
                      std::span<zmq::message_t> payload = {}, const HeaderMap* headers = nullptr,
                      std::uint64_t count = 0);
  // Writes a REPLY header in head_: the one place the broker writes one. Zero values are
  // left out (wire::HeaderWriter).
  void reply_head_(std::uint64_t id, wire::Status status, std::string_view message,
                   const HeaderMap* headers = nullptr, std::uint64_t count = 0,
                   std::uint64_t tag = 0);
  Sent reply_(const RoutingId& to, std::uint64_t id, wire::Status status, std::string_view message);
  Sent answer_(const RoutingId& to, std::uint64_t id, wire::Status status, std::string_view message,
               std::uint64_t count = 0, std::uint64_t tag = 0,
               std::span<zmq::message_t> payload = {});

  BrokerConfig config_;
  BrokerIdentity identity_;
  zmq::context_t context_;
  zmq::socket_t router_;
  std::optional<ConnectionMonitor> monitor_;
  std::optional<HttpControl> http_control_;  // the loop's side of /metrics and /healthz
  std::unique_ptr<HttpEndpoint> http_;
  // With auth: the rules in force and the authenticator (security/).
  std::optional<AuthConfig> auth_;
  std::optional<ZapHandler> zap_;
  // The public key each endpoint (as config_ spells it) serves: fixed when it was bound.
  std::map<std::string, std::string, std::less<>> served_keys_;
  int zap_fd_ = -1;
  bool zap_due_ = true;  // answer the authenticator at the first tick, before its fd says so
  std::string subject_;  // a Guard's scratch
  LogThrottle denial_log_throttle_{1.0, 10.0};
  Requests* requests_ = nullptr;  // run()'s, for the admin methods drain and reload
  // Their ZMQ_FDs, which tick_() waits on (-1: no HTTP endpoint).
  int router_fd_ = -1;
  int monitor_fd_ = -1;
  int http_fd_ = -1;
  bool monitor_due_ = true;  // read the monitor at the first tick, before its fd has said so
  // The last call on router_ that takes in ZeroMQ's news (a receive, events()) found
  // nothing to read, and nothing was sent since: router_fd_ will signal whatever comes
  // next, so tick_() waits on it without asking events() first (wire/socket.hpp).
  bool router_quiet_ = false;
  IdleSpin spin_;  // whether tick_() may poll router_ without sleeping (idle_spin.hpp)

  Registry registry_;
  PendingCalls calls_;
  SubscriptionTable subscriptions_;
  RecentTopics topics_;
  LegacyQueues queues_;
  // Writes submitted to the store, by ticket, with what waits for them.
  struct StoreTicket {
    std::vector<QueueAnswer> answers;   // sent once the writes are committed
    std::vector<std::uint64_t> staged;  // puts the commit confirms
    bool compact = false;               // store.compact: answer `answers`' one
  };
  std::unique_ptr<Store> store_;
  int store_fd_ = -1;
  std::uint64_t next_ticket_ = 1;
  std::unordered_map<std::uint64_t, StoreTicket> tickets_;
  std::vector<StoreDone> store_done_;  // collect_store_'s
  TokenBucket store_error_log_limiter_{1.0, 5.0};
  bool store_failing_ = false;  // its last transaction failed
  // Held point-to-point messages per peer name, oldest first. Each is a waiting Call.
  std::unordered_map<std::string, std::deque<CallId>> held_;
  Metrics metrics_;
  TokenBucket hello_limiter_{10000.0, 10000.0};
  TokenBucket refusal_log_limiter_{1.0, 10.0};

  bool draining_ = false;
  TimePoint drain_started_{};
  TimePoint drain_deadline_{};
  std::string shutdown_reason_ = "broker shutting down";

  TimePoint now_{};  // cached once per tick
  // spdlog::should_log(debug), also read once per tick: per-call debug lines check this
  // instead of asking spdlog's registry up to three times per call.
  bool debug_ = false;
  TimePoint next_lease_check_{};
  wire::Header in_;          // reused for every decoded header
  wire::Header out_;         // reused for the rare headers the broker sends through protobuf
  wire::HeaderWriter head_;  // for the ones sent per call or answer
  Frames frames_;
  // The frames kept of a message: the routing id, the header and kMaxPayloadFrames. Of a
  // longer one, the rest are dropped as read, and `truncated_` says so (refuse_payload_).
  static constexpr std::size_t kKeptFrames = 2 + wire::kMaxPayloadFrames;
  bool truncated_ = false;
  std::vector<InstanceLoad> loads_;  // scratch for the balancer
  EventHeader event_header_;         // publish_'s, reset for each publish

  // Every write to a connection; a write that finds one gone schedules its removal.
  Outbox outbox_{router_,
                 router_quiet_,
                 metrics_,
                 [this](const RoutingId& rid) { schedule_removal_(rid, "connection closed"); },
                 [this](const RoutingId& to, std::span<const CallId> calls, Sent sent) {
                   undelivered_(to, calls, sent);
                 },
                 [this](const RoutingId& to, std::span<const CallId> calls, Sent sent) {
                   chunks_undelivered_(to, calls, sent);
                 }};
  Frames record_frames_;  // on_batch_'s, one message at a time
  std::vector<std::pair<RoutingId, std::string>> removals_;
};

}  // namespace sagebus::broker
