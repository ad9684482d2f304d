// Outbox (daemon/loop/outbox.hpp): what goes in a batch and what goes at once, the order
// of a connection's messages, when outcomes are counted, and what a full or closed
// connection does, to replies, events, dispatches and streams' chunks. A real ROUTER on inproc://
// and a DEALER peer stand for the broker's socket and one client.
#include <chrono>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "loop/outbox.hpp"
#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/header_writer.hpp"
#include "sagebus/wire/socket.hpp"

using namespace sagebus;
using broker::Outbox;
using broker::Sent;

namespace {

struct Fixture {
  zmq::context_t context;
  zmq::socket_t router{context, zmq::socket_type::router};
  zmq::socket_t peer{context, zmq::socket_type::dealer};
  bool quiet = true;
  broker::Metrics metrics;
  std::vector<broker::RoutingId> gone;
  // What the outbox handed back as not delivered: the calls, and what the write found.
  broker::RoutingId undelivered_to;
  std::vector<broker::CallId> undelivered;
  Sent undelivered_because = Sent::ok;
  // Called from the undelivered callback: what the broker does with the calls.
  std::function<void()> on_undelivered;
  // The streams whose chunks were in a batch that did not go, and what the write found.
  std::vector<broker::CallId> undelivered_chunks;
  Sent undelivered_chunks_because = Sent::ok;
  Outbox outbox{
      router,
      quiet,
      metrics,
      [this](const broker::RoutingId& to) { gone.push_back(to); },
      [this](const broker::RoutingId& to, std::span<const broker::CallId> calls, Sent sent) {
        undelivered_to = to;
        undelivered.insert(undelivered.end(), calls.begin(), calls.end());
        undelivered_because = sent;
        if (on_undelivered) on_undelivered();
      },
      [this](const broker::RoutingId&, std::span<const broker::CallId> calls, Sent sent) {
        undelivered_chunks.insert(undelivered_chunks.end(), calls.begin(), calls.end());
        undelivered_chunks_because = sent;
      }};
  const broker::RoutingId rid = "peer";

  // `queue`: the messages the peer's pipe holds (both sides' high-water marks).
  explicit Fixture(int queue = 1000) {
    router.set(zmq::sockopt::router_mandatory, 1);
    router.set(zmq::sockopt::sndhwm, queue);
    router.set(zmq::sockopt::linger, 0);
    router.bind("inproc://outbox");
    peer.set(zmq::sockopt::routing_id, rid);
    peer.set(zmq::sockopt::rcvhwm, 1);
    peer.set(zmq::sockopt::linger, 0);
    peer.connect("inproc://outbox");
    // The ROUTER knows the peer once it has read something from it.
    peer.send(zmq::str_buffer("hi"));
    router.set(zmq::sockopt::rcvtimeo, 2000);
    std::vector<zmq::message_t> got;
    REQUIRE(wire::receive_message(router, got, zmq::recv_flags::none, 4));
  }

  // The next message the peer reads, header decoded; fails after 2 s.
  wire::Header read(std::vector<zmq::message_t>& frames) {
    frames.clear();
    peer.set(zmq::sockopt::rcvtimeo, 2000);
    REQUIRE(wire::receive_message(peer, frames, zmq::recv_flags::none, 8));
    wire::Header h;
    REQUIRE(wire::decode(frames.at(0), h) == wire::DecodeResult::ok);
    return h;
  }
  bool nothing_to_read() {
    zmq::message_t m;
    return !peer.recv(m, zmq::recv_flags::dontwait);
  }
};

std::string reply_header(std::uint64_t id, wire::Status status = wire::OK) {
  wire::HeaderWriter w;
  w.start(wire::REPLY)
      .varint(wire::Header::kIdFieldNumber, id)
      .enumeration(wire::Header::kStatusFieldNumber, status);
  return std::string(w.bytes());
}

std::string request_header(std::uint64_t id) {
  wire::HeaderWriter w;
  w.start(wire::REQUEST)
      .varint(wire::Header::kIdFieldNumber, id)
      .string(wire::Header::kServiceFieldNumber, "echo")
      .string(wire::Header::kMethodFieldNumber, "say");
  return std::string(w.bytes());
}

// The kind and id of each record of a BATCH's frame.
std::vector<std::pair<wire::Kind, std::uint64_t>> records_of(const zmq::message_t& frame) {
  std::vector<std::pair<wire::Kind, std::uint64_t>> out;
  wire::BatchReader reader(frame.data(), frame.size());
  for (wire::MessageRecord record; reader.next(record);) {
    wire::Header r;
    REQUIRE(r.ParseFromArray(record.header.data(), static_cast<int>(record.header.size())));
    out.emplace_back(r.kind(), r.id());
  }
  return out;
}

std::string chunk_header(std::uint64_t id) {
  wire::HeaderWriter w;
  w.start(wire::CHUNK).varint(wire::Header::kIdFieldNumber, id);
  return std::string(w.bytes());
}

zmq::message_t heartbeat() {
  wire::HeaderWriter w;
  return w.start(wire::HEARTBEAT).frame();
}

}  // namespace

TEST_CASE("a lone reply in a batch goes as a plain REPLY when the round ends", "[outbox]") {
  Fixture f;
  zmq::message_t payload(std::string_view("result"));
  f.outbox.reply(f.rid, true, reply_header(7), std::span<zmq::message_t>(&payload, 1), wire::OK);
  CHECK(f.nothing_to_read());
  CHECK(f.metrics.replies == 0);  // counted when it goes
  f.outbox.flush();
  std::vector<zmq::message_t> frames;
  const wire::Header h = f.read(frames);
  CHECK(h.kind() == wire::REPLY);
  CHECK(h.id() == 7);
  REQUIRE(frames.size() == 2);
  CHECK(frames[1].to_string() == "result");
  CHECK(f.metrics.replies == 1);
  CHECK(f.metrics.batches_sent == 0);
  CHECK_FALSE(f.quiet);  // a write may have taken in the ROUTER's news
}

TEST_CASE("a connection's batch goes before anything else it is sent", "[outbox]") {
  Fixture f;
  for (std::uint64_t id = 1; id <= 3; ++id)
    f.outbox.reply(f.rid, true, reply_header(id), {}, wire::OK);
  CHECK(f.outbox.send(f.rid, heartbeat()) == Sent::ok);
  std::vector<zmq::message_t> frames;
  wire::Header h = f.read(frames);
  REQUIRE(h.kind() == wire::BATCH);
  REQUIRE(frames.size() == 2);
  wire::BatchReader reader(frames[1].data(), frames[1].size());
  std::vector<std::uint64_t> ids;
  for (wire::MessageRecord record; reader.next(record);) {
    wire::Header r;
    REQUIRE(r.ParseFromArray(record.header.data(), static_cast<int>(record.header.size())));
    ids.push_back(r.id());
  }
  CHECK(ids == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(f.read(frames).kind() == wire::HEARTBEAT);
  CHECK(f.metrics.replies == 3);
  CHECK(f.metrics.batches_sent == 1);
  f.outbox.flush();  // nothing left for the round
  CHECK(f.nothing_to_read());
}

TEST_CASE("a reply to a connection that does not read batches goes at once", "[outbox]") {
  Fixture f;
  f.outbox.reply(f.rid, false, reply_header(9, wire::NO_RESPONDERS), {}, wire::NO_RESPONDERS);
  std::vector<zmq::message_t> frames;
  CHECK(f.read(frames).id() == 9);
  CHECK(f.metrics.replies == 1);
  CHECK(f.metrics.no_responders == 1);
}

TEST_CASE("a reply too large for a batch goes at once, after the batch", "[outbox]") {
  Fixture f;
  f.outbox.reply(f.rid, true, reply_header(1), {}, wire::OK);
  zmq::message_t large(std::string(wire::kMaxBatchedPayload + 1, 'x'));
  f.outbox.reply(f.rid, true, reply_header(2), std::span<zmq::message_t>(&large, 1), wire::OK);
  std::vector<zmq::message_t> frames;
  CHECK(f.read(frames).id() == 1);
  CHECK(f.read(frames).id() == 2);
  CHECK(frames.at(1).size() == wire::kMaxBatchedPayload + 1);
}

TEST_CASE("events and replies to one connection leave in the order they were made", "[outbox]") {
  Fixture f;
  broker::Subscription sub;
  sub.client = f.rid;
  sub.id = 4;
  sub.credit = 10;
  sub.reads_batches = true;
  f.outbox.event(sub, "jobs.a", "e1");
  f.outbox.reply(f.rid, true, reply_header(1), {}, wire::OK);
  f.outbox.event(sub, "jobs.a", "e2");
  f.outbox.flush();
  std::vector<zmq::message_t> frames;
  wire::Header h = f.read(frames);
  CHECK(h.kind() == wire::EVENT);
  CHECK(frames.at(1).to_string() == "e1");
  CHECK(f.read(frames).kind() == wire::REPLY);
  CHECK(f.read(frames).kind() == wire::EVENT);
  CHECK(frames.at(1).to_string() == "e2");
  CHECK(sub.credit == 8);
  CHECK(sub.delivered == 2);
  CHECK(f.metrics.events_delivered == 2);
}

TEST_CASE("a write to a connection that is gone says so and tells the broker", "[outbox]") {
  Fixture f;
  CHECK(f.outbox.send("nobody", heartbeat()) == Sent::peer_gone);
  CHECK(f.gone == std::vector<broker::RoutingId>{"nobody"});
  f.outbox.reply("nobody", true, reply_header(1, wire::UNAVAILABLE), {}, wire::UNAVAILABLE);
  f.outbox.flush();
  CHECK(f.metrics.dropped_replies == 1);
  CHECK(f.metrics.unavailable == 1);
  CHECK(f.gone.size() == 2);
}

TEST_CASE(
    "a full connection refuses a batch whole: its replies are dropped, its events "
    "go back to their subscription",
    "[outbox]") {
  Fixture f(1);
  // Fill the pipe: the router's high-water mark and the peer's together.
  while (f.outbox.send(f.rid, heartbeat()) == Sent::ok) {
  }
  const auto refused = f.metrics.refusals(broker::Limit::peer_queue);
  CHECK(refused >= 1);
  f.outbox.reply(f.rid, true, reply_header(1), {}, wire::OK);
  f.outbox.reply(f.rid, true, reply_header(2), {}, wire::OK);
  f.outbox.flush();
  CHECK(f.metrics.dropped_replies == 2);
  CHECK(f.metrics.replies == 0);

  broker::Subscription sub;
  sub.client = f.rid;
  sub.credit = 5;
  sub.reads_batches = true;
  f.outbox.event(sub, "t", "a");
  f.outbox.event(sub, "t", "b");
  CHECK(sub.credit == 3);
  f.outbox.flush();
  CHECK(sub.credit == 5);  // given back
  CHECK(sub.gap == 2);     // the next event says it missed both
  CHECK(f.metrics.events_dropped == 2);
  CHECK(f.metrics.refusals(broker::Limit::peer_queue) == refused + 2);
  CHECK(f.gone.empty());
}

TEST_CASE("calls dispatched to an instance in one round go as one BATCH with its replies",
          "[outbox]") {
  Fixture f;
  zmq::message_t payload(std::string_view("question"));
  CHECK(f.outbox.dispatch(f.rid, true, request_header(11), std::span<zmq::message_t>(&payload, 1),
                          false, 11) == Sent::ok);
  CHECK(payload.to_string() == "question");  // shared: still the caller's, to send again
  f.outbox.reply(f.rid, true, reply_header(3), {}, wire::OK);
  CHECK(f.outbox.dispatch(f.rid, true, request_header(12), {}, false, 12) == Sent::ok);
  CHECK(f.nothing_to_read());
  f.outbox.flush();
  std::vector<zmq::message_t> frames;
  REQUIRE(f.read(frames).kind() == wire::BATCH);
  REQUIRE(frames.size() == 2);
  using R = std::vector<std::pair<wire::Kind, std::uint64_t>>;
  CHECK(records_of(frames[1]) == R{{wire::REQUEST, 11}, {wire::REPLY, 3}, {wire::REQUEST, 12}});
  CHECK(f.metrics.replies == 1);
  CHECK(f.undelivered.empty());
}

TEST_CASE(
    "a lone dispatch goes as a plain REQUEST, a large one or one to a connection that "
    "does not read batches at once",
    "[outbox]") {
  Fixture f;
  zmq::message_t payload(std::string_view("question"));
  CHECK(f.outbox.dispatch(f.rid, true, request_header(5), std::span<zmq::message_t>(&payload, 1),
                          false, 5) == Sent::ok);
  f.outbox.flush();
  std::vector<zmq::message_t> frames;
  wire::Header h = f.read(frames);
  CHECK(h.kind() == wire::REQUEST);
  CHECK(h.id() == 5);
  REQUIRE(frames.size() == 2);
  CHECK(frames[1].to_string() == "question");

  CHECK(f.outbox.dispatch(f.rid, false, request_header(6), {}, false, 6) == Sent::ok);
  CHECK(f.read(frames).id() == 6);  // before any flush
  zmq::message_t large(std::string(wire::kMaxBatchedPayload + 1, 'x'));
  CHECK(f.outbox.dispatch(f.rid, true, request_header(7), std::span<zmq::message_t>(&large, 1),
                          false, 7) == Sent::ok);
  CHECK(f.read(frames).id() == 7);
  CHECK(large.size() == 0);  // moved: not kept
}

TEST_CASE("dispatches in a batch a full connection refuses are handed back, named, once",
          "[outbox]") {
  Fixture f(1);
  while (f.outbox.send(f.rid, heartbeat()) == Sent::ok) {
  }
  f.outbox.dispatch(f.rid, true, request_header(1), {}, false, 1);
  f.outbox.reply(f.rid, true, reply_header(9), {}, wire::OK);
  f.outbox.dispatch(f.rid, true, request_header(2), {}, false, 2);
  // What the broker makes of them (here: answers to another connection) goes in the same
  // flush.
  f.on_undelivered = [&f] { f.outbox.reply("elsewhere", true, reply_header(1), {}, wire::OK); };
  f.outbox.flush();
  CHECK(f.undelivered_to == f.rid);
  CHECK(f.undelivered == std::vector<broker::CallId>{1, 2});
  CHECK(f.undelivered_because == Sent::would_block);
  CHECK(f.metrics.dropped_replies == 2);  // the reply in the batch, and the one to nobody
  CHECK(f.gone == std::vector<broker::RoutingId>{"elsewhere"});
  f.on_undelivered = nullptr;
  f.outbox.flush();
  CHECK(f.undelivered.size() == 2);
}

TEST_CASE("dispatches to a connection that is gone are handed back as such", "[outbox]") {
  Fixture f;
  f.outbox.dispatch("nobody", true, request_header(4), {}, false, 4);
  f.outbox.flush();
  CHECK(f.gone == std::vector<broker::RoutingId>{"nobody"});
  CHECK(f.undelivered_to == "nobody");
  CHECK(f.undelivered == std::vector<broker::CallId>{4});
  CHECK(f.undelivered_because == Sent::peer_gone);
}

TEST_CASE("a stream's chunks go in its caller's batch before its final reply", "[outbox][stream]") {
  Fixture f;
  for (const std::string_view text : {"c1", "c2"}) {
    zmq::message_t chunk(text);
    CHECK(f.outbox.chunk(f.rid, true, chunk_header(7), std::span<zmq::message_t>(&chunk, 1), 70) ==
          Sent::ok);
  }
  f.outbox.reply(f.rid, true, reply_header(7), {}, wire::OK);
  CHECK(f.nothing_to_read());
  f.outbox.flush();
  std::vector<zmq::message_t> frames;
  REQUIRE(f.read(frames).kind() == wire::BATCH);
  REQUIRE(frames.size() == 2);
  using R = std::vector<std::pair<wire::Kind, std::uint64_t>>;
  CHECK(records_of(frames[1]) == R{{wire::CHUNK, 7}, {wire::CHUNK, 7}, {wire::REPLY, 7}});
  wire::BatchReader reader(frames[1].data(), frames[1].size());
  wire::MessageRecord record;
  REQUIRE(reader.next(record));
  CHECK(record.payload == "c1");
  CHECK(f.metrics.replies == 1);  // chunks are no outcome
  CHECK(f.undelivered_chunks.empty());
}

TEST_CASE("chunks of 4 KiB go 15 to a BATCH of at most 64 KiB", "[outbox][stream]") {
  Fixture f;
  const std::string chunk(4096, 'c');
  for (int i = 0; i < 20; ++i) {
    zmq::message_t frame(chunk);
    CHECK(f.outbox.chunk(f.rid, true, chunk_header(7), std::span<zmq::message_t>(&frame, 1), 70) ==
          Sent::ok);
  }
  f.outbox.flush();
  std::vector<zmq::message_t> frames;
  REQUIRE(f.read(frames).kind() == wire::BATCH);  // full, it went before the flush
  REQUIRE(frames.size() == 2);
  CHECK(frames[1].size() <= wire::kMaxChunkBatchBytes);
  CHECK(records_of(frames[1]).size() == 15);
  REQUIRE(f.read(frames).kind() == wire::BATCH);
  CHECK(records_of(frames[1]).size() == 5);
  CHECK(f.nothing_to_read());
}

TEST_CASE("a reply of 4 KiB goes alone, after the batch of chunks before it", "[outbox][stream]") {
  Fixture f;
  zmq::message_t chunk(std::string(4096, 'c'));
  CHECK(f.outbox.chunk(f.rid, true, chunk_header(7), std::span<zmq::message_t>(&chunk, 1), 70) ==
        Sent::ok);
  zmq::message_t reply(std::string(4096, 'r'));
  f.outbox.reply(f.rid, true, reply_header(7), std::span<zmq::message_t>(&reply, 1), wire::OK);
  std::vector<zmq::message_t> frames;
  CHECK(f.read(frames).kind() == wire::CHUNK);  // a batch of one goes as itself
  CHECK(f.read(frames).kind() == wire::REPLY);
  CHECK(frames.at(1).size() == 4096);
  CHECK(f.nothing_to_read());
}

TEST_CASE(
    "a chunk too large for a batch, or for a connection that does not read batches, goes at "
    "once, moved, after the batch",
    "[outbox][stream]") {
  Fixture f;
  CHECK(f.outbox.chunk(f.rid, true, chunk_header(1), {}, 10) == Sent::ok);
  zmq::message_t large(std::string(wire::kMaxBatchedChunk + 1, 'x'));
  CHECK(f.outbox.chunk(f.rid, true, chunk_header(1), std::span<zmq::message_t>(&large, 1), 10) ==
        Sent::ok);
  CHECK(large.size() == 0);  // moved
  std::vector<zmq::message_t> frames;
  wire::Header h = f.read(frames);
  CHECK(h.kind() == wire::CHUNK);
  CHECK(frames.size() == 1);  // the small one, alone in its batch, went first
  h = f.read(frames);
  CHECK(h.kind() == wire::CHUNK);
  CHECK(frames.at(1).size() == wire::kMaxBatchedChunk + 1);
  zmq::message_t small(std::string_view("s"));
  CHECK(f.outbox.chunk(f.rid, false, chunk_header(2), std::span<zmq::message_t>(&small, 1), 11) ==
        Sent::ok);
  CHECK(f.read(frames).id() == 2);  // before any flush
}

TEST_CASE("chunks in a batch a full connection refuses name each of their streams once",
          "[outbox][stream]") {
  Fixture f(1);
  while (f.outbox.send(f.rid, heartbeat()) == Sent::ok) {
  }
  f.outbox.chunk(f.rid, true, chunk_header(1), {}, 10);
  f.outbox.chunk(f.rid, true, chunk_header(1), {}, 10);
  f.outbox.chunk(f.rid, true, chunk_header(2), {}, 20);
  f.outbox.reply(f.rid, true, reply_header(3), {}, wire::OK);
  f.outbox.flush();
  CHECK(f.undelivered_chunks == std::vector<broker::CallId>{10, 20});
  CHECK(f.undelivered_chunks_because == Sent::would_block);
  CHECK(f.undelivered.empty());  // no dispatch was in it
  CHECK(f.metrics.dropped_replies == 1);
  // A lone chunk the pipe has no room for says so at once.
  CHECK(f.outbox.chunk(f.rid, false, chunk_header(4), {}, 40) == Sent::would_block);
}
