// EventHeader: the serialized sagebus.wire.Header of the EVENTs one publish fans out,
// built by hand rather than through protobuf, once per publish.
//
// Every EVENT of a publish has the same version, kind and topic; only its subscription
// id and gap differ. reset() writes those three fields once; frame() adds a subscriber's
// two after them and returns the whole header, ready to send. The bytes are written by
// HeaderWriter, so they are exactly what wire::encode would write
// (tests/unit/test_event_header.cpp decodes and compares them).
//
// A value type; not thread safe.
#pragma once

#include <cstdint>
#include <string_view>

#include <zmq.hpp>

#include "sagebus/wire.pb.h"
#include "sagebus/wire/header_writer.hpp"

namespace sagebus::broker {

class EventHeader {
 public:
  // Starts the header of the EVENTs for one publish on `topic`.
  void reset(std::string_view topic) {
    writer_.start(wire::EVENT).string(wire::Header::kTopicFieldNumber, topic);
    shared_ = writer_.mark();
  }

  // The header of the EVENT for subscription `subscription` that missed `dropped` events
  // just before it.
  zmq::message_t frame(std::uint64_t subscription, std::uint64_t dropped) {
    return writer_.rewind(shared_)
        .varint(wire::Header::kSubscriptionFieldNumber, subscription)
        .varint(wire::Header::kDroppedFieldNumber, dropped)
        .frame();
  }

 private:
  wire::HeaderWriter writer_;
  wire::HeaderWriter::Mark shared_ = writer_.mark();  // the end of the fields every EVENT shares
};

}  // namespace sagebus::broker
