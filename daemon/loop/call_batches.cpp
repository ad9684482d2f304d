#include "loop/call_batches.hpp"

namespace sagebus::broker {

bool CallBatch::batchable(std::size_t header, std::span<const zmq::message_t> payload,
                          const wire::BatchLimits& limits) noexcept {
  return payload.size() <= 1 && bytes_of(payload) <= limits.payload &&
         wire::MessageBatch::record_bytes(header, bytes_of(payload)) <= limits.bytes;
}

}  // namespace sagebus::broker
