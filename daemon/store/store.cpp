#include "store/store.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>

namespace sagebus::broker {

namespace {

using SteadyClock = std::chrono::steady_clock;

// 'SBST' in the database header: this file is a sage-busd store.
constexpr int kApplicationId = 0x53425354;
constexpr int kSchemaVersion = 1;
// A transaction takes at most this much of what waits; the rest goes in the next one.
constexpr std::size_t kMaxBatchWrites = 65536;
constexpr std::size_t kMaxBatchBytes = 64u << 20;

const char* const kSchema = R"(
CREATE TABLE IF NOT EXISTS queues(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  transient INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items(
  seq INTEGER PRIMARY KEY,
  queue INTEGER NOT NULL,
  deliveries INTEGER NOT NULL,
  put_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  sizes BLOB,
  payload BLOB NOT NULL);
)";

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// An expiry is kept on the steady clock in memory and on the wall clock (unix ms; 0:
// never) in the store, so that a restart, which starts a new steady clock, keeps it.
std::int64_t wall_ms_of(SteadyClock::time_point expires) {
  if (expires == SteadyClock::time_point::max()) return 0;
  return unix_ms() +
         std::chrono::duration_cast<std::chrono::milliseconds>(expires - SteadyClock::now())
             .count();
}

SteadyClock::time_point steady_of(std::int64_t wall_ms) {
  if (wall_ms == 0) return SteadyClock::time_point::max();
  return SteadyClock::now() + std::chrono::milliseconds(wall_ms - unix_ms());
}

// Failpoints of the writer (store.hpp): raise SIGKILL the Nth time one is reached.
enum class Point { none, mid_batch, before_commit, after_commit };

struct Failpoint {
  Point point = Point::none;
  long at = 0;
  long reached = 0;

  static Failpoint from_env() {
    Failpoint f;
    const char* env = std::getenv("SAGEBUS_STORE_FAILPOINT");
    if (env == nullptr || *env == '\0') return f;
    const std::string_view spec(env);
    const auto colon = spec.find(':');
    const std::string_view name = spec.substr(0, colon);
    if (name == "mid-batch")
      f.point = Point::mid_batch;
    else if (name == "before-commit")
      f.point = Point::before_commit;
    else if (name == "after-commit")
      f.point = Point::after_commit;
    else
      throw std::runtime_error("SAGEBUS_STORE_FAILPOINT='" + std::string(spec) +
                               "': the point must be mid-batch, before-commit or after-commit");
    f.at = colon == std::string_view::npos ? 1
                                           : std::atol(std::string(spec.substr(colon + 1)).c_str());
    if (f.at < 1) f.at = 1;
    return f;
  }
  void reach(Point p) {
    if (p == point && ++reached == at) ::raise(SIGKILL);
  }
};

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

// What the store at `path` takes on disk: the database and its write-ahead log.
std::uint64_t disk_bytes(const std::string& path) {
  return file_size(path) + file_size(path + "-wal");
}

std::string timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Db: one SQLite connection and its prepared statements.

class Store::Db {
 public:
  explicit Db(const std::string& path) : path_(path) {
    const int rc =
        sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      const std::string why = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      db_ = nullptr;
      throw std::runtime_error("cannot open the store " + path + ": " + why);
    }
    sqlite3_extended_result_codes(db_, 1);
    // A reader such as `sqlite3 store.db .backup` may hold the database briefly.
    sqlite3_busy_timeout(db_, 2000);
  }
  ~Db() {
    for (auto* s : {&insert_, &lease_, &remove_, &define_, &undefine_, &queue_id_})
      sqlite3_finalize(*s);
    sqlite3_close(db_);
  }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  const std::string& path() const noexcept { return path_; }

  // Runs `sql` (no results); throws naming the store on failure.
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string why = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      throw std::runtime_error(fail_(why));
    }
  }

  // The first column of the first row of `sql`, as text; nothing when there is no row.
  std::optional<std::string> text(const char* sql) {
    sqlite3_stmt* st = prepare_(sql);
    std::optional<std::string> out;
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const auto* t = sqlite3_column_text(st, 0);
      out = t ? reinterpret_cast<const char*>(t) : "";
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) throw std::runtime_error(fail_(sqlite3_errmsg(db_)));
    return out;
  }

  // PRAGMA quick_check: empty when the file is sound, else what is wrong.
  std::string check() {
    try {
      sqlite3_stmt* st = prepare_("PRAGMA quick_check");
      // The first problem, and how many more: quick_check may list one per damaged page.
      std::string first;
      std::size_t more = 0;
      int rc;
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        const std::string line = t ? t : "";
        if (line == "ok") continue;
        if (first.empty())
          first = line;
        else
          ++more;
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE && first.empty()) first = sqlite3_errmsg(db_);
      sqlite3_finalize(st);
      if (more > 0) first += " (and " + std::to_string(more) + " more problems)";
      return first;
    } catch (const std::exception& e) {
      return e.what();
    }
  }

  // Sets the file up (WAL, synchronous=FULL, the schema), refusing a file that is not a
  // store of this version.
  void prepare_schema() {
    const auto mode = text("PRAGMA journal_mode=WAL");
    if (!mode || *mode != "wal")
      throw std::runtime_error("the store " + path_ +
                               " cannot use write-ahead logging (journal mode '" +
                               mode.value_or("?") + "'); put it on a local file system");
    exec("PRAGMA synchronous=FULL");
    const int app = std::stoi(text("PRAGMA application_id").value_or("0"));
    const int version = std::stoi(text("PRAGMA user_version").value_or("0"));
    const int tables = std::stoi(text("SELECT count(*) FROM sqlite_schema").value_or("0"));
    if (app != kApplicationId && (app != 0 || tables != 0))
      throw std::runtime_error(path_ +
                               " is an SQLite database, but not a sage-busd store; give --store "
                               "a new file's path");
    if (version > kSchemaVersion)
      throw std::runtime_error("the store " + path_ + " was written by a newer sage-busd (schema " +
                               std::to_string(version) + "); run that version, or move the file");
    exec(kSchema);
    exec(("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str());
    exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
    insert_ = prepare_(
        "INSERT INTO items(seq, queue, deliveries, put_ms, expires_ms, sizes, payload) "
        "VALUES(?1,?2,0,?3,?6,?4,?5)");
    lease_ = prepare_("UPDATE items SET deliveries=?2 WHERE seq=?1");
    remove_ = prepare_("DELETE FROM items WHERE seq=?");
    define_ = prepare_(
        "INSERT INTO queues(name, transient) VALUES(?1,?2) "
        "ON CONFLICT(name) DO UPDATE SET transient=excluded.transient");
    undefine_ = prepare_("DELETE FROM queues WHERE name=?");
    queue_id_ = prepare_("SELECT id FROM queues WHERE name=?");
  }

  void read_back(Recovery& out) {
    std::unordered_map<std::int64_t, std::string> names;
    {
      sqlite3_stmt* st = prepare_("SELECT id, name, transient FROM queues ORDER BY id");
      int rc;
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const std::int64_t id = sqlite3_column_int64(st, 0);
        std::string name = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
        out.queues.push_back({name, sqlite3_column_int(st, 2) != 0});
        ids_[name] = id;
        names.emplace(id, std::move(name));
      }
      sqlite3_finalize(st);
      if (rc != SQLITE_DONE) throw std::runtime_error(fail_(sqlite3_errmsg(db_)));
    }
    sqlite3_stmt* st = prepare_(
        "SELECT seq, queue, deliveries, sizes, payload, expires_ms FROM items ORDER BY seq");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      StoredItem& item = out.items.emplace_back();
      item.seq = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
      if (auto n = names.find(sqlite3_column_int64(st, 1)); n != names.end())
        item.queue = n->second;
      item.deliveries = static_cast<std::uint32_t>(sqlite3_column_int64(st, 2));
      item.expires = steady_of(sqlite3_column_int64(st, 5));
      const auto* payload = static_cast<const char*>(sqlite3_column_blob(st, 4));
      const std::size_t total = static_cast<std::size_t>(sqlite3_column_bytes(st, 4));
      const auto* sizes = static_cast<const unsigned char*>(sqlite3_column_blob(st, 3));
      const std::size_t nsizes = static_cast<std::size_t>(sqlite3_column_bytes(st, 3)) / 4;
      if (sizes == nullptr || nsizes == 0) {
        item.payload.emplace_back(payload, total);
      } else {
        std::size_t at = 0;
        for (std::size_t i = 0; i < nsizes && at <= total; ++i) {
          std::uint32_t n;
          std::memcpy(&n, sizes + 4 * i, 4);
          n = std::min<std::uint32_t>(n, static_cast<std::uint32_t>(total - at));
          item.payload.emplace_back(payload + at, n);
          at += n;
        }
      }
      out.max_seq = std::max(out.max_seq, item.seq);
      if (item.queue.empty()) out.items.pop_back();  // its queue's row is gone: orphaned
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) throw std::runtime_error(fail_(sqlite3_errmsg(db_)));
  }

  // One write, inside the open transaction. Throws on failure.
  void apply(const StoreWrite& w) {
    switch (w.op) {
      case StoreWrite::Op::put: {
        const std::int64_t queue = queue_id_of_(w.queue);
        sqlite3_bind_int64(insert_, 1, static_cast<std::int64_t>(w.seq));
        sqlite3_bind_int64(insert_, 2, queue);
        sqlite3_bind_int64(insert_, 3, unix_ms());
        sqlite3_bind_int64(insert_, 6, wall_ms_of(w.expires));
        if (w.payload.size() == 1) {
          sqlite3_bind_null(insert_, 4);
          sqlite3_bind_blob64(insert_, 5, w.payload[0].data(), w.payload[0].size(), SQLITE_STATIC);
        } else {
          joined_.clear();
          sizes_.clear();
          for (const auto& f : w.payload) {
            const auto n = static_cast<std::uint32_t>(f.size());
            sizes_.append(reinterpret_cast<const char*>(&n), 4);
            joined_.append(static_cast<const char*>(f.data()), f.size());
          }
          sqlite3_bind_blob64(insert_, 4, sizes_.data(), sizes_.size(), SQLITE_STATIC);
          sqlite3_bind_blob64(insert_, 5, joined_.data(), joined_.size(), SQLITE_STATIC);
        }
        step_(insert_);
        break;
      }
      case StoreWrite::Op::lease:
        sqlite3_bind_int64(lease_, 1, static_cast<std::int64_t>(w.seq));
        sqlite3_bind_int64(lease_, 2, w.deliveries);
        step_(lease_);
        break;
      case StoreWrite::Op::remove:
        sqlite3_bind_int64(remove_, 1, static_cast<std::int64_t>(w.seq));
        step_(remove_);
        break;
      case StoreWrite::Op::define:
        sqlite3_bind_text(define_, 1, w.queue.data(), static_cast<int>(w.queue.size()),
                          SQLITE_STATIC);
        sqlite3_bind_int(define_, 2, w.transient ? 1 : 0);
        step_(define_);
        break;
      case StoreWrite::Op::undefine:
        sqlite3_bind_text(undefine_, 1, w.queue.data(), static_cast<int>(w.queue.size()),
                          SQLITE_STATIC);
        step_(undefine_);
        ids_.erase(w.queue);
        break;
    }
  }

  // A write of a failed transaction, other than a put, to be applied with the next one.
  // Only the last write of each item and of each queue is kept (a lease sets the count,
  // a removal ends the item, a definition replaces the one before), so what is owed is
  // bounded by the items and queues there are.
  void owe(StoreWrite w) {
    if (w.op == StoreWrite::Op::define || w.op == StoreWrite::Op::undefine) {
      std::string name = w.queue;
      owed_queues_.insert_or_assign(std::move(name), std::move(w));
    } else {
      owed_items_.insert_or_assign(w.seq, std::move(w));
    }
  }
  // Applies what is owed, definitions first; returns how many writes that was.
  std::size_t apply_owed() {
    for (const auto& [name, w] : owed_queues_)
      apply(w);
    for (const auto& [seq, w] : owed_items_)
      apply(w);
    return owed_queues_.size() + owed_items_.size();
  }
  void paid() {
    owed_queues_.clear();
    owed_items_.clear();
  }

  // After a failed transaction: ids learnt inside it may have been rolled back.
  void forget_ids() { ids_.clear(); }
  bool in_transaction() const { return sqlite3_get_autocommit(db_) == 0; }

  std::string fail_(std::string_view why) const {
    return "the store " + path_ + " failed: " + std::string(why);
  }

 private:
  sqlite3_stmt* prepare_(const char* sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(fail_(sqlite3_errmsg(db_)));
    return st;
  }

  void step_(sqlite3_stmt* st) {
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) throw std::runtime_error(fail_(sqlite3_errmsg(db_)));
  }

  std::int64_t queue_id_of_(const std::string& name) {
    if (auto it = ids_.find(name); it != ids_.end()) return it->second;
    for (int pass = 0; pass < 2; ++pass) {
      sqlite3_bind_text(queue_id_, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(queue_id_);
      const std::int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(queue_id_, 0) : 0;
      sqlite3_reset(queue_id_);
      sqlite3_clear_bindings(queue_id_);
      if (rc == SQLITE_ROW) return ids_[name] = id;
      if (rc != SQLITE_DONE) throw std::runtime_error(fail_(sqlite3_errmsg(db_)));
      // An item of a queue never defined: defined durable now.
      StoreWrite define;
      define.op = StoreWrite::Op::define;
      define.queue = name;
      apply(define);
    }
    throw std::runtime_error(fail_("queue '" + name + "' could not be defined"));
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* lease_ = nullptr;
  sqlite3_stmt* remove_ = nullptr;
  sqlite3_stmt* define_ = nullptr;
  sqlite3_stmt* undefine_ = nullptr;
  sqlite3_stmt* queue_id_ = nullptr;
  std::unordered_map<std::string, std::int64_t> ids_;
  std::string joined_, sizes_;  // a multi-frame payload, joined

  std::map<std::string, StoreWrite> owed_queues_;
  std::map<std::uint64_t, StoreWrite> owed_items_;

 public:
  Failpoint failpoint;
};

// ---------------------------------------------------------------------------------------
// Opening

namespace {

// The broker's hold on its store: an flock on the database file, so that a second
// sage-busd given the same file refuses to start, instead of writing beside the first
// (or finding it busy and taking it for corrupt). flock is apart from SQLite's own fcntl
// locks; the fd stays open as long as the store, because closing any fd of the file
// would drop SQLite's.
class FileLock {
 public:
  explicit FileLock(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ < 0)
      throw std::runtime_error("cannot open the store " + path + ": " + std::strerror(errno) +
                               "; check that sage-busd may write there");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      ::close(fd_);
      if (error == EWOULDBLOCK)
        throw std::runtime_error("the store " + path +
                                 " is in use by another sage-busd; give each broker a store of "
                                 "its own (--store)");
      throw std::runtime_error("cannot lock the store " + path + ": " + std::strerror(error));
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// Renames `path` (and its WAL) aside; returns the new name.
std::string move_aside(const std::string& path) {
  const std::string aside = path + ".corrupt-" + timestamp();
  std::error_code ec;
  std::filesystem::rename(path, aside, ec);
  if (ec)
    throw std::runtime_error("the store " + path + " failed its check and cannot be moved aside (" +
                             ec.message() + "); move it away by hand");
  std::filesystem::rename(path + "-wal", aside + "-wal", ec);
  std::filesystem::remove(path + "-shm", ec);
  return aside;
}

}  // namespace

std::unique_ptr<Store> Store::open(const std::string& path, Recovery& recovery) {
  const auto started = SteadyClock::now();
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent))
    throw std::runtime_error("the store's directory " + parent.string() +
                             " does not exist; create it (writable by sage-busd) or change "
                             "--store (store in the config file)");
  auto lock = std::make_unique<FileLock>(path);
  auto db = std::make_unique<Db>(path);
  if (std::string problems = db->check(); !problems.empty()) {
    db.reset();
    recovery.check_error = problems;
    recovery.moved_aside = move_aside(path);
    lock = std::make_unique<FileLock>(path);
    db = std::make_unique<Db>(path);
  }
  db->prepare_schema();
  db->read_back(recovery);
  db->failpoint = Failpoint::from_env();
  recovery.took =
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started);
  return std::unique_ptr<Store>(new Store(path, std::move(db), lock->release()));
}

Store::Store(std::string path, std::unique_ptr<Db> db, int lock_fd)
    : path_(std::move(path)), db_(std::move(db)), lock_fd_(lock_fd) {
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  stats_.bytes = disk_bytes(path_);
  writer_ = std::thread([this] { run_(); });
}

Store::~Store() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  writer_.join();
  db_.reset();
  ::close(lock_fd_);  // after SQLite closed the file (see FileLock)
  ::close(event_fd_);
}

// ---------------------------------------------------------------------------------------
// The loop's side

void Store::submit(std::uint64_t ticket, std::vector<StoreWrite> writes) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back({ticket, false, std::move(writes)});
  }
  wake_.notify_one();
}

void Store::compact(std::uint64_t ticket) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back({ticket, true, {}});
  }
  wake_.notify_one();
}

void Store::collect(std::vector<StoreDone>& out) {
  std::uint64_t n;
  while (::read(event_fd_, &n, sizeof n) == sizeof n) {
  }
  std::lock_guard lock(mutex_);
  if (out.empty()) {
    out.swap(done_);
  } else {
    for (auto& d : done_)
      out.push_back(std::move(d));
    done_.clear();
  }
}

StoreStats Store::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

// ---------------------------------------------------------------------------------------
// The writer thread

void Store::run_() {
  std::deque<Job> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and everything is written
      // Everything waiting, up to the batch's bounds; a compaction goes alone.
      std::size_t writes = 0, bytes = 0;
      while (!jobs_.empty()) {
        Job& next = jobs_.front();
        if (!batch.empty() && (next.compact || batch.back().compact)) break;
        std::size_t job_bytes = 0;
        for (const auto& w : next.writes)
          for (const auto& f : w.payload)
            job_bytes += f.size();
        if (!batch.empty() &&
            (writes + next.writes.size() > kMaxBatchWrites || bytes + job_bytes > kMaxBatchBytes))
          break;
        writes += next.writes.size();
        bytes += job_bytes;
        batch.push_back(std::move(next));
        jobs_.pop_front();
      }
    }
    write_(batch);
    batch.clear();
  }
}

void Store::write_(std::deque<Job>& jobs) {
  Db& db = *db_;
  const bool compacting = jobs.front().compact;
  const auto started = SteadyClock::now();
  std::size_t written = 0;
  std::string error;
  try {
    if (compacting) {
      db.exec("VACUUM");
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } else {
      db.exec("BEGIN IMMEDIATE");
      written += db.apply_owed();
      std::size_t total = 0, applied = 0;
      for (const auto& job : jobs)
        total += job.writes.size();
      for (const auto& job : jobs) {
        for (const auto& w : job.writes) {
          db.apply(w);
          if (++applied == (total + 1) / 2) db.failpoint.reach(Point::mid_batch);
        }
      }
      written += applied;
      db.failpoint.reach(Point::before_commit);
      db.exec("COMMIT");
      db.paid();
      db.failpoint.reach(Point::after_commit);
    }
  } catch (const std::exception& e) {
    error = e.what();
    if (db.in_transaction()) {
      try {
        db.exec("ROLLBACK");
      } catch (const std::exception&) {
        // Already rolled back by SQLite (a full disk or an I/O error does that).
      }
    }
    db.forget_ids();
    for (auto& job : jobs)
      for (auto& w : job.writes)
        if (w.op != StoreWrite::Op::put) db.owe(std::move(w));
  }
  const auto took =
      std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - started);
  const std::uint64_t bytes = disk_bytes(path_);
  {
    std::lock_guard lock(mutex_);
    StoreStats& s = stats_;
    s.bytes = bytes;
    // A compaction is no commit of writes: it stays out of their figures, and its failure
    // (say, no room for VACUUM's copy) does not make the store unavailable.
    if (!compacting) {
      s.available = error.empty();
      s.error = error;
      if (error.empty()) {
        ++s.commits;
        s.writes += written;
        const auto us = static_cast<std::uint64_t>(took.count());
        s.commit_us_sum += us;
        s.last_commit_us = us;
        for (std::size_t i = 0; i < std::size(StoreStats::kCommitBucketsUs); ++i)
          if (us <= StoreStats::kCommitBucketsUs[i]) ++s.commit_buckets[i];
      } else {
        ++s.failed_commits;
      }
    }
    for (const auto& job : jobs)
      done_.push_back({job.ticket, error.empty(), error});
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(event_fd_, &one, sizeof one);
}

}  // namespace sagebus::broker
