// Handles: each resolves to its object until the object is removed, and never again after,
// even when its slot is reused.
#include <vector>

#include <catch2/catch.hpp>

#include "loop/handle_table.hpp"

using namespace sagebus::broker;

static_assert(sizeof(Handle) == 8);

TEST_CASE("a handle resolves to its object until it is removed", "[handles]") {
  HandleTable<int> table;
  int a = 1, b = 2;
  const Handle ha = table.add(&a);
  const Handle hb = table.add(&b);
  CHECK(ha != hb);
  CHECK(table.get(ha) == &a);
  CHECK(table.get(hb) == &b);
  CHECK(table.size() == 2);
  CHECK(table.remove(ha));
  CHECK(table.get(ha) == nullptr);
  CHECK(table.get(hb) == &b);
  CHECK(table.size() == 1);
}

TEST_CASE("a stale handle never resolves to the object that reuses its slot", "[handles]") {
  HandleTable<int> table;
  int gone = 1, next = 2;
  const Handle old = table.add(&gone);
  table.remove(old);
  const Handle fresh = table.add(&next);
  CHECK(fresh.slot == old.slot);  // the slot is reused...
  CHECK(fresh != old);            // ...under a new generation
  CHECK(table.get(fresh) == &next);
  CHECK(table.get(old) == nullptr);
  CHECK_FALSE(table.remove(old));  // and removing by the stale handle changes nothing
  CHECK(table.get(fresh) == &next);
  CHECK(table.slots() == 1);
}

TEST_CASE("the null handle and handles the table never gave resolve to nothing", "[handles]") {
  HandleTable<int> table;
  int a = 1;
  const Handle h = table.add(&a);
  CHECK_FALSE(Handle{});
  CHECK(h);
  CHECK(table.get(Handle{}) == nullptr);
  CHECK(table.get(Handle{h.slot, h.generation + 1}) == nullptr);
  CHECK(table.get(Handle{h.slot + 1, h.generation}) == nullptr);
  CHECK_FALSE(table.remove(Handle{}));
  CHECK(table.size() == 1);
}

TEST_CASE("removing twice removes once", "[handles]") {
  HandleTable<int> table;
  int a = 1;
  const Handle h = table.add(&a);
  CHECK(table.remove(h));
  CHECK_FALSE(table.remove(h));
  CHECK(table.size() == 0);
}

TEST_CASE("a slot whose generation is spent is retired, never reused", "[handles]") {
  HandleTable<int, 3> table;  // generations 1, 2, 3, then the slot retires
  int a = 1;
  std::vector<Handle> given;
  for (int i = 0; i < 3; ++i) {
    given.push_back(table.add(&a));
    table.remove(given.back());
  }
  CHECK(given[0].slot == given[2].slot);
  const Handle after = table.add(&a);
  CHECK(after.slot != given[0].slot);
  CHECK(after.generation == 1);
  for (const Handle h : given)
    CHECK(table.get(h) == nullptr);
  CHECK(table.get(after) == &a);
  CHECK(table.slots() == 2);
}
