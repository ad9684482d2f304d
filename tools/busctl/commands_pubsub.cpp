// busctl publish and busctl subscribe.
#include <condition_variable>
#include <mutex>

#include "commands.hpp"
#include "encoding.hpp"
#include "render.hpp"
#include "sagebus/client.hpp"
#include "sagebus/subscription.hpp"
#include "session.hpp"

namespace busctl {
namespace {

// How often a tail looks at `stop`: signals only set that flag.
constexpr std::chrono::milliseconds kStopPoll{50};

}  // namespace

void publish(const Options& options, const std::string& topic, const std::string& payload,
             std::ostream& out) {
  Session session(options);
  sagebus::PublishOptions publish_options;
  publish_options.confirm = true;
  publish_options.timeout = session.left();
  const std::size_t matched = session.client().publish(topic, payload, publish_options);
  if (options.json)
    out << "{\"topic\":" << json_quote(topic) << ",\"matched\":" << matched << "}\n";
  else
    out << "published to " << matched << (matched == 1 ? " subscription\n" : " subscriptions\n");
}

void subscribe(const Options& options, const std::string& pattern, std::uint64_t count,
               const std::atomic<bool>& stop, std::ostream& out, std::ostream& err) {
  Session session(options, &stop);
  std::mutex mutex;
  std::condition_variable done_cv;
  std::uint64_t printed = 0;
  bool done = false;
  // Runs on the subscription's own thread, one message at a time; the caller's thread
  // only waits, so `out` and `err` have one writer.
  auto handler = [&](const sagebus::Message& message) {
    {
      std::lock_guard lock(mutex);
      if (done) return;  // past `count`, while the subscription ends
    }
    if (message.missed_before > 0)
      err << "missed " << message.missed_before << " messages before this one" << std::endl;
    out << (options.json ? event_json(message) : event_line(message)) << std::flush;
    std::lock_guard lock(mutex);
    ++printed;
    if ((count > 0 && printed >= count) || !out) {
      done = true;
      done_cv.notify_one();
    }
  };
  sagebus::Subscription subscription = session.client().subscribe(pattern, handler);
  std::unique_lock lock(mutex);
  while (!done && !stop.load()) {
    done_cv.wait_for(lock, kStopPoll);
    lock.unlock();
    session.report_link(err);
    lock.lock();
  }
  done = true;
  lock.unlock();
  subscription.unsubscribe();  // waits for a handler call in progress
}

}  // namespace busctl
