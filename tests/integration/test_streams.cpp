// Streamed replies through the real broker: order, completeness, flow control (a stalled
// reader bounds every side's memory), the whole-stream deadline and the idle timeout, and
// an instance lost mid-stream (docs/protocol.md, "Streams"; docs/sdk.md, "Streams").
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace sagebus;
using namespace sagebus::test;

namespace {

// Service `name` on its own client, whose streaming method "count" writes as many chunks
// as its payload says ("chunk-<i>"), counting them in `written`.
class CountingStreams {
 public:
  CountingStreams(const Broker& broker, const std::string& name, std::size_t chunk_bytes = 0)
      : client_(at(broker, name + "-instance")), service_(client_, name, {.max_inflight = 4}) {
    service_.handle_stream("count", [this, chunk_bytes](const Request& req, StreamWriter& out) {
      const int n = std::stoi(std::string(req.payload));
      for (int i = 0; i < n; ++i) {
        std::string chunk = "chunk-" + std::to_string(i);
        if (chunk_bytes > chunk.size()) chunk.resize(chunk_bytes, '.');
        out.write(chunk);
        ++written;
      }
    });
    service_.handle("plain",
                    [](const Request& req) { return "plain:" + std::string(req.payload); });
    service_.start();
    REQUIRE(service_.wait_registered(5s));
  }
  std::atomic<int> written{0};

 private:
  Client client_;
  Service service_;
};

}  // namespace

TEST_CASE("a stream of 10000 chunks arrives complete and in order", "[stream]") {
  Broker broker;
  CountingStreams streams(broker, "tokens");
  Client caller(at(broker, "caller"));
  Stream stream = caller.stream("tokens", "count", "10000", {.timeout = 30s});
  int expected = 0;
  for (const std::string& chunk : stream) {
    REQUIRE(chunk == "chunk-" + std::to_string(expected));
    ++expected;
  }
  CHECK(expected == 10000);
  CHECK(stream.chunks() == 10000);
}

TEST_CASE("next into one string reads every chunk and then says the stream ended", "[stream]") {
  Broker broker;
  CountingStreams streams(broker, "tokens");
  Client caller(at(broker, "caller"));
  Stream stream = caller.stream("tokens", "count", "2000", {.timeout = 30s});
  std::string chunk = "stale";
  int expected = 0;
  while (stream.next(chunk)) {
    REQUIRE(chunk == "chunk-" + std::to_string(expected));
    ++expected;
  }
  CHECK(expected == 2000);
  CHECK_FALSE(stream.next(chunk));  // and again
}

TEST_CASE("stream_async runs on_chunk per chunk in order and then done once", "[stream]") {
  Broker broker;
  CountingStreams streams(broker, "tokens");
  Client caller(at(broker, "caller"));
  std::mutex mutex;
  std::vector<std::string> chunks;
  std::atomic<int> dones{0};
  std::promise<Reply> final_reply;
  caller.stream_async(
      "tokens", "count", "500", {.timeout = 10s},
      [&](std::string_view chunk) {
        std::lock_guard lock(mutex);
        chunks.emplace_back(chunk);
      },
      [&](Reply r) {
        if (++dones == 1) final_reply.set_value(std::move(r));
      });
  auto future = final_reply.get_future();
  REQUIRE(future.wait_for(10s) == std::future_status::ready);
  CHECK(future.get().status == Status::ok);
  std::lock_guard lock(mutex);
  REQUIRE(chunks.size() == 500);
  for (int i = 0; i < 500; ++i)
    CHECK(chunks[static_cast<std::size_t>(i)] == "chunk-" + std::to_string(i));
  CHECK(dones == 1);
}

TEST_CASE("a stalled reader bounds the memory of service broker and caller", "[stream]") {
  Broker broker;
  constexpr std::size_t kChunk = 64 * 1024;
  constexpr std::uint32_t kWindow = 16;  // chunks: a window of 1 MiB
  CountingStreams streams(broker, "big", kChunk);
  Client caller(at(broker, "caller"));
  const long broker_before = rss_kib(broker.process().pid());
  const long self_before = rss_kib(::getpid());
  // 4,000 chunks of 64 KiB: 250 MiB, were anything to buffer them.
  Stream stream =
      caller.stream("big", "count", "4000", {.timeout = 30s, .window_bytes = kWindow * kChunk});
  REQUIRE(stream.next().has_value());
  // The writer stops once the window is spent (its last chunk may overrun it): one chunk
  // read, so at most the window plus that one, plus the half window a reader's grant may
  // add.
  REQUIRE(eventually([&] { return streams.written >= static_cast<int>(kWindow); }, 5s));
  const int stalled_at = streams.written;
  CHECK_FALSE(eventually([&] { return streams.written > stalled_at; }, 500ms));
  CHECK(streams.written <= static_cast<int>(kWindow + 1 + kWindow / 2));
  const long broker_grew = rss_kib(broker.process().pid()) - broker_before;
  const long self_grew = rss_kib(::getpid()) - self_before;
  INFO("broker grew " << broker_grew << " KiB, this process (service and caller) " << self_grew
                      << " KiB, for a window of " << kWindow << " chunks of " << kChunk / 1024
                      << " KiB");
  // A window is 1 MiB; the bound leaves room for allocators, not for the 250 MiB.
  CHECK(broker_grew < 16 * 1024);
  CHECK(self_grew < 32 * 1024);
  // Reading on drains the rest, in order.
  int next = 1;
  while (auto chunk = stream.next()) {
    REQUIRE(chunk->compare(0, 6 + std::to_string(next).size(), "chunk-" + std::to_string(next)) ==
            0);
    ++next;
  }
  CHECK(next == 4000);
}

TEST_CASE("chunks larger than the whole window go one at a time and arrive complete", "[stream]") {
  Broker broker;
  constexpr std::size_t kChunk = 8 * 1024;
  CountingStreams streams(broker, "wide", kChunk);
  Client caller(at(broker, "caller"));
  // A window of 1 KiB: each chunk overruns it, so one is outstanding at a time.
  Stream stream = caller.stream("wide", "count", "200", {.timeout = 30s, .window_bytes = 1024});
  REQUIRE(stream.next().has_value());
  // Unread, the first chunk holds the writer after the one that overran the window again.
  REQUIRE(eventually([&] { return streams.written >= 2; }, 5s));
  CHECK_FALSE(eventually([&] { return streams.written > 2; }, 300ms));
  int read = 1;
  while (auto chunk = stream.next()) {
    REQUIRE(chunk->size() == kChunk);
    REQUIRE(chunk->starts_with("chunk-" + std::to_string(read) + "."));
    ++read;
  }
  CHECK(read == 200);
}

TEST_CASE("an instance killed mid-stream gives exactly one final UNAVAILABLE", "[stream]") {
  Broker broker;
  TempDir dir;
  Process peer({test_peer_path(), broker.endpoint(), "stream-then-hang", "doomed", "tokens", "5"},
               dir.path() + "/doomed.log");
  REQUIRE(peer.wait_for_log("ready", 10s));
  Client caller(at(broker, "caller"));
  std::promise<Reply> final_reply;
  std::atomic<int> chunks{0}, dones{0};
  caller.stream_async(
      "tokens", "stream", "", {.timeout = 20s}, [&](std::string_view) { ++chunks; },
      [&](Reply r) {
        if (++dones == 1) final_reply.set_value(std::move(r));
      });
  REQUIRE(peer.wait_for_log("wrote 5", 10s));
  REQUIRE(eventually([&] { return chunks == 5; }, 5s));
  peer.signal(SIGKILL);
  auto future = final_reply.get_future();
  REQUIRE(future.wait_for(10s) == std::future_status::ready);
  const Reply r = future.get();
  CHECK(r.status == Status::unavailable);
  CHECK(chunks == 5);
  // Nothing more comes: a second outcome would have counted.
  Client probe(at(broker, "probe"));
  CHECK(in_flight(probe, "tokens") == 0);
  CHECK(dones == 1);
}

TEST_CASE("the deadline covers the whole stream", "[stream]") {
  Broker broker;
  Client instance(at(broker, "instance"));
  Service service(instance, "slow", {.max_inflight = 1});
  // A chunk every 100 ms, for 2 s: longer than the stream's 500 ms deadline, although no
  // gap between chunks is.
  service.handle_stream("drip", [&](const Request& req, StreamWriter& out) {
    for (int i = 0; i < 20 && !req.cancelled(); ++i) {
      out.write("drop");
      std::promise<void> gone;
      auto registration = req.context.cancel.on_cancel([&] { gone.set_value(); });
      (void)gone.get_future().wait_for(100ms);
      req.context.cancel.forget(registration);
    }
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  Stream stream = caller.stream("slow", "drip", "", {.timeout = 500ms, .idle_timeout = 400ms});
  CHECK(status_of([&] {
          while (stream.next()) {
          }
        }) == Status::deadline_exceeded);
  CHECK(stream.chunks() >= 2);
  CHECK(stream.chunks() < 20);
}

TEST_CASE("an idle timeout ends a stream whose next chunk is late and cancels it", "[stream]") {
  Broker broker;
  Client instance(at(broker, "instance"));
  Service service(instance, "slow", {.max_inflight = 1});
  std::atomic<bool> cancelled{false};
  service.handle_stream("drip", [&](const Request& req, StreamWriter& out) {
    out.write("first");
    std::promise<void> gone;
    auto registration = req.context.cancel.on_cancel([&] { gone.set_value(); });
    if (gone.get_future().wait_for(10s) == std::future_status::ready) cancelled = true;
    req.context.cancel.forget(registration);
  });
  service.start();
  REQUIRE(service.wait_registered(5s));
  Client caller(at(broker, "caller"));
  Stream stream = caller.stream("slow", "drip", "", {.timeout = 10s, .idle_timeout = 200ms});
  REQUIRE(stream.next() == std::optional<std::string>("first"));
  const Error e = error_of([&] { (void)stream.next(); });
  CHECK(e.status() == Status::deadline_exceeded);
  CHECK_THAT(e.message(), Catch::Contains("idle_timeout"));
  CHECK(eventually([&] { return cancelled.load(); }, 5s));
}

TEST_CASE("a plain call to a streaming method is refused INVALID_ARGUMENT", "[stream]") {
  Broker broker;
  CountingStreams streams(broker, "tokens");
  Client caller(at(broker, "caller"));
  const Error e = error_of([&] { caller.call("tokens", "count", "3"); });
  CHECK(e.status() == Status::invalid_argument);
  CHECK_THAT(e.message(), Catch::Contains("Client::stream"));
}

TEST_CASE("a stream of a plain method gets its reply as one chunk", "[stream]") {
  Broker broker;
  CountingStreams streams(broker, "tokens");
  Client caller(at(broker, "caller"));
  Stream stream = caller.stream("tokens", "plain", "x");
  CHECK(stream.next() == std::optional<std::string>("plain:x"));
  CHECK_FALSE(stream.next().has_value());
}

TEST_CASE("bad stream options are refused INVALID_ARGUMENT", "[stream]") {
  Broker broker;
  Client caller(at(broker, "caller"));
  CHECK(status_of([&] { (void)caller.stream("s", "m", "", {.window_bytes = 0}); }) ==
        Status::invalid_argument);
  CHECK(status_of([&] {
          (void)caller.stream("s", "m", "", {.window_bytes = 64 * 1024 * 1024 + 1});
        }) == Status::invalid_argument);
}
