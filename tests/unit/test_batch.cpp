// Batch records (sagebus/wire/batch.hpp): what BatchWriter writes, BatchReader reads back
// exactly; a frame cut anywhere, or bent, is read as malformed and never past its end.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "sagebus/wire/batch.hpp"

using namespace sagebus;

namespace {

constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();

// Every record of `bytes`, read as EventRecords or PublishRecords; `malformed` as the
// reader says.
template <class Record>
std::vector<Record> records_of(std::string_view bytes, bool& malformed) {
  wire::BatchReader reader(bytes.data(), bytes.size());
  std::vector<Record> out;
  for (Record r; reader.next(r);)
    out.push_back(r);
  malformed = reader.malformed();
  return out;
}

const auto events_of = records_of<wire::EventRecord>;
const auto publishes_of = records_of<wire::PublishRecord>;
const auto messages_of = records_of<wire::MessageRecord>;

}  // namespace

TEST_CASE("events written to a batch are read back as written, in order", "[batch]") {
  const std::string long_topic(300, 't');  // a length that takes a 2-byte varint
  const std::string large(wire::kMaxBatchedPayload, 'p');
  struct Event {
    std::uint64_t subscription, dropped;
    std::string topic, payload;
  };
  const std::vector<Event> written{{1, 0, "jobs.created", "a"},
                                   {kMax, kMax, "jobs.created", ""},
                                   {128, 300, long_topic, large},
                                   {7, 0, "jobs.created", std::string("\0\x80\xff", 3)},
                                   {7, 1, "jobs.created", "same topic as before"}};
  wire::BatchWriter writer;
  for (const auto& e : written)
    writer.add_event(e.subscription, e.dropped, e.topic, e.payload);
  CHECK(writer.records() == written.size());

  const zmq::message_t frame = writer.frame();
  bool malformed = true;
  const auto read = events_of(frame.to_string_view(), malformed);
  CHECK_FALSE(malformed);
  REQUIRE(read.size() == written.size());
  for (std::size_t i = 0; i < read.size(); ++i) {
    INFO("record " << i);
    CHECK(read[i].subscription == written[i].subscription);
    CHECK(read[i].dropped == written[i].dropped);
    CHECK(read[i].topic == written[i].topic);
    CHECK(read[i].payload == written[i].payload);
  }
}

TEST_CASE("publishes written to a batch are read back as written, in order", "[batch]") {
  wire::BatchWriter writer;
  writer.add_publish("a.b", "1");
  writer.add_publish("a.b", "2");
  writer.add_publish("a.c", "");
  writer.add_publish("a.b", "4");
  bool malformed = true;
  const auto read = publishes_of(writer.bytes(), malformed);
  CHECK_FALSE(malformed);
  REQUIRE(read.size() == 4);
  CHECK(read[0].topic == "a.b");
  CHECK(read[1].topic == "a.b");
  CHECK(read[2].topic == "a.c");
  CHECK(read[3].topic == "a.b");
  CHECK(read[0].payload == "1");
  CHECK(read[1].payload == "2");
  CHECK(read[2].payload.empty());
  CHECK(read[3].payload == "4");
}

TEST_CASE("whole messages written to a batch are read back as written, in order", "[batch]") {
  const std::string long_header(300, 'h');  // a length that takes a 2-byte varint
  const std::string large(wire::kMaxBatchedPayload, 'p');
  const std::vector<std::pair<std::string, std::string>> written{
      {"\x10\x09\x18\x01", "one"}, {long_header, large}, {"\x10\x09", ""}};
  wire::BatchWriter batch;
  for (const auto& [header, payload] : written)
    batch.add_message(header, payload);
  CHECK(batch.records() == 3);
  bool malformed = true;
  const auto read = messages_of(batch.bytes(), malformed);
  CHECK_FALSE(malformed);
  REQUIRE(read.size() == written.size());
  for (std::size_t i = 0; i < read.size(); ++i) {
    CHECK(read[i].header == written[i].first);
    CHECK(read[i].payload == written[i].second);
  }
  // Cut anywhere inside, the batch is malformed after the records it still holds whole.
  const std::string bytes(batch.bytes());
  for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
    const auto partial = messages_of(std::string_view(bytes).substr(0, cut), malformed);
    CHECK(partial.size() <= 2);
    const bool on_boundary = cut == 1 + 4 + 1 + 3 || cut == bytes.size() - 4;
    CHECK(malformed != on_boundary);
  }
}

TEST_CASE("a message batch of one holds the message's own frames, of more its records", "[batch]") {
  wire::MessageBatch batch;
  CHECK(batch.empty());
  zmq::message_t first("payload-1", 9);
  batch.add("header-1", &first);
  CHECK(first.size() == 0);  // moved, not copied
  REQUIRE(batch.size() == 1);
  CHECK(batch.lone_header().to_string() == "header-1");
  REQUIRE(batch.lone_payload().size() == 1);
  CHECK(batch.lone_payload()[0].to_string() == "payload-1");

  batch.add("header-2", nullptr);  // no payload frame: an empty payload in its record
  zmq::message_t third("payload-3", 9);
  batch.add("header-3", &third);
  CHECK(batch.size() == 3);
  bool malformed = true;
  const zmq::message_t records = batch.records();
  const auto read = messages_of(records.to_string_view(), malformed);
  CHECK_FALSE(malformed);
  REQUIRE(read.size() == 3);
  CHECK(read[0].header == "header-1");
  CHECK(read[0].payload == "payload-1");
  CHECK(read[1].header == "header-2");
  CHECK(read[1].payload.empty());
  CHECK(read[2].header == "header-3");
  CHECK(read[2].payload == "payload-3");

  batch.clear();
  CHECK(batch.empty());
  batch.add("header-4", nullptr);
  CHECK(batch.lone_payload().empty());
}

TEST_CASE("a message added as bytes is copied: alone it goes as its own frames", "[batch]") {
  wire::MessageBatch batch;
  std::string bytes = "payload-1";
  batch.add("header-1", std::string_view(bytes));
  bytes = "changed";  // the batch holds its own copy
  REQUIRE(batch.size() == 1);
  CHECK(batch.lone_header().to_string() == "header-1");
  REQUIRE(batch.lone_payload().size() == 1);
  CHECK(batch.lone_payload()[0].to_string() == "payload-1");

  batch.add("header-2", std::string_view("payload-2"));
  zmq::message_t third("payload-3", 9);
  batch.add("header-3", &third);
  bool malformed = true;
  const zmq::message_t records = batch.records();
  const auto read = messages_of(records.to_string_view(), malformed);
  CHECK_FALSE(malformed);
  REQUIRE(read.size() == 3);
  CHECK(read[0].payload == "payload-1");
  CHECK(read[1].header == "header-2");
  CHECK(read[1].payload == "payload-2");
  CHECK(read[2].payload == "payload-3");
}

TEST_CASE("a message batch fits within its byte limit and kMaxBatchRecords messages", "[batch]") {
  wire::MessageBatch batch;
  const std::size_t one = wire::MessageBatch::record_bytes(8, 100);
  CHECK(batch.fits(8, 100, one));
  CHECK_FALSE(batch.fits(8, 100, one - 1));
  zmq::message_t payload(100);
  batch.add("header-1", &payload);
  CHECK(batch.fits(8, 100, 2 * one));
  CHECK_FALSE(batch.fits(8, 100, 2 * one - 1));
  batch.clear();
  for (std::size_t i = 0; i < wire::kMaxBatchRecords; ++i)
    batch.add("h", nullptr);
  CHECK_FALSE(batch.fits(1, 0, std::numeric_limits<std::size_t>::max() / 2));
}

TEST_CASE("a topic repeated from the record before is written once", "[batch]") {
  wire::BatchWriter once, twice;
  once.add_publish("a.long.topic.name", "x");
  twice.add_publish("a.long.topic.name", "x");
  twice.add_publish("a.long.topic.name", "x");
  // The second record: an empty topic (1 byte) and the payload (2 bytes).
  CHECK(twice.bytes().size() == once.bytes().size() + 3);
}

TEST_CASE("clear empties a batch for the next one", "[batch]") {
  wire::BatchWriter writer;
  writer.add_publish("a.b", "old");
  writer.clear();
  CHECK(writer.empty());
  CHECK(writer.bytes().empty());
  // The first record after clear names its topic again, though it is the one before.
  writer.add_publish("a.b", "new");
  bool malformed = true;
  const auto read = publishes_of(writer.bytes(), malformed);
  CHECK_FALSE(malformed);
  REQUIRE(read.size() == 1);
  CHECK(read[0].topic == "a.b");
  CHECK(read[0].payload == "new");
}

TEST_CASE("fits keeps a batch within its byte limit and kMaxBatchRecords records", "[batch]") {
  const std::string payload(100, 'x');
  wire::BatchWriter publishes;
  while (publishes.fits("a.b", payload.size(), wire::kMaxBatchBytes))
    publishes.add_publish("a.b", payload);
  CHECK(publishes.bytes().size() <= wire::kMaxBatchBytes);
  CHECK(publishes.bytes().size() > wire::kMaxBatchBytes - 2 * (100 + 40 + 3));

  // Events with the longest varints there are, each topic written in full.
  wire::BatchWriter events;
  for (int i = 0; events.fits("a.b", payload.size(), wire::kMaxBatchBytes); ++i)
    events.add_event(kMax, kMax, i % 2 == 0 ? "a.b" : "a.c", payload);
  CHECK(events.bytes().size() <= wire::kMaxBatchBytes);

  wire::BatchWriter tiny;
  while (tiny.fits("a.b", 0, 1 << 20))
    tiny.add_publish("a.b", "");
  CHECK(tiny.records() == wire::kMaxBatchRecords);
}

TEST_CASE("an empty frame is a batch of no records, not a malformed one", "[batch]") {
  bool malformed = true;
  CHECK(events_of("", malformed).empty());
  CHECK_FALSE(malformed);
}

TEST_CASE("a batch cut short anywhere is malformed and read no further than its end", "[batch]") {
  wire::BatchWriter writer;
  writer.add_event(kMax, 300, "jobs.created", "first payload");
  writer.add_event(5, 0, "jobs.created", "second");
  const std::string whole(writer.bytes());
  const std::size_t first_record = [&] {
    wire::BatchWriter one;
    one.add_event(kMax, 300, "jobs.created", "first payload");
    return one.bytes().size();
  }();
  for (std::size_t cut = 1; cut < whole.size(); ++cut) {
    INFO("cut at " << cut << " of " << whole.size());
    // A copy of exactly `cut` bytes, so that ASan sees any read past it.
    const std::vector<char> bytes(whole.begin(), whole.begin() + static_cast<long>(cut));
    wire::BatchReader reader(bytes.data(), bytes.size());
    wire::EventRecord r;
    std::size_t records = 0;
    while (reader.next(r))
      ++records;
    CHECK(records == (cut >= first_record ? 1u : 0u));
    CHECK(reader.malformed() == (cut != first_record));
  }
}

TEST_CASE(
    "malformed batches are refused: a first record without a topic, an overlong varint, "
    "a length past the end",
    "[batch]") {
  bool malformed = false;
  SECTION("the first record repeats a topic there is none of") {
    const std::string bytes("\x00\x01x", 3);  // topic "", payload "x"
    CHECK(publishes_of(bytes, malformed).empty());
    CHECK(malformed);
  }
  SECTION("a varint of 11 bytes") {
    const std::string eleven_bytes = std::string(10, '\xff') + '\x01';
    const std::string bytes = eleven_bytes + std::string(1, '\0') + "\x01" + "a";
    CHECK(events_of(bytes, malformed).empty());
    CHECK(malformed);
  }
  SECTION("a payload length beyond the frame, also one that wraps a pointer") {
    for (const std::string& length :
         {std::string("\x05"), std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")}) {
      const std::string bytes = "\x03" + std::string("a.b") + length + "abc";
      CHECK(publishes_of(bytes, malformed).empty());
      CHECK(malformed);
    }
  }
  SECTION("records after a malformed one are not read") {
    wire::BatchWriter writer;
    writer.add_publish("a.b", "good");
    const std::string bytes = std::string(writer.bytes()) + "\x09" + "a.b";
    const auto read = publishes_of(bytes, malformed);
    CHECK(read.size() == 1);
    CHECK(malformed);
  }
}
