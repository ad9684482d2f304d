// Scatter-gather: Client::call_all and call_all_async. The broker sends the caller a CHUNK
// saying how many instances it asked (`count`), one CHUNK per instance's outcome (`peer`
// names it), then the final REPLY (docs/protocol.md, "Scatter-gather").
#include <atomic>
#include <mutex>

#include "client_request.hpp"
#include "interception.hpp"
#include "sagebus/client.hpp"
#include "session/protocol.hpp"

namespace sagebus {

namespace {

// The caller's side of one call_all: gathers the outcomes (call_all), or posts each to
// the callback thread (call_all_async).
class GatherCore final : public detail::CallControl {
 public:
  using OnAsked = std::function<void(std::size_t)>;
  using OnReply = std::function<void(InstanceReply)>;

  GatherCore() = default;
  GatherCore(detail::Connection& connection, OnAsked on_asked, OnReply on_reply)
      : connection_(&connection), on_asked_(std::move(on_asked)), on_reply_(std::move(on_reply)) {}

  void on_chunk(const wire::Header& header, std::string_view payload) override {
    if (header.peer().empty()) {  // how many were asked
      counted_ = true;
      if (connection_ == nullptr) {
        std::lock_guard lock(mutex_);
        gathered_.asked = header.count();
      } else {
        connection_->callback_thread().post(
            [fn = on_asked_, asked = header.count()](Reply) { fn(asked); }, {});
      }
      return;
    }
    outcomes_.fetch_add(1, std::memory_order_relaxed);
    bytes_.fetch_add(payload.size(), std::memory_order_relaxed);
    InstanceReply reply{header.peer(), detail::protocol::from_wire(header.status()),
                        header.message(), std::string(payload)};
    if (connection_ == nullptr) {
      std::lock_guard lock(mutex_);
      gathered_.replies.push_back(std::move(reply));
    } else {
      connection_->callback_thread().post(
          [fn = on_reply_, reply = std::move(reply)](Reply) mutable { fn(std::move(reply)); }, {});
    }
  }

  // The final outcome, but for a broker that took the call for a plain one (it sends no
  // count first: it predates scatter-gather), whose one reply is no gather's.
  detail::Outcome checked(detail::Outcome outcome) const {
    if (outcome.status == Status::ok && !counted_)
      return detail::failure(Status::internal,
                             "sage-busd answered call_all as a plain call: it predates "
                             "scatter-gather (REQUEST.all); upgrade it");
    return outcome;
  }

  // Ends `interception` with `outcome` and what came.
  void end(detail::Interception& interception, const detail::Outcome& outcome) const {
    interception.end(outcome.status, outcome.message, bytes_.load(), outcomes_.load());
  }

  GatherReply take() {
    std::lock_guard lock(mutex_);
    return std::move(gathered_);
  }

 private:
  detail::Connection* connection_ = nullptr;
  std::atomic<bool> counted_{false};  // the count came (on the driver's thread)
  // The instances' outcomes so far, and their payloads' bytes (for interceptors).
  std::atomic<std::size_t> outcomes_{0};
  std::atomic<std::size_t> bytes_{0};
  const OnAsked on_asked_;
  const OnReply on_reply_;
  std::mutex mutex_;
  GatherReply gathered_;
};

detail::RequestSpec gather_spec(std::string_view service, std::string_view method,
                                std::string_view payload, const CallOptions& options) {
  detail::RequestSpec spec = detail::call_spec(service, method, payload, options);
  spec.all = true;
  return spec;
}

}  // namespace

GatherReply Client::call_all(std::string_view service, std::string_view method,
                             std::string_view payload, const CallOptions& options) {
  detail::RequestSpec spec = gather_spec(service, method, payload, options);
  const auto interception = detail::Interception::begin(connection_->options().interceptors, spec);
  auto core = std::make_shared<GatherCore>();
  spec.control = core;
  detail::Outcome outcome = core->checked(detail::ask(*this, std::move(spec)));
  GatherReply gathered = core->take();
  if (interception) core->end(*interception, outcome);
  if (outcome.status != Status::ok) throw Error(outcome.status, outcome.message);
  return gathered;
}

void Client::call_all_async(std::string_view service, std::string_view method,
                            std::string_view payload, const CallOptions& options,
                            std::function<void(std::size_t)> on_asked,
                            std::function<void(InstanceReply)> on_reply,
                            std::function<void(Reply)> done) {
  if (!on_asked || !on_reply || !done)
    throw Error(Status::invalid_argument, "call_all_async needs on_asked, on_reply and done");
  detail::RequestSpec spec;
  std::shared_ptr<detail::Interception> interception;
  try {
    spec = gather_spec(service, method, payload, options);
    interception = detail::Interception::begin(connection_->options().interceptors, spec);
  } catch (const Error& e) {
    return connection_->callback_thread().post(std::move(done), Reply{e.status(), e.message(), {}});
  }
  auto core = std::make_shared<GatherCore>(*connection_, std::move(on_asked), std::move(on_reply));
  spec.control = core;
  // The final outcome goes to the callback thread after the outcomes posted before it.
  connection_->start(std::move(spec),
                     detail::Done([connection = connection_.get(), interception, core,
                                   done = std::move(done)](detail::Outcome o) {
                       o = core->checked(std::move(o));
                       if (interception) core->end(*interception, o);
                       connection->callback_thread().post(done, Reply{o.status, o.message, {}});
                     }));
}

}  // namespace sagebus
