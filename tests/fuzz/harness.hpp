// Harness: what the fuzz target runs each input through. It owns one Broker (built on
// first use, reused for every input) listening on an abstract ipc socket, and three DEALER
// sockets connected to it as peers A, B and C, so that the broker's sends reach real
// connections and stateful dispatch (registrations, calls, replies, subscriptions,
// queues) is reachable; peer X is a routing id with no connection. Each step of the
// script (script.hpp) becomes one multipart message handed to Broker::handle_for_test.
//
// What counts as a finding (the harness aborts with a line saying which):
//   - an exception escaping the broker (the real loop would log an internal error);
//   - a header the broker sent that the wire library cannot decode, or an EVENT_BATCH whose
//     records do not read back (sagebus/wire/batch.hpp) or hold fewer than two events;
//   - more answers to one id than messages the peer sent with that id (exactly one
//     outcome);
//   - wire::topic_matches or SubscriptionTable::matching disagreeing with a plain
//     reference matcher, or a header that decodes but does not decode once re-encoded;
//   - wire::decode disagreeing with protobuf's ParseFromArray on a header a peer sends,
//     or decode's hand-written parser disagreeing with it on any header, sent or received;
//   - whatever ASan and UBSan report.
//
// "$id" and "$tag" (script.hpp) need what the broker sent a peer to have arrived; when
// the peer has none left, the harness sends a HEARTBEAT from it and waits for the answer,
// which arrives after everything sent before it.
//
// State across inputs: at the end of each input every peer says GOODBYE, which ends its
// calls, registrations, subscriptions and queue leases, and a HELLO/WELCOME round trip
// per peer makes sure everything the broker sent has arrived before the next input. What
// outlives a client (legacy queues and their items, metrics, remembered topics) is bounded
// by the small limits of the broker's configuration here, so memory stays flat over
// millions of inputs; it is also why a crash may, rarely, need the inputs before it.
//
// Closed connections are out of reach: the broker's ROUTER finishes closing one only when
// it reads, which handle_for_test never does, so a peer closed here could never connect
// again (its routing id stays taken) and sends to it would find a full queue.
//
// Not thread safe; one per process (libFuzzer runs inputs one at a time).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "loop/broker.hpp"
#include "routing/topics.hpp"
#include "sagebus/wire.pb.h"
#include "script.hpp"

namespace sagebus::fuzz {

class Harness {
 public:
  // Starts the broker and connects the peers; aborts if they do not connect in seconds.
  Harness();
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  void run(std::string_view input);

 private:
  // A connected peer and what it received and has not used yet.
  struct Peer {
    zmq::socket_t socket;
    std::deque<std::uint64_t> ids;   // of REQUESTs and DELIVERs: what "$id" takes
    std::uint64_t last_id = 0;       // what "$id" took last: what "$last" repeats
    std::deque<std::uint64_t> tags;  // delivery tags of queue items: what "$tag" takes
    // Per id: messages this peer sent with it, minus the answers it got.
    std::unordered_map<std::uint64_t, std::int64_t> owed;
    bool synced = false;      // got the WELCOME to the harness's own HELLO
    bool hello_sent = false;  // that HELLO was sent
    bool barrier = false;     // got the answer to the harness's HEARTBEAT
  };

  void message_(const Step& step);
  void sleep_(unsigned ms);
  // A message without a header: dropped and counted, then the broker runs its timers.
  void tick_();
  // items: a topic, then patterns to subscribe in a SubscriptionTable kept for the input
  // (each with the next id; "-N" unsubscribes id N, "!" removes the even ids' client).
  void topic_check_(const std::vector<std::string>& items);
  std::string text_header_(std::size_t peer, std::string text);
  void handle_(std::vector<zmq::message_t>& frames);
  // Sends a header the harness makes itself (GOODBYE, HELLO) from `peer`.
  void say_(std::size_t peer, wire::Kind kind, std::uint64_t id, const std::string& name = {});
  // Receives what has arrived for `peer`; when `until` is set, waits (at most `wait`) until
  // it returns true.
  void receive_(std::size_t peer, std::chrono::milliseconds wait = {},
                bool (*until)(const Peer&) = nullptr);
  void receive_all_();
  void check_(std::size_t peer, const std::vector<zmq::message_t>& message);
  void check_batch_(char letter, const std::vector<zmq::message_t>& message);
  // A BATCH the broker sent: whole REPLYs, CHUNKs and REQUESTs, each accounted for as if it
  // came alone.
  void check_message_batch_(std::size_t peer, const std::vector<zmq::message_t>& message);
  // received_, a REPLY alone or in a BATCH: its tag, and one answer fewer owed for its id.
  void account_reply_(std::size_t peer);
  // GOODBYE from every peer, then a HELLO/WELCOME round trip on each, so that nothing
  // the broker sent for this input arrives during the next. With `connecting` (the first
  // time), the HELLO is repeated until the broker knows the connection.
  void settle_(bool connecting = false);

  zmq::context_t context_;
  std::unique_ptr<broker::Broker> broker_;
  std::array<Peer, kUnconnected> peers_;
  std::unique_ptr<broker::SubscriptionTable> table_;  // of the input's '?' steps
  std::uint64_t table_ids_ = 0;
  wire::Header header_;       // scratch: what a peer sends
  wire::Header received_;     // scratch: what a peer received
  wire::Header parsed_;       // scratch: the hand-written header parser's, across inputs
  std::uint64_t inputs_ = 0;  // run so far
  unsigned slept_ms_ = 0;
  bool may_wait_ = true;
};

}  // namespace sagebus::fuzz
