// detail::Session: the client's side of the sage-bus protocol (docs/protocol.md), with no
// socket, thread or clock of its own.
//
// The driver (driver.hpp) feeds it what happened: the time now (begin_turn, advance), the
// transport's link events, each message read, the users' commands. The session answers
// by writing messages to its Port, ending requests through their Done, and telling the
// driver when it next needs a turn (next_wakeup) and whether it waits for room in the
// transport's queue (wants_out). Writing is the one output that can be refused (the
// transport's queue is full): the Port says so at once, and the session keeps what must
// still go (publishes, requests, a heartbeat) until the driver's next turn; so no second
// queue stands between the session and the socket.
//
// Its parts, one file each: session.cpp (the turn, input dispatch, timers, output),
// link.cpp (handshake, reconnect and replay), requests.cpp (calls and other requests,
// deadlines), publishing.cpp, subscriptions.cpp (events, credit), serving.cpp
// (registrations, dispatched calls, replies, point-to-point deliveries), leases.cpp
// (heartbeats and the leases each side keeps on the other).
//
// Not thread safe: one thread at a time (the driver holds its lock around every use).
// Done runs on the thread that fed the input that ended its request; it must be quick.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "../connection.hpp"
#include "outputs.hpp"
#include "sagebus/wire.pb.h"
#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/header_writer.hpp"

namespace sagebus::detail {

class Session {
 public:
  Session(const ClientOptions& options, Port& port, SessionHost& host, Clock::time_point now);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // --- what happened --------------------------------------------------------------------

  // A driver's turn begins at `now`: notices a stall (the client did not run for longer
  // than its lease) before anything read in this turn is acted on.
  void begin_turn(Clock::time_point now);
  // The time is `now`: before each message read (a call's reply is judged against its
  // deadline at the time it is read), and outside a turn (a user thread starts a
  // request).
  void advance(Clock::time_point now) { now_ = now; }
  void on_link_event(LinkEvent event);
  // A message read from the transport: its header frame and its payload frames.
  void on_message(const zmq::message_t& header, std::vector<zmq::message_t>& frames);
  // The messages read together have all been fed: subscriptions and streams get what
  // they brought, once per batch.
  void end_of_input();
  // Starts a request outside a turn; with `more`, the driver starts others right after
  // (callbacks that call again), and calls flush() when they are done.
  void start(command::Start& start, bool more = false);
  void handle(command::Command& command);
  // The turn ends at `now`: what waits for company goes, timers run, what waited for room
  // goes while it fits.
  void end_turn(Clock::time_point now);
  // Sends the messages gathered to go together (start(.., more)).
  void flush() { flush_gathered_(); }
  // Ends every request CANCELLED, tells services they are unregistered, says GOODBYE.
  void shut_down();

  // --- what the driver asks -------------------------------------------------------------

  // When the session next needs a turn, with nothing new to read (at most a second on).
  Clock::time_point next_wakeup() const;
  // Something waits for room in the transport's queue: a turn is due once it has room.
  bool wants_out() const {
    return !outbox_.empty() || heartbeat_due_ || !waiting_for_room_.empty() || !held_out_.empty() ||
           !gathered_.empty();
  }
  // Nothing runs on the driver's thread but what callers ask: no service, no subscription.
  bool serves_nothing() const { return services_.empty() && subscription_cores_.empty(); }
  bool no_requests() const { return requests_.empty(); }
  // Counts the requests ended that a caller waits for in Connection::call().
  std::uint64_t sync_ends() const { return sync_ends_; }

 private:
  enum class Link { connecting, ready, failing };

  struct Request {
    RequestSpec spec;
    Done done;
    Clock::time_point deadline;
    bool sent = false;
    bool sync = false;  // a caller waits for it in call()
    // Sent with wait_for_ready just before the link was lost (lose_link_): it reached the
    // broker, or it waits in the socket for the next connection.
    bool in_doubt = false;
    // A stream: when it was sent or its last chunk came (CallOptions::idle_timeout).
    Clock::time_point last_chunk{};
  };
  using Requests = std::unordered_map<std::uint64_t, Request>;

  struct ServiceEntry {
    std::shared_ptr<ServiceCore> core;
    bool registered = true;  // registered again after every new session while true
  };

  struct RegistrationAnswer {
    std::string service;
    bool unregister;
  };

  struct QueuedPublish {
    std::string topic;
    zmq::message_t payload;
  };
  // A message made of the first `publishes` of outbox_ (make_outgoing_), while it waits
  // for the transport to take it; none when `publishes` is 0.
  struct Outgoing {
    zmq::message_t header;
    zmq::message_t body;
    std::size_t publishes = 0;
  };

  // session.cpp: commands, timers, output.
  void handle_(command::Start& c);
  void handle_(command::Publish& c);
  void handle_(command::AddService& c);
  void handle_(command::Unregister& c);
  void handle_(command::RemoveService& c);
  void handle_(command::SendReply& c);
  void handle_(command::AddSubscription& c);
  void handle_(command::RemoveSubscription& c);
  void handle_(command::Credit& c);
  void handle_(command::ReadsInbox& c);
  void handle_(command::Cancel& c);
  void handle_(command::StreamCredit& c);
  void handle_(command::SendChunk& c);
  void dispatch_();
  struct KindRow {
    void (Session::*handler)() = nullptr;
    bool handled = false;  // said apart from handler, which a constant cannot compare
  };
  static constexpr std::array<KindRow, wire::Kind_ARRAYSIZE> kind_rows_();
  void run_timers_();
  bool send_(std::optional<zmq::message_t> payload = std::nullopt);
  bool send_header_(zmq::message_t header, std::optional<zmq::message_t> payload);
  // Gathering (session.cpp): small replies and requests wait for the end of the turn to
  // go as one BATCH.
  bool gathers_(std::size_t payload, const wire::BatchLimits& limits) const;
  bool gather_(std::string_view header, zmq::message_t* payload, const wire::BatchLimits& limits);
  bool gather_(std::string_view header, std::string_view payload, const wire::BatchLimits& limits);
  bool make_room_(std::size_t header, std::size_t payload, const wire::BatchLimits& limits);
  bool flush_gathered_();
  void drop_gathered_();
  // The first of the messages waiting for company has waited longer than kMaxGatherWait.
  bool gathered_too_long_() const;
  bool put_(zmq::message_t& header, zmq::message_t* payload);
  bool write_(zmq::message_t& header, zmq::message_t* payload);

  // link.cpp
  void on_goodbye_();
  void on_welcome_();
  void on_hello_required_();
  void on_heartbeat_() {}  // the broker lives (on_message): nothing more to do
  void check_stall_();
  void restart_session_(std::uint64_t id, bool forgotten, const std::string& why);
  void lose_link_(const std::string& why, bool forgotten = false, bool unread = false);
  void end_in_doubt_();
  void forget_registration_answers_();
  void set_link_(Link link);
  void send_hello_();

  // requests.cpp
  void send_request_(std::uint64_t id);
  void flush_waiting_requests_();
  bool try_send_request_(std::uint64_t id);
  void prune_deadlines_();
  void on_reply_message_();
  void on_chunk_();
  // Sends CANCEL for a sent request that ends without its answer.
  void send_cancel_(std::uint64_t id);
  // A stream's next idle check, or its deadline (CallOptions::idle_timeout).
  Clock::time_point idle_check_(const Request& request) const;
  void on_reply_(std::string_view payload);
  void on_batch_();
  void finish_(Requests::iterator it, Outcome outcome);
  // Calls `visit` with each open request; it may end the one it is given (finish_).
  template <class Visit>
  void for_each_request_(const Visit& visit) {
    for (auto it = requests_.begin(); it != requests_.end();) {
      const auto next = std::next(it);
      visit(it);
      it = next;
    }
  }
  void fail_sent_(const std::string& why);
  void requeue_or_fail_(Requests::iterator it, bool forgotten, const std::string& why);
  static Status lost_status_(const Request& request);
  void fail_unsent_impatient_();
  void refuse_link_(std::string why, bool certain);
  // What a request not sent ends with while the link is failing.
  Status unsent_status_() const { return refused_ ? Status::unauthenticated : Status::unavailable; }
  std::string not_connected_text_() const;
  Outcome deadline_failure_(const Request& request) const;
  void expire_requests_();

  // publishing.cpp
  void flush_outbox_();
  void make_outgoing_();

  // subscriptions.cpp
  void send_subscribe_(const std::shared_ptr<SubscriptionCore>& core);
  void on_event_();
  void on_event_batch_();
  const std::shared_ptr<SubscriptionCore>* subscription_(std::uint64_t id) const;
  void deliver_(const std::shared_ptr<SubscriptionCore>* core, std::string_view topic,
                std::string_view payload, std::uint64_t dropped);

  // serving.cpp
  // Sends a message that must not be lost (its header, then `frame` unless null, moved
  // from), in order with those before it: one the transport refuses waits in held_out_
  // for room, as do all after it. This instance's REPLYs and CHUNKs (no chunk of a stream
  // is lost or overtaken), and a caller's CANCELs and CREDITs (a lost CREDIT would stall
  // its stream, a lost CANCEL hold its instance until the deadline). `limits`: its kind's.
  void send_or_hold_(std::string_view header, zmq::message_t* frame,
                     const wire::BatchLimits& limits);
  bool try_send_(std::string_view header, zmq::message_t* frame, const wire::BatchLimits& limits);
  void flush_held_out_();
  void reply_(std::uint64_t id, Status status, std::string message, std::string payload);
  void send_register_(const ServiceCore& core);
  void on_request_();
  void on_deliver_();
  void on_cancel_();
  void on_credit_();

  // leases.cpp
  void heartbeat_if_due_();
  bool at_stake_() const;
  std::chrono::milliseconds lease_() const;
  void take_short_lease_();

  const ClientOptions& options_;
  const std::string& endpoint_;
  const bool curve_;  // the client authenticates with CURVE keys
  Port& port_;
  SessionHost& host_;
  wire::Hello hello_;

  Clock::time_point now_;
  Link link_ = Link::connecting;
  bool tcp_up_ = false;
  bool fresh_session_ = true;   // the broker has none of our registrations/subscriptions
  bool replaced_ = false;       // another connection took our name: stay out
  bool refused_ = false;        // the last handshake failed on credentials (refuse_link_)
  bool hopeless_ = false;       // ... certainly: requests that wait for ready end too
  int handshake_failures_ = 0;  // in a row, without detail, since the last WELCOME
  Clock::time_point first_handshake_failure_{};  // the first of those
  static constexpr int kCertainHandshakeFailures = 3;
  static constexpr std::chrono::milliseconds kCertainHandshakeFailureSpan{1000};
  std::string last_failure_ = "connecting";
  Status failure_status_ = Status::unavailable;  // what connection_error() reports
  std::string session_;
  // Counts the broker sessions (broker processes) this connection has been welcomed by.
  std::uint64_t session_epoch_ = 0;
  std::uint64_t hello_id_ = 0;
  std::chrono::milliseconds heartbeat_;
  std::chrono::milliseconds idle_heartbeat_{0};  // the welcome's idle heartbeat; 0: none
  std::uint32_t liveness_;
  bool idle_lease_ = false;    // our last message was an idle HEARTBEAT (lease_())
  bool reads_queues_ = false;  // a QUEUE_GET was sent: legacy-queue items may be held
  std::uint64_t max_payload_ = kDefaultMaxPayload;
  Clock::time_point last_heard_;
  // The broker's silence counts from here: when it was last heard, or when the short
  // lease was taken again (take_short_lease_).
  Clock::time_point watch_from_;
  Clock::time_point last_heartbeat_;  // when the previous HEARTBEAT went
  Clock::time_point last_sent_;       // when we last handed the broker a message
  Clock::time_point last_ran_;        // when the last turn ended
  // Not 0 after a stall (check_stall_): DELIVER and REQUEST are dropped until a WELCOME
  // with an id from this one on.
  std::uint64_t discard_before_welcome_ = 0;
  Clock::time_point next_heartbeat_;
  bool heartbeat_due_ = false;  // a heartbeat the full transport refused, to send first
  Clock::time_point hello_sent_at_;
  // The broker's WELCOME named this host's boot id: it shares our steady clock, and
  // REQUESTs both ways carry their deadline itself (sagebus/wire/host_clock.hpp).
  bool same_host_ = false;

  // Every message this side starts takes a fresh id, so ids rise in sending order.
  std::uint64_t next_id_;
  Requests requests_;
  using Deadline = std::pair<Clock::time_point, std::uint64_t>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  // Unsent requests, in sending order, that wait for room in the transport's queue
  // (send_request_); ids of requests that ended meanwhile are skipped.
  std::deque<std::uint64_t> waiting_for_room_;
  std::uint64_t sync_ends_ = 0;
  std::map<std::string, ServiceEntry> services_;
  std::unordered_map<std::uint64_t, RegistrationAnswer> registrations_;
  std::vector<std::shared_ptr<SubscriptionCore>> subscription_cores_;
  // Those on_event_() delivered to in the messages being read (end_of_input).
  std::vector<std::shared_ptr<SubscriptionCore>> to_flush_;
  // The requests on_chunk_() gave chunks to in the messages being read (end_of_input).
  std::vector<std::shared_ptr<CallControl>> chunks_to_flush_;
  std::unordered_map<std::uint64_t, std::shared_ptr<SubscriptionCore>>
      subscriptions_;  // by wire id
  std::deque<QueuedPublish> outbox_;
  // The messages send_or_hold_() was refused, in order. Bounded by the calls this client
  // holds and makes and their streams' credit.
  struct HeldMessage {
    std::string header;
    zmq::message_t frame;
    bool has_frame;
    const wire::BatchLimits* limits;  // its kind's
  };
  std::deque<HeldMessage> held_out_;
  Outgoing outgoing_;
  wire::BatchWriter batch_;  // make_outgoing_'s, reused
  // The broker's WELCOME says it reads PUBLISH_BATCH, BATCH.
  bool publish_batches_ = false;
  bool batches_ = false;
  // Replies and requests that wait for the end of the turn (flush_gathered_), the ids the
  // requests among them were sent under, and the header of their BATCH.
  wire::MessageBatch gathered_;
  std::vector<std::uint64_t> gathered_requests_;
  Clock::time_point gathered_since_{};  // when the first of gathered_ was made
  std::string batch_header_;

  wire::Header in_;
  std::vector<zmq::message_t> frames_;  // payload frames of the message in in_
  wire::Header out_;                    // the headers written through protobuf (the rarer kinds)
  wire::HeaderWriter head_;             // those written by hand: requests and replies
};

}  // namespace sagebus::detail
