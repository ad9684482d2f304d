// Faults of the broker's durable store (sage-busd --store):
//   - disk full: the broker's file size is limited (RLIMIT_FSIZE, set on the running
//     broker with prlimit; it ignores SIGXFSZ) to about the size its store files have;
//     puts then fail UNAVAILABLE naming the store, while items already stored can still be
//     taken and request-reply still works; once the limit is lifted, puts succeed again and
//     nothing confirmed is lost;
//   - a corrupt store file: the broker checks it when it starts, moves it aside
//     (store.db.corrupt-*), says so in its log, and serves on a new, empty store.
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "crash_broker.hpp"
#include "harness.hpp"

namespace sagebus::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::uintmax_t size_or_zero(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

// Runs `sql` on the database at `path` (with no broker on it); returns the first column of
// each row, or the error.
std::vector<std::string> sqlite(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::vector<std::string> rows;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    rows.push_back(std::string("open: ") + (db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return rows;
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    rows.push_back(std::string("prepare: ") + sqlite3_errmsg(db));
  } else {
    int rc = SQLITE_ROW;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      const auto* text = sqlite3_column_text(stmt, 0);
      rows.emplace_back(text ? reinterpret_cast<const char*>(text) : "");
    }
    if (rc != SQLITE_DONE) rows.push_back(std::string("step: ") + sqlite3_errmsg(db));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

std::string joined(const std::vector<std::string>& rows) {
  std::string out;
  for (const auto& r : rows)
    out += (out.empty() ? "" : " | ") + r;
  return out;
}

// Sets the soft RLIMIT_FSIZE of process `pid` (the hard limit stays as it is, so that the
// soft one can be raised back).
void limit_file_size(pid_t pid, rlim_t bytes) {
  rlimit old{};
  REQUIRE(::prlimit(pid, RLIMIT_FSIZE, nullptr, &old) == 0);
  const rlimit now{std::min(bytes, old.rlim_max), old.rlim_max};
  REQUIRE(::prlimit(pid, RLIMIT_FSIZE, &now, nullptr) == 0);
}

}  // namespace

TEST_CASE(
    "store faults: a full disk fails puts UNAVAILABLE naming the store while gets and "
    "calls go on and puts succeed again once there is room",
    "[crash]") {
  child::TempDir dir("sagebus-store-full", std::getenv("SAGEBUS_CRASH_KEEP") != nullptr);
  const std::string store = dir.path() + "/store.db";
  CrashBroker broker(dir.path(), store);
  broker.start();
  Client producer(quick_client(broker.endpoint(), "full-producer"));
  LegacyQueue q(producer, "full.items");
  std::vector<std::string> confirmed;
  for (int i = 0; i < 20; ++i) {
    const std::string item = "stored-" + std::to_string(i);
    q.put(item, 5s);
    confirmed.push_back(item);
  }

  // The disk is "full" at about the size the store's files have now.
  const auto db_size = size_or_zero(store), wal_size = size_or_zero(store + "-wal");
  const rlim_t limit = std::max<rlim_t>(db_size, wal_size);
  INFO("store.db " << db_size << " bytes, store.db-wal " << wal_size << " bytes; limit " << limit);
  REQUIRE(limit > 0);
  limit_file_size(broker.pid(), limit);

  // 4 KiB items until one fails: a bounded number, since each commit must grow a file.
  const std::string padding(4096, 'x');
  const int max_attempts = static_cast<int>(4 * limit / 4096) + 2000;
  std::optional<Error> refused;
  int attempts = 0;
  for (; attempts < max_attempts && !refused; ++attempts) {
    const std::string item = "fill-" + std::to_string(attempts) + "-" + padding;
    try {
      q.put(item, 5s);
      confirmed.push_back(item);
    } catch (const Error& e) {
      refused = e;
    }
  }
  INFO("puts before the refusal: " << attempts);
  // The broker must live through it (it ignores SIGXFSZ, whose default action kills).
  if (const int status = broker.wait_exit(0ms); status != -1)
    FAIL("sage-busd exited when its store files reached the limit: wait status "
         << status
         << (WIFSIGNALED(status) ? " (signal " + std::to_string(WTERMSIG(status)) + ": " +
                                       strsignal(WTERMSIG(status)) + ")"
                                 : std::string())
         << "; its log:\n"
         << broker.log());
  REQUIRE(refused.has_value());
  CHECK(refused->status() == Status::unavailable);
  CHECK_THAT(refused->message(), Catch::Contains(store));
  std::cout << "disk full after " << attempts << " puts of 4 KiB (limit " << limit
            << " bytes): " << refused->what() << std::endl;

  // While full: an item already stored can be taken, and calls go on. The item stays
  // unacknowledged until there is room again.
  Client reader(quick_client(broker.endpoint(), "full-reader"));
  LegacyQueue r(reader, "full.items");
  {
    const auto item = r.get_item(5s);
    REQUIRE(item.has_value());
    CHECK(item->data == "stored-0");
    CHECK_FALSE(item->redelivered);
    EchoInstance echo(broker.endpoint(), "full-echo");
    Client caller(quick_client(broker.endpoint(), "full-caller"));
    CHECK(caller.call("full-echo", "echo", "still here", {.timeout = 5s}).payload == "still here");
  }

  // Room again: puts succeed within a bounded time.
  limit_file_size(broker.pid(), RLIM_INFINITY);
  const auto lifted = Clock::now();
  bool recovered = false;
  std::string last_error;
  while (!recovered && Clock::now() - lifted < 15s) {
    try {
      q.put("after-0", 2s);
      recovered = true;
    } catch (const Error& e) {
      last_error = e.what();
      std::this_thread::sleep_for(50ms);
    }
  }
  INFO("last refusal after the limit was lifted: " << last_error);
  REQUIRE(recovered);
  CHECK_THAT(broker.log(), Catch::Contains("writes again; puts are stored"));
  confirmed.push_back("after-0");
  std::cout << "puts succeed again "
            << std::chrono::duration_cast<milliseconds>(Clock::now() - lifted).count()
            << " ms after the limit was lifted" << std::endl;
  // The item taken while the disk was full can now be acknowledged (for good).
  REQUIRE_NOTHROW(r.ack());
  confirmed.erase(confirmed.begin());
  for (int i = 1; i < 10; ++i) {
    const std::string item = "after-" + std::to_string(i);
    REQUIRE_NOTHROW(q.put(item, 5s));
    confirmed.push_back(item);
  }

  // Every confirmed put is there, once; nothing the full disk refused is.
  std::set<std::string> got;
  std::size_t duplicates = 0;
  {
    Client drainer(quick_client(broker.endpoint(), "full-drainer"));
    LegacyQueue d(drainer, "full.items");
    while (auto item = d.get_item(1s)) {
      if (!got.insert(item->data).second) ++duplicates;
    }
    d.ack();
  }
  const std::set<std::string> expected(confirmed.begin(), confirmed.end());
  std::size_t missing = 0, extra = 0;
  for (const auto& c : expected)
    if (!got.contains(c)) {
      ++missing;
      UNSCOPED_INFO("missing: " << c.substr(0, 40));
    }
  for (const auto& g : got)
    if (!expected.contains(g)) {
      ++extra;
      UNSCOPED_INFO(
          "not a confirmed put (the refused one, or stored-0 acknowledged): " << g.substr(0, 40));
    }
  CHECK(missing == 0);
  CHECK(extra == 0);
  CHECK(duplicates == 0);
  const int exit_status = broker.stop();
  CHECK((WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0));
}

TEST_CASE(
    "store faults: a corrupt store file is moved aside and named in the log and the "
    "broker serves on a new store",
    "[crash]") {
  child::TempDir dir("sagebus-store-corrupt", std::getenv("SAGEBUS_CRASH_KEEP") != nullptr);
  const std::string store = dir.path() + "/store.db";
  CrashBroker broker(dir.path(), store);
  broker.start();
  {
    Client producer(quick_client(broker.endpoint(), "corrupt-producer"));
    LegacyQueue q(producer, "corrupt.items");
    const std::string padding(1024, 'o');
    for (int i = 0; i < 200; ++i)
      q.put("old-" + std::to_string(i) + "-" + padding, 5s);
  }
  const int first_exit = broker.stop();
  REQUIRE((WIFEXITED(first_exit) && WEXITSTATUS(first_exit) == 0));

  // Everything into the database file itself, then no WAL or shared memory left.
  INFO("checkpoint: " << joined(sqlite(store, "PRAGMA wal_checkpoint(TRUNCATE)")));
  REQUIRE(sqlite(store, "PRAGMA quick_check") == std::vector<std::string>{"ok"});
  for (const char* suffix : {"-wal", "-shm"})
    fs::remove(store + suffix);

  // Whole pages in the middle of the file overwritten: their b-tree headers become
  // garbage.
  const auto size = fs::file_size(store);
  std::uint32_t page_size = 0;
  {
    std::ifstream in(store, std::ios::binary);
    unsigned char header[18] = {};
    in.read(reinterpret_cast<char*>(header), sizeof header);
    page_size = static_cast<std::uint32_t>(header[16]) << 8 | header[17];
    if (page_size == 1) page_size = 65536;
  }
  REQUIRE(page_size >= 512);
  const auto pages = size / page_size;
  INFO("store.db: " << size << " bytes, " << pages << " pages of " << page_size);
  REQUIRE(pages >= 6);
  {
    std::fstream out(store, std::ios::binary | std::ios::in | std::ios::out);
    const std::string garbage(page_size, '\xA5');
    for (auto page = pages / 3; page < 2 * pages / 3; ++page) {
      out.seekp(static_cast<std::streamoff>(page * page_size));
      out.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }
    REQUIRE(out.good());
  }
  const auto check = sqlite(store, "PRAGMA quick_check");
  INFO("quick_check of the damaged file: " << joined(check));
  REQUIRE(check != std::vector<std::string>{"ok"});
  for (const char* suffix : {"-wal", "-shm"})
    fs::remove(store + suffix);

  broker.start();
  std::vector<std::string> aside;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    const std::string name = entry.path().filename().string();
    const bool wal_or_shm = name.ends_with("-wal") || name.ends_with("-shm");
    if (name.rfind("store.db.corrupt-", 0) == 0 && !wal_or_shm) aside.push_back(name);
  }
  const std::string log = broker.log();
  INFO("the broker's log:\n" << log);
  REQUIRE(aside.size() == 1);
  CHECK(log.find(aside.front()) != std::string::npos);
  CHECK(fs::file_size(dir.path() + "/" + aside.front()) == size);

  // It serves, on a new store: the queue is empty, a put and a get work.
  Client client(quick_client(broker.endpoint(), "corrupt-client"));
  LegacyQueue q(client, "corrupt.items");
  CHECK(q.size() == 0);
  q.put("fresh", 5s);
  const auto item = q.get_item(5s);
  REQUIRE(item.has_value());
  CHECK(item->data == "fresh");
  CHECK_FALSE(item->redelivered);
  q.ack();
  const int exit_status = broker.stop();
  CHECK((WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0));
}

}  // namespace sagebus::test
