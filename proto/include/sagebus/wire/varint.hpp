// Varints as protobuf reads and writes them (its encoding guide): 7 bits a byte, low
// first, the high bit set on every byte but the last. Read by the header parser
// (frame.hpp) and by batch records (batch.hpp) alike; inline, as both read several per
// message.
//
// Stateless; thread safe.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace sagebus::wire::detail {

// read_varint a byte at a time: near the end of the bytes, on big-endian machines, and
// for the ninth and tenth bytes, where `v` holds the bits read before and `shift` says how
// many there are.
inline bool read_varint_bytewise(const std::uint8_t*& p, const std::uint8_t* end,
                                 std::uint64_t& value, std::uint64_t v = 0, unsigned shift = 0) {
  for (; shift < 70 && p != end; shift += 7) {
    const std::uint8_t byte = *p++;
    v |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if (byte < 0x80) {
      value = v;
      return true;
    }
  }
  return false;
}

// Reads the varint at `p` into `value` and moves `p` past it: at most 10 bytes, bits past
// the 64th dropped, which is what protobuf 3.21's VarintParse accepts and how it reads
// it. False, with `p` somewhere before `end`, when the varint runs past `end` or over 10
// bytes.
//
// Faster than a byte at a time for the long varints every header has (the SDK's ids use
// all 64 bits, the broker's 61): the first eight bytes are read as one word, their 7-bit
// groups put together in three steps.
inline bool read_varint(const std::uint8_t*& p, const std::uint8_t* end, std::uint64_t& value) {
  if (p != end && *p < 0x80) {
    value = *p++;
    return true;
  }
  if constexpr (std::endian::native != std::endian::little)
    return read_varint_bytewise(p, end, value);
  if (end - p < 8) return read_varint_bytewise(p, end, value);
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  // The high bit of each byte that ends the varint; the lowest is the varint's last byte.
  const std::uint64_t last = ~word & 0x8080808080808080ULL;
  const int bits = last == 0 ? 64 : std::countr_zero(last) + 1;  // 8 per byte of the varint
  if (bits < 64) word &= (std::uint64_t{1} << bits) - 1;
  word &= 0x7f7f7f7f7f7f7f7fULL;
  word = (word & 0x007f007f007f007fULL) | (word & 0x7f007f007f007f00ULL) >> 1;
  word = (word & 0x00003fff00003fffULL) | (word & 0x3fff00003fff0000ULL) >> 2;
  word = (word & 0x000000000fffffffULL) | (word & 0x0fffffff00000000ULL) >> 4;
  p += bits / 8;
  // Nine or ten bytes; bits of the tenth past the 64th are dropped.
  if (last == 0) return read_varint_bytewise(p, end, value, word, 56);
  value = word;
  return true;
}

// Writes `value` as a varint at `out`, which has room for 10 bytes; returns the end of it.
inline std::uint8_t* put_varint(std::uint8_t* out, std::uint64_t value) {
  for (; value >= 0x80; value >>= 7)
    *out++ = static_cast<std::uint8_t>(value | 0x80);
  *out++ = static_cast<std::uint8_t>(value);
  return out;
}

}  // namespace sagebus::wire::detail
