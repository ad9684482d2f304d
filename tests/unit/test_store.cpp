// The durable store (daemon/store/store.hpp): what is committed is read back by the next
// open, in put order, with delivery counts; tickets are reported in order once synced;
// a file that fails its check is moved aside; a file that is not a store is refused.
#include <poll.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "child_process.hpp"
#include "store/store.hpp"

using namespace sagebus::broker;
namespace fs = std::filesystem;

namespace {

StoreWrite put(std::uint64_t seq, const std::string& queue,
               const std::vector<std::string>& frames) {
  StoreWrite w;
  w.op = StoreWrite::Op::put;
  w.seq = seq;
  w.queue = queue;
  for (const auto& f : frames)
    w.payload.emplace_back(f.data(), f.size());
  return w;
}

StoreWrite op(StoreWrite::Op kind, std::uint64_t seq, std::uint32_t deliveries = 0) {
  StoreWrite w;
  w.op = kind;
  w.seq = seq;
  w.deliveries = deliveries;
  return w;
}

// StoreWrites are move-only: an initializer list cannot hold them.
template <class... W>
std::vector<StoreWrite> list(W&&... w) {
  std::vector<StoreWrite> v;
  (v.push_back(std::move(w)), ...);
  return v;
}

// Waits (5 s at most) until `n` tickets are done.
std::vector<StoreDone> wait_done(Store& store, std::size_t n) {
  std::vector<StoreDone> done;
  for (int i = 0; i < 100 && done.size() < n; ++i) {
    pollfd p{store.notify_fd(), POLLIN, 0};
    ::poll(&p, 1, 50);
    store.collect(done);
  }
  REQUIRE(done.size() == n);
  return done;
}

std::string text(const Frames& frames) {
  std::string s;
  for (const auto& f : frames)
    s += f.to_string() + "|";
  return s;
}

}  // namespace

TEST_CASE("what the store committed is read back in put order", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/store.db";
  {
    Recovery r;
    auto store = Store::open(path, r);
    CHECK(r.items.empty());
    CHECK(r.moved_aside.empty());
    store->submit(1, list(put(1, "a", {"one"}), put(2, "b", {"two", "parts"}), put(3, "a", {""})));
    store->submit(2, list(op(StoreWrite::Op::lease, 1, 1), op(StoreWrite::Op::remove, 3)));
    const auto done = wait_done(*store, 2);
    CHECK(done[0].ticket == 1);
    CHECK(done[1].ticket == 2);
    CHECK(done[0].ok);
    CHECK(done[1].ok);
    CHECK(store->stats().commits >= 1);
    CHECK(store->stats().writes == 5);
  }
  Recovery r;
  auto store = Store::open(path, r);
  REQUIRE(r.items.size() == 2);
  CHECK(r.items[0].seq == 1);
  CHECK(r.items[0].queue == "a");
  CHECK(r.items[0].deliveries == 1);
  CHECK(text(r.items[0].payload) == "one|");
  CHECK(r.items[1].seq == 2);
  CHECK(r.items[1].queue == "b");
  CHECK(text(r.items[1].payload) == "two|parts|");
  CHECK(r.max_seq == 2);
  CHECK(r.queues.size() == 2);
}

TEST_CASE("an item's expiry is read back on the new clock", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/store.db";
  const auto in_a_minute = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  {
    Recovery r;
    auto store = Store::open(path, r);
    StoreWrite expiring = put(1, "q", {"x"});
    expiring.expires = in_a_minute;
    store->submit(1, list(std::move(expiring), put(2, "q", {"y"})));
    wait_done(*store, 1);
  }
  Recovery r;
  auto store = Store::open(path, r);
  REQUIRE(r.items.size() == 2);
  // Stored on the wall clock to the millisecond, and translated back.
  CHECK(r.items[0].expires > in_a_minute - std::chrono::seconds(1));
  CHECK(r.items[0].expires < in_a_minute + std::chrono::seconds(1));
  CHECK(r.items[1].expires == std::chrono::steady_clock::time_point::max());
}

TEST_CASE("the store writes what was submitted before it closes", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/store.db";
  {
    Recovery r;
    auto store = Store::open(path, r);
    for (std::uint64_t i = 1; i <= 1000; ++i)
      store->submit(i, list(put(i, "q", {std::to_string(i)})));
  }
  Recovery r;
  auto store = Store::open(path, r);
  REQUIRE(r.items.size() == 1000);
  CHECK(text(r.items.back().payload) == "1000|");
}

TEST_CASE("queue definitions are stored and forgotten", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/store.db";
  {
    Recovery r;
    auto store = Store::open(path, r);
    StoreWrite scratch = op(StoreWrite::Op::define, 0);
    scratch.queue = "scratch";
    scratch.transient = true;
    StoreWrite gone = op(StoreWrite::Op::define, 0);
    gone.queue = "gone";
    StoreWrite forget = op(StoreWrite::Op::undefine, 0);
    forget.queue = "gone";
    store->submit(1, list(std::move(scratch), std::move(gone), std::move(forget)));
    wait_done(*store, 1);
  }
  Recovery r;
  auto store = Store::open(path, r);
  REQUIRE(r.queues.size() == 1);
  CHECK(r.queues[0].name == "scratch");
  CHECK(r.queues[0].transient);
}

TEST_CASE("a store that fails its check is moved aside", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/store.db";
  {
    Recovery r;
    auto store = Store::open(path, r);
    std::vector<StoreWrite> writes;
    for (std::uint64_t i = 1; i <= 2000; ++i)
      writes.push_back(put(i, "q", {std::string(200, 'x')}));
    store->submit(1, std::move(writes));
    wait_done(*store, 1);
    store->compact(2);  // everything into the database file, the WAL emptied
    wait_done(*store, 1);
  }
  {
    // Garbage over pages in the middle of the file (the header page stays).
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(path) / 2));
    const std::string junk(8192, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  Recovery r;
  auto store = Store::open(path, r);
  CHECK_FALSE(r.moved_aside.empty());
  CHECK_FALSE(r.check_error.empty());
  CHECK(fs::exists(r.moved_aside));
  CHECK(r.items.empty());  // a fresh store
}

TEST_CASE("a store in use by another broker is refused", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/store.db";
  Recovery r;
  auto first = Store::open(path, r);
  Recovery again;
  CHECK_THROWS_WITH(Store::open(path, again), Catch::Contains("in use by another sage-busd"));
  first.reset();
  CHECK_NOTHROW(Store::open(path, again));
}

TEST_CASE("a file that is not a store is refused", "[store]") {
  sagebus::child::TempDir dir("sagebus-store");
  const std::string path = dir.path() + "/other.db";
  {
    Recovery r;
    auto store = Store::open(dir.path() + "/store.db", r);
  }
  // Another application's database: a table of its own, no application id.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  Recovery r;
  CHECK_THROWS_WITH(Store::open(path, r), Catch::Contains("not a sage-busd store"));
  CHECK_THROWS_WITH(Store::open(dir.path() + "/missing/store.db", r),
                    Catch::Contains("does not exist"));
}
