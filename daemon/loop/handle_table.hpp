// HandleTable: small integer handles for objects owned elsewhere, so that a hot path can
// keep and compare a handle (two 32-bit words) where it would otherwise hash and compare a
// string key on every use. The broker gives each connected client one (ClientHandle) at
// its first HELLO and finds it once per message, by routing id.
//
// A handle is a slot index and that slot's generation. Removing an object bumps its
// slot's generation before the slot is reused, so a handle kept after its object left
// never resolves again, not even to an object that later takes the same slot (a new
// client with the same routing id gets a new handle). A slot whose generation reached
// kMaxGeneration is retired instead of reused (tests lower it to get there). The default
// Handle is null and resolves to nothing.
//
// The table holds pointers, not objects: the owner keeps each object at a stable address
// from add() to remove(). Header only; not thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace sagebus::broker {

struct Handle {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;  // 0 only in the null handle

  explicit operator bool() const noexcept { return generation != 0; }
  friend bool operator==(Handle, Handle) = default;
};

template <class T, std::uint32_t kMaxGeneration = std::numeric_limits<std::uint32_t>::max()>
class HandleTable {
 public:
  // A fresh handle for `object`, which must stay at its address until remove().
  Handle add(T* object) {
    ++size_;
    if (!free_.empty()) {
      const std::uint32_t slot = free_.back();
      free_.pop_back();
      slots_[slot].object = object;
      return {slot, slots_[slot].generation};
    }
    slots_.push_back({object, 1});
    return {static_cast<std::uint32_t>(slots_.size() - 1), 1};
  }

  // The object of `handle`, or nullptr for a null, stale or foreign handle.
  T* get(Handle handle) const noexcept {
    if (handle.slot >= slots_.size()) return nullptr;
    const Slot& s = slots_[handle.slot];
    return s.generation == handle.generation ? s.object : nullptr;
  }

  // Forgets the object of `handle`; from now on the handle resolves to nothing. Returns
  // false (and changes nothing) when the handle did not resolve.
  bool remove(Handle handle) noexcept {
    if (get(handle) == nullptr) return false;
    Slot& s = slots_[handle.slot];
    s.object = nullptr;
    --size_;
    if (s.generation >= kMaxGeneration) {
      s.generation = 0;  // retired: no handle has generation 0 but the null one
      return true;
    }
    ++s.generation;
    free_.push_back(handle.slot);
    return true;
  }

  std::size_t size() const noexcept { return size_; }
  // Slots made so far, live, free and retired: every handle's slot is below this.
  std::size_t slots() const noexcept { return slots_.size(); }

 private:
  struct Slot {
    T* object = nullptr;  // nullptr while free or retired
    std::uint32_t generation = 1;
  };

  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;  // reused last freed first
  std::size_t size_ = 0;
};

}  // namespace sagebus::broker
