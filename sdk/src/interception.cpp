#include "interception.hpp"

#include "sagebus/wire/traceparent.hpp"

namespace sagebus::detail {

Interception::Interception(const List& interceptors, const RequestSpec& spec)
    : interceptors_(interceptors),
      service_(spec.service),
      method_(spec.method),
      trace_id_(wire::trace_id_of(spec.traceparent)),
      info_{service_, method_, headers_, spec.payload.size(), spec.stream, spec.all, trace_id_},
      started_(Clock::now()) {}

std::shared_ptr<Interception> Interception::begin(const List& interceptors, RequestSpec& spec) {
  if (interceptors.empty()) return nullptr;
  std::shared_ptr<Interception> call(new Interception(interceptors, spec));
  // before() works on the spec's own headers, which go with the call.
  CallInfo info = call->info_;
  CallInfo live{info.service, info.method, spec.options.headers, info.payload_bytes,
                info.stream,  info.all,    info.trace_id};
  while (call->ran_ < interceptors.size()) {
    std::optional<Error> refusal = interceptors[call->ran_++]->before(live);
    if (refusal) {
      call->headers_ = spec.options.headers;
      call->end(refusal->status(), refusal->message(), 0);
      throw Error(refusal->status(), refusal->message());
    }
  }
  call->headers_ = spec.options.headers;
  return call;
}

void Interception::end(Status status, std::string_view message, std::size_t reply_bytes,
                       std::size_t chunks) {
  const CallEnd end{status, message, reply_bytes, chunks, Clock::now() - started_};
  while (ran_ > 0)
    interceptors_[--ran_]->after(info_, end);
}

}  // namespace sagebus::detail
