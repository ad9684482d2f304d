#include "harness.hpp"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <thread>

#include "sagebus/wire/batch.hpp"
#include "sagebus/wire/frame.hpp"
#include "sagebus/wire/socket.hpp"
#include "sagebus/wire/topic.hpp"

namespace sagebus::fuzz {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::array<std::string_view, kPeers> kRoutingIds = {"fuzz-A", "fuzz-B", "fuzz-C",
                                                              "fuzz-X"};
constexpr std::array<char, kPeers> kLetters = {'A', 'B', 'C', 'X'};
// The ids of the harness's own HELLOs, which end each input, and of the HEARTBEAT that
// "$id" and "$tag" send to be sure that everything the broker sent the peer so far has
// arrived; plus the input's number, so that no script can answer for them.
constexpr std::uint64_t kSyncIds = 0x5a6eULL << 48;
constexpr std::uint64_t kBarrierIds = 0xba77ULL << 48;
constexpr auto kBarrierWait = 100ms;
constexpr unsigned kMaxSleepPerInputMs = 10;
constexpr auto kSettleTimeout = 5s;

[[noreturn]] void finding(const char* format, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void finding(const char* format, ...) {
  std::fputs("sagebus-fuzz: FINDING: ", stderr);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputs("\n", stderr);
  std::abort();
}

// SAGEBUS_FUZZ_TRACE=1: every message sent and received, on stderr, for reading what an
// input does (slow; not for fuzzing).
const bool kTrace = std::getenv("SAGEBUS_FUZZ_TRACE") != nullptr;

void trace(char direction, char peer, const wire::Header& header, std::size_t frames) {
  std::fprintf(stderr, "%c %c [%s]%s%zu payload frames\n", peer, direction,
               header.ShortDebugString().c_str(), header.ByteSizeLong() == 0 ? "" : " ", frames);
}

class QuietErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
};

// The matching rule of topic.hpp, written out the plain way.
std::vector<std::string_view> tokens(std::string_view text) {
  std::vector<std::string_view> out;
  for (;;) {
    const auto dot = text.find('.');
    out.push_back(text.substr(0, dot));
    if (dot == std::string_view::npos) return out;
    text.remove_prefix(dot + 1);
  }
}

bool reference_matches(std::string_view pattern, std::string_view topic) {
  const auto p = tokens(pattern);
  const auto t = tokens(topic);
  for (std::size_t i = 0;; ++i) {
    if (i == p.size()) return i == t.size();
    if (p[i] == ">") return i < t.size();
    if (i == t.size()) return false;
    if (p[i] != "*" && p[i] != t[i]) return false;
  }
}

// wire::decode's own parser (detail::parse_common) against protobuf's on the bytes of one
// header: where it takes them, protobuf must take them too and make the same Header of
// them. `scratch` lives across inputs, so that what a previous parse left in it (a map,
// a submessage, unknown fields) is part of the test.
void check_parser(const zmq::message_t& frame, wire::Header& scratch, const char* whose) {
  wire::Header reference;
  const bool accepted = reference.ParseFromArray(frame.data(), static_cast<int>(frame.size()));
  if (!wire::detail::parse_common(frame.data(), frame.size(), scratch)) return;
  if (!accepted)
    finding("%s header of %zu bytes: the hand-written parser takes it, protobuf refuses it", whose,
            frame.size());
  if (!google::protobuf::util::MessageDifferencer::Equals(scratch, reference) ||
      scratch.SerializeAsString() != reference.SerializeAsString())
    finding("%s header of %zu bytes: the hand-written parser reads [%s], protobuf [%s]", whose,
            frame.size(), scratch.ShortDebugString().c_str(), reference.ShortDebugString().c_str());
}

// What wire::decode made of `frame` against what protobuf makes of it: the same verdict
// and, where it parsed, the same Header.
void check_decode(const zmq::message_t& frame, wire::DecodeResult decoded,
                  const wire::Header& header) {
  if (decoded == wire::DecodeResult::too_large) return;
  wire::Header reference;
  if (!reference.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
    if (decoded != wire::DecodeResult::malformed)
      finding("decode takes a header of %zu bytes that protobuf refuses (result %d)", frame.size(),
              static_cast<int>(decoded));
    return;
  }
  if (decoded == wire::DecodeResult::malformed)
    finding("decode refuses a header of %zu bytes that protobuf takes: [%s]", frame.size(),
            reference.ShortDebugString().c_str());
  if (!google::protobuf::util::MessageDifferencer::Equals(header, reference))
    finding("decode reads a header of %zu bytes as [%s], protobuf as [%s]", frame.size(),
            header.ShortDebugString().c_str(), reference.ShortDebugString().c_str());
}

std::string replace_all(std::string text, std::string_view what,
                        const std::function<std::uint64_t()>& with) {
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at)) {
    const std::string number = std::to_string(with());
    text.replace(at, what.size(), number);
    at += number.size();
  }
  return text;
}

}  // namespace

Harness::Harness() {
  spdlog::set_level(spdlog::level::off);
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 and the like, by design

  broker::BrokerConfig config;
  // A Linux abstract socket: nothing on disk to clean up after a crash.
  config.endpoints = {"ipc://@sagebus-fuzz-" + std::to_string(::getpid()) + "-" +
                      std::to_string(Clock::now().time_since_epoch().count())};
  config.http = "off";
  config.log_level = "off";
  // Small, so that every limit is within a short script's reach and what outlives an
  // input stays small.
  config.max_clients = 3;
  config.max_waiting_per_service = 4;
  config.max_calls = 16;
  config.max_subscriptions_per_client = 4;
  config.max_held_per_peer = 2;
  config.max_queue_depth = 4;
  config.max_queues = 8;
  config.queue_topics = {{"mapped", "events.mapped"}};
  broker_ = std::make_unique<broker::Broker>(config);

  for (std::size_t p = 0; p < peers_.size(); ++p) {
    auto& socket = peers_[p].socket;
    socket = zmq::socket_t(context_, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::routing_id, zmq::buffer(kRoutingIds[p]));
    socket.connect(broker_->endpoints().front());
  }
  settle_(true);
}

Harness::~Harness() = default;

void Harness::run(std::string_view input) {
  ++inputs_;
  slept_ms_ = 0;
  may_wait_ = true;
  bool connected_spoke = false;
  table_.reset();
  table_ids_ = 0;
  for (const Step& step : parse_script(input)) {
    switch (step.kind) {
      case Step::Kind::message:
        message_(step);
        connected_spoke = connected_spoke || step.peer != kUnconnected;
        break;
      case Step::Kind::sleep:
        sleep_(step.sleep_ms);
        break;
      case Step::Kind::topic_check:
        topic_check_(step.frames);
        break;
    }
  }
  // Only peers that spoke can hold state or be owed messages.
  if (connected_spoke) settle_();
  for (auto& peer : peers_) {
    peer.ids.clear();
    peer.tags.clear();
    peer.owed.clear();
  }
}

void Harness::message_(const Step& step) {
  std::vector<zmq::message_t> frames;
  const std::string_view rid = kRoutingIds[step.peer];
  frames.emplace_back(rid.data(), rid.size());
  for (std::size_t i = 0; i < step.frames.size(); ++i) {
    if (i == 0 && step.header == Step::Header::text) {
      const std::string header = text_header_(step.peer, step.frames[0]);
      frames.emplace_back(header.data(), header.size());
    } else {
      frames.emplace_back(step.frames[i].data(), step.frames[i].size());
    }
  }
  if (frames.size() > 1) {
    const auto decoded = wire::decode(frames[1], header_);
    check_decode(frames[1], decoded, header_);
    check_parser(frames[1], parsed_, "an input");
    if (decoded == wire::DecodeResult::ok) {
      // What decodes must decode again once re-encoded, unless it grew past the limit.
      wire::Header copy = header_;
      const zmq::message_t again = wire::encode(copy);
      wire::Header back;
      if (again.size() <= wire::kMaxHeaderBytes &&
          wire::decode(again, back) != wire::DecodeResult::ok)
        finding("a header that decodes does not decode once re-encoded");
    }
    if (kTrace) {
      if (decoded == wire::DecodeResult::ok || decoded == wire::DecodeResult::bad_version)
        trace('>', kLetters[step.peer], header_, frames.size() - 2);
      else
        std::fprintf(stderr, "%c > a header of %zu bytes that does not decode (result %d)\n",
                     kLetters[step.peer], frames[1].size(), static_cast<int>(decoded));
    }
    if ((decoded == wire::DecodeResult::ok || decoded == wire::DecodeResult::bad_version) &&
        step.peer != kUnconnected) {
      ++peers_[step.peer].owed[header_.id()];
      // Each message of a BATCH may be answered as if it had come alone.
      if (decoded == wire::DecodeResult::ok && header_.kind() == wire::BATCH &&
          frames.size() == 3) {
        wire::BatchReader reader(frames[2]);
        wire::Header record;
        for (wire::MessageRecord r; reader.next(r);) {
          const auto result = wire::decode(r.header.data(), r.header.size(), record);
          if (result == wire::DecodeResult::ok || result == wire::DecodeResult::bad_version)
            ++peers_[step.peer].owed[record.id()];
        }
      }
    }
  }
  handle_(frames);
  receive_all_();
}

std::string Harness::text_header_(std::size_t peer, std::string text) {
  auto take = [&](std::deque<std::uint64_t> Peer::*queue) -> std::uint64_t {
    if (peer == kUnconnected) return 0;
    Peer& p = peers_[peer];
    if ((p.*queue).empty() && may_wait_) {
      // Whatever the broker sent the peer before this HEARTBEAT arrives before its answer
      // (a HEARTBEAT, or HELLO_REQUIRED when the peer is not a client).
      p.barrier = false;
      say_(peer, wire::HEARTBEAT, kBarrierIds + inputs_);
      receive_(peer, kBarrierWait, [](const Peer& q) { return q.barrier; });
      // Rate-limited HELLO_REQUIRED answers are dropped; then waiting is no use.
      may_wait_ = p.barrier;
    }
    if ((p.*queue).empty()) return 0;
    const std::uint64_t value = (p.*queue).front();
    (p.*queue).pop_front();
    return value;
  };
  text = replace_all(std::move(text), "$id", [&] {
    const std::uint64_t id = take(&Peer::ids);
    if (peer != kUnconnected) peers_[peer].last_id = id;
    return id;
  });
  text = replace_all(std::move(text), "$last", [&]() -> std::uint64_t {
    return peer == kUnconnected ? 0 : peers_[peer].last_id;
  });
  text = replace_all(std::move(text), "$tag", [&] { return take(&Peer::tags); });

  google::protobuf::TextFormat::Parser parser;
  QuietErrors errors;
  parser.RecordErrorsTo(&errors);
  parser.AllowFieldNumber(true);
  parser.AllowPartialMessage(true);
  // What parsed before an error stays: a mutation that breaks the tail keeps the head.
  (void)parser.ParseFromString(text, &header_);
  if (header_.version() == 0) header_.set_version(wire::kProtocolVersion);
  return header_.SerializeAsString();
}

void Harness::handle_(std::vector<zmq::message_t>& frames) {
  try {
    broker_->handle_for_test(frames);
  } catch (const std::exception& e) {
    finding("an exception escaped the broker: %s", e.what());
  } catch (...) {
    finding("an exception that is not a std::exception escaped the broker");
  }
}

void Harness::say_(std::size_t peer, wire::Kind kind, std::uint64_t id, const std::string& name) {
  header_.Clear();
  header_.set_kind(kind);
  header_.set_id(id);
  if (kind == wire::HELLO) {
    header_.mutable_hello()->set_name(name);
    header_.mutable_hello()->set_instance_id("fuzz");
  }
  std::vector<zmq::message_t> frames;
  frames.emplace_back(kRoutingIds[peer].data(), kRoutingIds[peer].size());
  frames.push_back(wire::encode(header_));
  ++peers_[peer].owed[id];
  handle_(frames);
}

void Harness::sleep_(unsigned ms) {
  ms = std::min(ms, kMaxSleepPerInputMs - slept_ms_);
  slept_ms_ += ms;
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  tick_();
  receive_all_();
}

void Harness::tick_() {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(kRoutingIds[kUnconnected].data(), kRoutingIds[kUnconnected].size());
  handle_(frames);
}

void Harness::topic_check_(const std::vector<std::string>& items) {
  if (!table_) table_ = std::make_unique<broker::SubscriptionTable>();
  broker::SubscriptionTable& table = *table_;
  auto client_of = [](std::uint64_t id) { return id % 2 == 0 ? "even" : "odd"; };
  const std::string& topic = items.front();
  const auto topic_error = wire::check_topic(topic);
  (void)wire::check_name("name", topic);
  if (!topic_error) {
    if (wire::check_pattern(topic))
      finding("topic '%s' is valid but not as a pattern", topic.c_str());
    if (!wire::topic_matches(topic, topic))
      finding("topic '%s' does not match itself", topic.c_str());
  }
  for (std::size_t i = 1; i < items.size(); ++i) {
    const std::string& item = items[i];
    const std::uint64_t id = table_ids_++;
    if (item == "!") {
      table.remove_client("even");
    } else if (item.size() > 1 && item.front() == '-') {
      const std::uint64_t which = std::strtoull(item.c_str() + 1, nullptr, 10);
      table.unsubscribe(client_of(which), which);
    } else if (!wire::check_pattern(item)) {
      if (!topic_error && wire::topic_matches(item, topic) != reference_matches(item, topic))
        finding("topic_matches('%s', '%s') is %d; the reference says otherwise", item.c_str(),
                topic.c_str(), wire::topic_matches(item, topic));
      table.subscribe(client_of(id), id, item, 0, 16);
    }
  }
  if (topic_error) return;
  std::set<std::pair<std::string, std::uint64_t>> expected;
  table.for_each([&](const broker::Subscription& sub) {
    if (reference_matches(sub.pattern, topic)) expected.emplace(sub.client, sub.id);
  });
  for (int round = 0; round < 2; ++round) {  // the second from what matching() remembers
    std::multiset<std::pair<std::string, std::uint64_t>> got;
    for (const broker::Subscription* sub : table.matching(topic))
      got.emplace(sub->client, sub->id);
    if (got.size() != expected.size() || !std::equal(got.begin(), got.end(), expected.begin()))
      finding("SubscriptionTable::matching('%s') found %zu subscriptions; %zu match", topic.c_str(),
              got.size(), expected.size());
  }
}

void Harness::receive_(std::size_t peer, std::chrono::milliseconds wait,
                       bool (*until)(const Peer&)) {
  Peer& p = peers_[peer];
  const auto deadline = Clock::now() + wait;
  std::vector<zmq::message_t> message;
  for (;;) {
    // libFuzzer's timers (SIGALRM) interrupt socket calls too.
    while (wire::receive_message(p.socket, message)) {
      check_(peer, message);
      message.clear();
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (until == nullptr || until(p) || left <= 0ms) return;
    zmq::pollitem_t item{p.socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, left);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;  // libFuzzer's timers (SIGALRM) interrupt it
    }
  }
}

void Harness::receive_all_() {
  for (std::size_t p = 0; p < peers_.size(); ++p)
    receive_(p);
}

void Harness::check_(std::size_t peer, const std::vector<zmq::message_t>& message) {
  const char letter = kLetters[peer];
  if (message.empty()) finding("peer %c received an empty message", letter);
  const auto decoded = wire::decode(message.front(), received_);
  if (decoded != wire::DecodeResult::ok)
    finding("the broker sent peer %c a header of %zu bytes that does not decode (result %d)",
            letter, message.front().size(), static_cast<int>(decoded));
  check_parser(message.front(), parsed_, "a broker's");
  if (kTrace) trace('<', letter, received_, message.size() - 1);
  Peer& p = peers_[peer];
  bool answer = false;
  switch (received_.kind()) {
    case wire::REQUEST:
    case wire::DELIVER:
      p.ids.push_back(received_.id());
      break;
    case wire::REPLY:
      return account_reply_(peer);
    case wire::BATCH:
      return check_message_batch_(peer, message);
    case wire::WELCOME:
      if (received_.id() == kSyncIds + inputs_) p.synced = true;
      answer = true;
      break;
    case wire::HELLO_REQUIRED:
    case wire::HEARTBEAT:
      if (received_.id() == kBarrierIds + inputs_) p.barrier = true;
      answer = true;
      break;
    case wire::EVENT:
    case wire::GOODBYE:
    // A stream's chunk for its caller, and a CANCEL or CREDIT for an instance: no answers.
    case wire::CHUNK:
    case wire::CANCEL:
    case wire::CREDIT:
      break;
    case wire::EVENT_BATCH:
      check_batch_(letter, message);
      break;
    default:
      finding("the broker sent peer %c a %s", letter,
              std::string(wire::kind_name(received_.kind())).c_str());
  }
  if (answer && --p.owed[received_.id()] < 0)
    finding(
        "peer %c got more answers with id %llu than it sent messages with that id (the "
        "last a %s)",
        letter, static_cast<unsigned long long>(received_.id()),
        std::string(wire::kind_name(received_.kind())).c_str());
}

void Harness::account_reply_(std::size_t peer) {
  Peer& p = peers_[peer];
  if (received_.tag() != 0) p.tags.push_back(received_.tag());
  if (--p.owed[received_.id()] < 0)
    finding(
        "peer %c got more answers with id %llu than it sent messages with that id (the "
        "last a REPLY)",
        kLetters[peer], static_cast<unsigned long long>(received_.id()));
}

void Harness::check_message_batch_(std::size_t peer, const std::vector<zmq::message_t>& message) {
  const char letter = kLetters[peer];
  if (message.size() != 2)
    finding("the broker sent peer %c a BATCH of %zu payload frames", letter, message.size() - 1);
  wire::BatchReader reader(message[1]);
  std::size_t messages = 0;
  for (wire::MessageRecord r; reader.next(r);) {
    ++messages;
    if (wire::decode(r.header.data(), r.header.size(), received_) != wire::DecodeResult::ok)
      finding("the broker sent peer %c a BATCH whose message %zu does not decode", letter,
              messages);
    switch (received_.kind()) {
      case wire::REPLY:
        account_reply_(peer);
        break;
      case wire::REQUEST:
        peers_[peer].ids.push_back(received_.id());
        break;
      case wire::CHUNK:
        break;
      default:
        finding("the broker sent peer %c a BATCH holding a %s", letter,
                std::string(wire::kind_name(received_.kind())).c_str());
    }
  }
  if (reader.malformed())
    finding("the broker sent peer %c a malformed BATCH (after %zu messages)", letter, messages);
  // One message goes as itself.
  if (messages < 2) finding("the broker sent peer %c a BATCH of %zu messages", letter, messages);
}

void Harness::check_batch_(char letter, const std::vector<zmq::message_t>& message) {
  if (message.size() != 2)
    finding("the broker sent peer %c an EVENT_BATCH of %zu payload frames", letter,
            message.size() - 1);
  wire::BatchReader reader(message[1]);
  std::size_t events = 0;
  for (wire::EventRecord event; reader.next(event);) {
    ++events;
    if (wire::check_topic(event.topic))
      finding("the broker sent peer %c an EVENT_BATCH whose event %zu has an invalid topic", letter,
              events);
  }
  if (reader.malformed())
    finding("the broker sent peer %c a malformed EVENT_BATCH (after %zu events)", letter, events);
  // One event goes as an EVENT.
  if (events < 2) finding("the broker sent peer %c an EVENT_BATCH of %zu events", letter, events);
}

void Harness::settle_(bool connecting) {
  for (std::size_t p = 0; p < peers_.size(); ++p) {
    say_(p, wire::GOODBYE, 0);
    peers_[p].synced = false;
    peers_[p].hello_sent = false;
  }
  const auto deadline = Clock::now() + kSettleTimeout;
  for (;;) {
    for (std::size_t p = 0; p < peers_.size(); ++p) {
      // Connecting, each HELLO until the broker knows the connection fails to send its
      // WELCOME, and the broker forgets the client again.
      if (!peers_[p].synced && (connecting || !peers_[p].hello_sent)) {
        say_(p, wire::HELLO, kSyncIds + inputs_, std::string("fuzz-sync-") + kLetters[p]);
        peers_[p].hello_sent = true;
      }
    }
    bool all = true;
    for (std::size_t p = 0; p < peers_.size(); ++p) {
      if (!peers_[p].synced)
        receive_(p, connecting ? 1ms : 100ms, [](const Peer& q) { return q.synced; });
      all = all && peers_[p].synced;
    }
    if (all) break;
    if (Clock::now() > deadline)
      finding("peers did not get the WELCOME to their HELLO within %lld s",
              static_cast<long long>(kSettleTimeout.count()));
  }
  for (std::size_t p = 0; p < peers_.size(); ++p)
    say_(p, wire::GOODBYE, 0);
  receive_all_();
}

}  // namespace sagebus::fuzz
