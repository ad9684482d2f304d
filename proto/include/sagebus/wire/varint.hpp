// Varints as protobuf reads them (its encoding guide): 7 bits a byte, low first, the high
// bit set on every byte but the last. Read by the header parser (frame.hpp) and by batch
// records (batch.hpp) alike.
//
// Stateless; thread safe.
#pragma once

#include <cstdint>

namespace sagebus::wire::detail {

// Reads the varint at `p` into `value` and moves `p` past it: at most 10 bytes, bits past
// the 64th dropped, which is what protobuf 3.21's VarintParse accepts and how it reads
// it. False, with `p` somewhere before `end`, when the varint runs past `end` or over 10
// bytes.
bool read_varint(const std::uint8_t*& p, const std::uint8_t* end, std::uint64_t& value);

}  // namespace sagebus::wire::detail
