// detail::ChunkQueue (sdk/src/stream_core.hpp): a stream's chunks in order, in one run of
// bytes. Chunks come out as they went in, empty ones too; take() moves another queue's
// chunks to the end, whether this one is empty, partly read or full; and the storage stays
// bounded by the chunks unread.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "stream_core.hpp"

using sagebus::detail::ChunkQueue;

namespace {

std::vector<std::string> drain(ChunkQueue& q) {
  std::vector<std::string> out;
  while (!q.empty()) {
    out.emplace_back(q.front());
    q.pop();
  }
  return out;
}

}  // namespace

TEST_CASE("a chunk queue gives its chunks back in order, empty ones too", "[stream]") {
  ChunkQueue q;
  CHECK(q.empty());
  q.push("one");
  q.push("");
  q.push("three");
  CHECK(drain(q) == std::vector<std::string>{"one", "", "three"});
  CHECK(q.empty());
  q.push("again");  // after it emptied
  CHECK(drain(q) == std::vector<std::string>{"again"});
}

TEST_CASE("take moves another queue's chunks behind those unread", "[stream]") {
  ChunkQueue reader;
  ChunkQueue incoming;
  incoming.push("a");
  incoming.push("bb");
  reader.take(incoming);  // into an empty queue
  CHECK(incoming.empty());
  CHECK(reader.front() == "a");
  reader.pop();  // partly read
  incoming.push("ccc");
  incoming.push("dddd");
  reader.take(incoming);
  CHECK(incoming.empty());
  CHECK(drain(reader) == std::vector<std::string>{"bb", "ccc", "dddd"});

  incoming.push("e");
  incoming.pop();  // a queue partly read is taken from its first unread chunk
  incoming.push("f");
  reader.push("x");
  reader.take(incoming);
  CHECK(drain(reader) == std::vector<std::string>{"x", "f"});

  ChunkQueue none;
  reader.push("y");
  reader.take(none);  // nothing to take
  CHECK(drain(reader) == std::vector<std::string>{"y"});
}

TEST_CASE("a reader that always lags keeps the queue within the chunks unread", "[stream]") {
  ChunkQueue reader;
  ChunkQueue incoming;
  const std::string chunk(1000, 'c');
  reader.push(chunk);
  for (int round = 0; round < 1000; ++round) {
    for (int i = 0; i < 4; ++i)
      incoming.push(chunk);
    reader.take(incoming);
    for (int i = 0; i < 4; ++i) {  // one chunk is always left unread
      REQUIRE(reader.front() == chunk);
      reader.pop();
    }
    REQUIRE_FALSE(reader.empty());
    // Each take drops what was read: 1,000 rounds of 4 KB do not pile up.
    REQUIRE(reader.bytes() <= 5 * chunk.size());
  }
  reader.pop();
  CHECK(reader.empty());
  CHECK(reader.bytes() == 0);
}
