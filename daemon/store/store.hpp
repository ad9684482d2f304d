// Store: the broker's durable store of legacy queues (docs/operations.md, "The store"), an
// SQLite database in WAL mode with synchronous=FULL, written by one thread of its own.
//
// open() runs before the loop: it locks the file (a second broker on it is refused),
// checks it (PRAGMA quick_check), moves a file that fails aside (named in the returned
// Recovery, the caller logs it), and reads back every queue definition and stored item,
// in put order. After that the loop only submits and
// collects, and never waits on the disk:
//
//   - submit(ticket, writes) hands a list of writes to the writer thread and returns at
//     once. The writer takes everything submitted since its last commit and commits it
//     as one transaction (group commit: while one commit syncs, the next batch gathers).
//     A transaction is synced to disk before any of its tickets is reported done.
//   - The writer then reports each ticket as a Done, in submission order, and makes the
//     fd of notify_fd() readable. The loop calls collect() when it is.
//
// A transaction that fails (disk full, read-only, I/O error) is rolled back, and each of
// its tickets is reported with the error. Its puts are dropped: they were never stored.
// Its other writes (leases, removals, definitions) are kept and written first in every
// later transaction until one commits: they only ever record what already happened in
// memory, so repeating them is harmless, and only the last of each item or queue is kept.
//
// Failpoints, for the crash test: SAGEBUS_STORE_FAILPOINT=POINT:N makes the writer raise
// SIGKILL the Nth time it reaches POINT: "mid-batch" (half the writes of a transaction
// done), "before-commit" (all done, COMMIT not yet run), "after-commit" (committed, its
// tickets not yet reported).
//
// Thread safety: every member is for the loop thread; the writer thread is private.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

namespace sagebus::broker {

using Frames = std::vector<zmq::message_t>;

// One change to the store. Payload frames are shared copies (refcounted; the writer
// thread only reads them).
struct StoreWrite {
  enum class Op : std::uint8_t {
    put,       // item `seq` appended to `queue` with `payload`
    lease,     // item `seq` handed out: it has been handed out `deliveries` times
    remove,    // item `seq` is gone (acknowledged, or purged)
    define,    // queue `queue` exists; `transient`: its items are not stored
    undefine,  // queue `queue` is forgotten
  };
  Op op = Op::put;
  std::uint64_t seq = 0;
  std::uint32_t deliveries = 0;
  bool transient = false;
  // put: removed if not taken by then (max: never). The store keeps it on the wall
  // clock, which a restart does not reset.
  std::chrono::steady_clock::time_point expires = std::chrono::steady_clock::time_point::max();
  std::string queue;
  Frames payload;
};

// An item read back by open().
struct StoredItem {
  std::uint64_t seq = 0;
  std::string queue;
  std::uint32_t deliveries = 0;  // times handed out before the restart
  // Its expiry, on this start's steady clock (max: never; maybe already passed).
  std::chrono::steady_clock::time_point expires = std::chrono::steady_clock::time_point::max();
  Frames payload;
};

struct StoredQueue {
  std::string name;
  bool transient = false;
};

struct Recovery {
  std::vector<StoredQueue> queues;  // every queue defined, durable or transient
  std::vector<StoredItem> items;    // in put order (ascending seq)
  std::uint64_t max_seq = 0;
  std::string moved_aside;  // a file that failed its check was renamed to this
  std::string check_error;  // what the check said of it
  std::chrono::milliseconds took{0};
};

// What the writer reports for a ticket.
struct StoreDone {
  std::uint64_t ticket = 0;
  bool ok = true;
  std::string error;  // names the store and what failed
};

// The writer's figures, as of its last transaction.
struct StoreStats {
  std::uint64_t commits = 0;
  std::uint64_t failed_commits = 0;
  std::uint64_t writes = 0;  // StoreWrites committed
  std::uint64_t commit_us_sum = 0;
  std::uint64_t last_commit_us = 0;
  // Commit latency histogram: commits that took at most kCommitBucketsUs[i] us.
  static constexpr std::uint64_t kCommitBucketsUs[] = {
      100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
  std::uint64_t commit_buckets[std::size(kCommitBucketsUs)] = {};
  std::uint64_t bytes = 0;  // database + WAL on disk
  bool available = true;    // the last transaction committed
  std::string error;        // its error when it did not
};

class Store {
 public:
  // Opens (creating) the store at `path`, checks it and reads it back into `recovery`;
  // then starts the writer thread. Throws std::runtime_error naming the path and what
  // to do when it cannot be opened or created at all.
  static std::unique_ptr<Store> open(const std::string& path, Recovery& recovery);
  ~Store();  // writes what was submitted, then stops the writer
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& path() const noexcept { return path_; }
  int notify_fd() const noexcept { return event_fd_; }

  void submit(std::uint64_t ticket, std::vector<StoreWrite> writes);
  // Asks for VACUUM after what is submitted; reported as a Done of `ticket`.
  void compact(std::uint64_t ticket);
  // Reports done tickets into `out` (appended, in order); clears the notification.
  void collect(std::vector<StoreDone>& out);
  StoreStats stats() const;

 private:
  struct Job {
    std::uint64_t ticket = 0;
    bool compact = false;
    std::vector<StoreWrite> writes;
  };
  class Db;

  Store(std::string path, std::unique_ptr<Db> db, int lock_fd);
  void run_();
  void write_(std::deque<Job>& jobs);

  std::string path_;
  std::unique_ptr<Db> db_;  // the writer thread's once started
  int lock_fd_ = -1;        // held while the store is open: one broker a store
  int event_fd_ = -1;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  std::vector<StoreDone> done_;
  StoreStats stats_;
  bool stopping_ = false;
  std::thread writer_;
};

}  // namespace sagebus::broker
