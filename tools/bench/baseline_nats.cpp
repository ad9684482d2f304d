// The NATS baseline: nats-server as a child on a free port, clients through libnats (the
// C client). Echo instances are queue subscribers of one subject (a queue group, so that
// several instances share the calls as sage-bus instances do), each on its own connection;
// callers use natsConnection_Request; pipelined calls are PublishRequest with one reply
// subscription; subscribers lift libnats' pending limits so the client drops nothing.
// Idle clients are raw TCP connections that say CONNECT and PING (10,000 libnats
// connections would be 20,000 threads). Without libnats at build time, start_nats says so.
// Secured ("nats+tls"): nats-server requires TLS with a self-signed certificate made at
// start-up by the openssl command into the run's directory; libnats clients verify it as
// their CA (natsOptions_SetSecure, LoadCATrustedCertificates); idle clients speak TLS
// through OpenSSL (the library libnats links) without verifying.
// Durable (Setup::durable): nats-server -js -sd <the run's directory>/js, and one stream
// with file storage and work-queue retention (an item is gone once acknowledged, as on a
// legacy queue) on one subject. Producers publish through JetStream, each publish waiting
// for its PubAck; the consumer is a durable pull consumer with explicit acks, fetching one
// message at a time and acknowledging it with natsMsg_AckSync (which waits for the
// server's confirmation).
// Streams (stream_*), as NATS users stream replies: the requester subscribes to an inbox
// of its own for each stream and publishes its request with that inbox as the reply
// subject; the responder, a queue subscriber, publishes the chunks to the inbox and then
// an empty message, the end, which the requester reads up to. NATS has no flow control
// between them: the server buffers for a slow subscriber up to its limits, then drops
// (or disconnects it as a slow consumer).
#include <stdexcept>

#include "child.hpp"
#include "system.hpp"

#ifdef SAGEBUS_BENCH_HAVE_NATS
#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#ifdef SAGEBUS_BENCH_HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif
#endif

namespace sagebus::bench {

#ifndef SAGEBUS_BENCH_HAVE_NATS

std::string nats_unavailable(const Paths& /*paths*/, bool /*secure*/) {
  return "this sage-bus-bench was built without libnats (install libnats-dev and "
         "reconfigure to measure NATS)";
}

std::unique_ptr<System> start_nats(const Paths& paths, bool secure, const Setup& /*setup*/) {
  throw std::runtime_error(nats_unavailable(paths, secure));
}

#else

using namespace std::chrono_literals;

namespace {

constexpr const char* kEchoSubject = "bench.echo";
constexpr const char* kTopic = "bench.pubsub";
constexpr const char* kStream = "BENCH";
constexpr const char* kDurableSubject = "bench.durable";
constexpr const char* kDurableConsumer = "bench";
constexpr const char* kStreamSubject = "bench.stream";

void check(natsStatus status, const char* what) {
  if (status != NATS_OK)
    throw std::runtime_error(std::string("libnats: ") + what + ": " + natsStatus_GetText(status));
}

// A JetStream failure: libnats' status, JetStream's own error code where it gave one, and
// the last error text libnats kept on this thread.
std::string js_error(natsStatus status, jsErrCode code) {
  std::string text = natsStatus_GetText(status);
  if (code != 0) text += " (JetStream error " + std::to_string(static_cast<int>(code)) + ")";
  if (const char* last = nats_GetLastError(nullptr); last && *last)
    text += ": " + std::string(last);
  return text;
}

void check_js(natsStatus status, jsErrCode code, const char* what) {
  if (status != NATS_OK)
    throw std::runtime_error(std::string("libnats: ") + what + ": " + js_error(status, code));
}

// Where clients connect: the URL and, with TLS, the certificate to trust.
struct Server {
  std::string url;
  std::string ca_file;  // empty: plain
};

// One libnats connection, closed and destroyed with the object.
class Connection {
 public:
  // send_asap: write each publish at once instead of leaving it to libnats' flusher thread,
  // which adds about a millisecond. libnats recommends it for connections that send
  // replies; Request() does it by itself.
  explicit Connection(const Server& server, bool send_asap = false) {
    natsOptions* options = nullptr;
    check(natsOptions_Create(&options), "options");
    natsStatus s = natsOptions_SetURL(options, server.url.c_str());
    if (s == NATS_OK) s = natsOptions_SetSendAsap(options, send_asap);
    if (s == NATS_OK && !server.ca_file.empty()) s = natsOptions_SetSecure(options, true);
    if (s == NATS_OK && !server.ca_file.empty())
      s = natsOptions_LoadCATrustedCertificates(options, server.ca_file.c_str());
    if (s == NATS_OK) s = natsConnection_Connect(&nc_, options);
    natsOptions_Destroy(options);
    check(s, "connect");
  }
  ~Connection() {
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  natsConnection* get() const { return nc_; }

 private:
  natsConnection* nc_ = nullptr;
};

class SubscriptionHandle {
 public:
  SubscriptionHandle() = default;
  ~SubscriptionHandle() {
    if (sub_) {
      natsSubscription_Unsubscribe(sub_);
      natsSubscription_Destroy(sub_);
    }
  }
  SubscriptionHandle(const SubscriptionHandle&) = delete;
  SubscriptionHandle& operator=(const SubscriptionHandle&) = delete;
  natsSubscription** out() { return &sub_; }
  natsSubscription* get() const { return sub_; }

 private:
  natsSubscription* sub_ = nullptr;
};

void on_echo(natsConnection* nc, natsSubscription* /*sub*/, natsMsg* msg, void* /*closure*/) {
  if (natsMsg_GetReply(msg))
    natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg),
                           natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

struct EchoInstance {
  explicit EchoInstance(const Server& server) : connection(server, true) {
    check(natsConnection_QueueSubscribe(subscription.out(), connection.get(), kEchoSubject, "echo",
                                        on_echo, nullptr),
          "queue subscribe");
    check(natsConnection_FlushTimeout(connection.get(), 10000), "flush");
  }
  Connection connection;
  SubscriptionHandle subscription;  // destroyed first
};

struct Echo : Handle {
  std::vector<std::unique_ptr<EchoInstance> > instances;
};

class NatsCaller : public Caller {
 public:
  explicit NatsCaller(const Server& server) : connection_(server) {}
  bool call(std::string_view request, std::string& reply, std::string& error) override {
    natsMsg* msg = nullptr;
    const natsStatus s =
        natsConnection_Request(&msg, connection_.get(), kEchoSubject, request.data(),
                               static_cast<int>(request.size()), 10000);
    if (s != NATS_OK) {
      error = natsStatus_GetText(s);
      return false;
    }
    reply.assign(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    natsMsg_Destroy(msg);
    return true;
  }

 private:
  Connection connection_;
};

// The stream responder: each request is answered on its reply subject with `chunks`
// messages of `chunk`, then an empty one. The publishes are buffered by libnats and
// pushed out by a flush after the last (one PING/PONG), not each by a write of its own.
struct StreamResponder {
  std::size_t chunks;
  std::string chunk;
};

void on_stream(natsConnection* nc, natsSubscription* /*sub*/, natsMsg* msg, void* closure) {
  const auto& responder = *static_cast<const StreamResponder*>(closure);
  if (const char* reply = natsMsg_GetReply(msg)) {
    for (std::size_t i = 0; i < responder.chunks; ++i)
      natsConnection_Publish(nc, reply, responder.chunk.data(),
                             static_cast<int>(responder.chunk.size()));
    natsConnection_Publish(nc, reply, nullptr, 0);
    natsConnection_FlushTimeout(nc, 10000);
  }
  natsMsg_Destroy(msg);
}

struct Streamer : Handle {
  Streamer(const Server& server, std::size_t chunks, std::size_t bytes)
      : responder{chunks, std::string(bytes, 'x')}, connection(server) {
    if (!responder.chunk.empty()) responder.chunk.front() = kDataMark;
    check(natsConnection_QueueSubscribe(subscription.out(), connection.get(), kStreamSubject,
                                        "stream", on_stream, &responder),
          "queue subscribe");
    check(natsConnection_FlushTimeout(connection.get(), 10000), "flush");
  }
  StreamResponder responder;
  Connection connection;
  SubscriptionHandle subscription;  // destroyed first
};

class NatsStreamCaller : public StreamCaller {
 public:
  // send_asap: the request goes out at once.
  explicit NatsStreamCaller(const Server& server) : connection_(server, true) {}
  bool stream(StreamRun& run, std::string& error) override {
    run = {};
    natsInbox* inbox = nullptr;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK) {
      error = natsStatus_GetText(s);
      return false;
    }
    {
      SubscriptionHandle replies;
      s = natsConnection_SubscribeSync(replies.out(), connection_.get(), inbox);
      if (s == NATS_OK) s = natsSubscription_SetPendingLimits(replies.get(), -1, -1);
      if (s == NATS_OK)
        s = natsConnection_PublishRequest(connection_.get(), kStreamSubject, inbox, nullptr, 0);
      while (s == NATS_OK) {
        natsMsg* msg = nullptr;
        s = natsSubscription_NextMsg(&msg, replies.get(), 10000);
        if (s != NATS_OK) break;
        const int length = natsMsg_GetDataLength(msg);
        natsMsg_Destroy(msg);
        if (length == 0) break;
        ++run.chunks;
        run.bytes += static_cast<std::uint64_t>(length);
      }
    }
    natsInbox_Destroy(inbox);
    if (s == NATS_OK) return true;
    error = std::string(natsStatus_GetText(s)) + " after " + std::to_string(run.chunks) + " chunks";
    return false;
  }

 private:
  Connection connection_;
};

void on_data(natsConnection* /*nc*/, natsSubscription* /*sub*/, natsMsg* msg, void* closure) {
  static_cast<Tally*>(closure)->count(
      {natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg))});
  natsMsg_Destroy(msg);
}

struct NatsSubscription : Handle {
  NatsSubscription(const Server& server, Tally& tally) : connection(server) {
    check(natsConnection_Subscribe(subscription.out(), connection.get(), kTopic, on_data, &tally),
          "subscribe");
    check(natsSubscription_SetPendingLimits(subscription.get(), -1, -1), "pending limits");
    check(natsConnection_FlushTimeout(connection.get(), 10000), "flush");
  }
  Connection connection;
  SubscriptionHandle subscription;
};

class NatsPublisher : public Publisher {
 public:
  explicit NatsPublisher(const Server& server) : connection_(server) {}
  void publish(std::string_view payload) override {
    check(natsConnection_Publish(connection_.get(), kTopic, payload.data(),
                                 static_cast<int>(payload.size())),
          "publish");
  }
  void flush() override { natsConnection_FlushTimeout(connection_.get(), 60000); }

 private:
  Connection connection_;
};

// A JetStream context on a connection of its own; its API requests and publishes wait up
// to 30 s for their answer (a PubAck waits for the stream's write).
class JetStream {
 public:
  explicit JetStream(const Server& server) : connection_(server) {
    jsOptions options;
    check(jsOptions_Init(&options), "JetStream options");
    options.Wait = 30000;
    check(natsConnection_JetStream(&js_, connection_.get(), &options), "JetStream context");
  }
  ~JetStream() { jsCtx_Destroy(js_); }
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;
  jsCtx* get() const { return js_; }

 private:
  Connection connection_;
  jsCtx* js_ = nullptr;
};

// The benchmark's stream: file storage, work-queue retention, on kDurableSubject.
void add_stream(const Server& server) {
  JetStream js(server);
  jsStreamConfig config;
  check(jsStreamConfig_Init(&config), "stream config");
  const char* subjects[] = {kDurableSubject};
  config.Name = kStream;
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Retention = js_WorkQueuePolicy;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_AddStream(&info, js.get(), &config, nullptr, &code);
  jsStreamInfo_Destroy(info);
  check_js(s, code, "add stream");
}

class JetStreamProducer : public DurableProducer {
 public:
  explicit JetStreamProducer(const Server& server) : js_(server) {}
  bool put(std::string_view item, std::string& error) override {
    jsPubAck* ack = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = js_Publish(&ack, js_.get(), kDurableSubject, item.data(),
                                    static_cast<int>(item.size()), nullptr, &code);
    jsPubAck_Destroy(ack);
    if (s == NATS_OK) return true;
    error = js_error(s, code);
    return false;
  }

 private:
  JetStream js_;
};

class JetStreamConsumer : public DurableConsumer {
 public:
  explicit JetStreamConsumer(const Server& server) : js_(server) {
    jsSubOptions options;
    check(jsSubOptions_Init(&options), "subscribe options");
    options.Stream = kStream;
    options.Config.AckPolicy = js_AckExplicit;
    jsErrCode code = static_cast<jsErrCode>(0);
    check_js(js_PullSubscribe(subscription_.out(), js_.get(), kDurableSubject, kDurableConsumer,
                              nullptr, &options, &code),
             code, "pull subscribe");
  }
  ~JetStreamConsumer() override { natsMsg_Destroy(held_); }

  std::optional<std::string> get(std::chrono::milliseconds timeout) override {
    natsMsg_Destroy(held_);  // taken and not acknowledged: the server redelivers it
    held_ = nullptr;
    natsMsgList list{};
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = natsSubscription_Fetch(&list, subscription_.get(), 1,
                                                std::max<std::int64_t>(1, timeout.count()), &code);
    if (s == NATS_TIMEOUT) return std::nullopt;
    check_js(s, code, "fetch");
    if (list.Count < 1) {
      natsMsgList_Destroy(&list);
      return std::nullopt;
    }
    held_ = list.Msgs[0];
    list.Msgs[0] = nullptr;  // kept past the list, for ack()
    natsMsgList_Destroy(&list);
    return std::string(natsMsg_GetData(held_),
                       static_cast<std::size_t>(natsMsg_GetDataLength(held_)));
  }

  void ack() override {
    if (!held_) return;
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = natsMsg_AckSync(held_, nullptr, &code);
    natsMsg_Destroy(held_);
    held_ = nullptr;
    check_js(s, code, "ack");
  }

 private:
  JetStream js_;
  SubscriptionHandle subscription_;  // destroyed before its connection
  natsMsg* held_ = nullptr;          // the message get() returned, until ack()
};

#ifdef SAGEBUS_BENCH_HAVE_OPENSSL
// OpenSSL for idle TLS connections: one context, one SSL object per connection.
class Tls {
 public:
  Tls() : ctx_(SSL_CTX_new(TLS_client_method())) {
    if (!ctx_) throw std::runtime_error("SSL_CTX_new failed");
    // Idle connections: no buffers kept between reads and writes.
    SSL_CTX_set_mode(ctx_, SSL_MODE_RELEASE_BUFFERS);
  }
  ~Tls() {
    for (SSL* ssl : ssls_) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    SSL_CTX_free(ctx_);
  }
  Tls(const Tls&) = delete;
  Tls& operator=(const Tls&) = delete;
  // The TLS handshake on `fd`, after nats-server's plain INFO line.
  SSL* connect(int fd) {
    SSL* ssl = SSL_new(ctx_);
    if (!ssl) throw std::runtime_error("SSL_new failed");
    ssls_.push_back(ssl);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
      char why[256];
      ERR_error_string_n(ERR_get_error(), why, sizeof why);
      throw std::runtime_error(std::string("TLS handshake with nats-server failed: ") + why);
    }
    return ssl;
  }

 private:
  SSL_CTX* ctx_;
  std::vector<SSL*> ssls_;
};
#endif

// Raw TCP connections, each answered PONG once; nats-server pings idle clients only every
// two minutes, longer than a scenario runs. With `tls`, each reads the server's INFO, then
// speaks TLS.
class IdleSockets : public Handle {
 public:
  IdleSockets(int port, std::size_t count, bool tls) {
#ifndef SAGEBUS_BENCH_HAVE_OPENSSL
    if (tls)
      throw std::runtime_error(
          "this sage-bus-bench was built without OpenSSL (libssl-dev): no idle TLS clients");
#else
    if (tls) tls_ = std::make_unique<Tls>();
#endif
    const std::uint64_t limit = raise_nofile(count + 1024);
    if (limit < count + 256)
      throw std::runtime_error("RLIMIT_NOFILE is " + std::to_string(limit) + ", too low");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    const std::string hello = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";
    for (std::size_t i = 0; i < count; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
      fds_.push_back(fd);
      timeval timeout{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      // The TLS handshake's last flight and CONNECT are separate small writes: without
      // this, Nagle holds the second until the server's delayed ACK (40 ms a connection).
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw std::runtime_error("connect to nats-server: " + std::string(std::strerror(errno)));
      std::string seen;
      char buffer[4096];
#ifdef SAGEBUS_BENCH_HAVE_OPENSSL
      if (tls_) {
        // INFO comes in plain text, then the client starts the handshake: read it a byte at
        // a time, so that nothing of the handshake is read here.
        while (seen.find("\r\n") == std::string::npos) {
          if (::read(fd, buffer, 1) != 1)
            throw std::runtime_error("nats-server sent no INFO to an idle client");
          seen.push_back(buffer[0]);
        }
        seen.clear();
        SSL* ssl = tls_->connect(fd);
        if (SSL_write(ssl, hello.data(), static_cast<int>(hello.size())) !=
            static_cast<int>(hello.size()))
          throw std::runtime_error("TLS write to nats-server failed");
        while (seen.find("PONG") == std::string::npos) {
          const int n = SSL_read(ssl, buffer, sizeof buffer);
          if (n <= 0) throw std::runtime_error("nats-server did not answer an idle client's PING");
          seen.append(buffer, static_cast<std::size_t>(n));
        }
        continue;
      }
#endif
      if (::write(fd, hello.data(), hello.size()) != static_cast<ssize_t>(hello.size()))
        throw std::runtime_error("write to nats-server failed");
      while (seen.find("PONG") == std::string::npos) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n <= 0) throw std::runtime_error("nats-server did not answer an idle client's PING");
        seen.append(buffer, static_cast<std::size_t>(n));
      }
    }
  }
  ~IdleSockets() override {
#ifdef SAGEBUS_BENCH_HAVE_OPENSSL
    tls_.reset();  // before the descriptors it writes its close_notify to
#endif
    for (int fd : fds_)
      ::close(fd);
  }

 private:
  std::vector<int> fds_;
#ifdef SAGEBUS_BENCH_HAVE_OPENSSL
  std::unique_ptr<Tls> tls_;
#endif
};

std::string find_nats_server(const Paths& paths) {
  if (!paths.nats_server.empty()) return paths.nats_server;
  for (const char* candidate : {"/usr/sbin/nats-server", "/usr/bin/nats-server",
                                "/usr/local/bin/nats-server", "/usr/local/sbin/nats-server"})
    if (::access(candidate, X_OK) == 0) return candidate;
  return {};
}

std::string find_openssl() {
  for (const char* candidate : {"/usr/bin/openssl", "/usr/local/bin/openssl"})
    if (::access(candidate, X_OK) == 0) return candidate;
  return {};
}

// A self-signed certificate for 127.0.0.1 (its own CA) and its key, in `dir`: cert.pem and
// key.pem. ECDSA P-256, as a server would choose today.
void make_certificate(const std::string& dir) {
  Child openssl(
      {find_openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
       "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem"},
      dir + "/openssl.log");
  const int status = openssl.wait_exit(30s);
  if (status != 0)
    throw std::runtime_error("openssl could not make a certificate; its output:\n" + openssl.log());
}

class NatsSystem : public System {
 public:
  NatsSystem(const Paths& paths, bool secure, const Setup& setup)
      : port_(free_port()), durable_(setup.durable) {
    server_url_.url = "nats://127.0.0.1:" + std::to_string(port_);
    // 1 MiB payloads: NATS's default max_payload is exactly 1 MiB, leave room.
    const std::string config = dir_.path() + "/nats.conf";
    std::ofstream conf(config);
    conf << "max_payload: 8388608\n";
    if (secure) {
      make_certificate(dir_.path());
      server_url_.ca_file = dir_.path() + "/cert.pem";
      conf << "tls {\n  cert_file: \"" << dir_.path() << "/cert.pem\"\n  key_file: \""
           << dir_.path() << "/key.pem\"\n  timeout: 10\n}\n";
    }
    conf.close();
    std::vector<std::string> argv{find_nats_server(paths), "-a", "127.0.0.1", "-p",
                                  std::to_string(port_),   "-c", config};
    if (durable_) argv.insert(argv.end(), {"-js", "-sd", dir_.path() + "/js"});
    server_ = std::make_unique<Child>(std::move(argv), dir_.path() + "/nats-server.log");
    if (!server_->wait_for_log("Server is ready", 30s))
      throw std::runtime_error("nats-server did not start; its log:\n" + server_->log());
    if (durable_) add_stream(server_url_);
  }

  std::string_view name() const override {
    return server_url_.ca_file.empty() ? "nats" : "nats+tls";
  }
  pid_t server_pid() const override { return server_->pid(); }

  std::unique_ptr<Handle> echo(std::size_t instances) override {
    auto echo = std::make_unique<Echo>();
    for (std::size_t i = 0; i < instances; ++i)
      echo->instances.push_back(std::make_unique<EchoInstance>(server_url_));
    return echo;
  }

  std::unique_ptr<Caller> caller() override { return std::make_unique<NatsCaller>(server_url_); }

  PipelineRun pipelined(std::size_t calls, std::size_t depth, std::string_view payload) override {
    struct State {
      Connection* connection;
      std::string inbox;
      std::string request;
      std::size_t calls, issued = 0, done = 0;
      PipelineRun run;
      std::mutex mutex;
      std::condition_variable all_done;
      void send_one() {
        const std::int64_t t0 = now_ns();
        std::memcpy(request.data() + 1, &t0, sizeof t0);
        natsConnection_PublishRequest(connection->get(), kEchoSubject, inbox.c_str(),
                                      request.data(), static_cast<int>(request.size()));
      }
    };
    Connection connection(server_url_, true);
    State state;
    state.connection = &connection;
    state.inbox = "_INBOX.bench." + std::to_string(++names_);
    state.request = std::string(payload);
    state.request.resize(std::max<std::size_t>(state.request.size(), 1 + sizeof(std::int64_t)));
    state.calls = calls;
    state.run.latencies_ns.reserve(calls);
    SubscriptionHandle replies;
    auto on_reply = [](natsConnection* /*nc*/, natsSubscription* /*sub*/, natsMsg* msg,
                       void* closure) {
      auto& st = *static_cast<State*>(closure);
      std::int64_t t0 = 0;
      const bool ok = static_cast<std::size_t>(natsMsg_GetDataLength(msg)) == st.request.size();
      if (ok) std::memcpy(&t0, natsMsg_GetData(msg) + 1, sizeof t0);
      natsMsg_Destroy(msg);
      std::lock_guard lock(st.mutex);
      if (ok) {
        st.run.latencies_ns.push_back(now_ns() - t0);
      } else if (!st.run.errors++) {
        st.run.first_error = "an echo came back different";
      }
      if (++st.done == st.calls) st.all_done.notify_all();
      if (st.issued < st.calls) {
        ++st.issued;
        st.send_one();
      }
    };
    check(natsConnection_Subscribe(replies.out(), connection.get(), state.inbox.c_str(), on_reply,
                                   &state),
          "subscribe");
    check(natsConnection_FlushTimeout(connection.get(), 10000), "flush");
    {
      std::lock_guard lock(state.mutex);
      for (; state.issued < std::min(depth, calls); ++state.issued)
        state.send_one();
    }
    std::unique_lock lock(state.mutex);
    if (!state.all_done.wait_for(lock, 120s, [&] { return state.done == calls; })) {
      state.run.errors += calls - state.done;
      state.run.first_error = "echoes missing after 120 s";
    }
    PipelineRun run = std::move(state.run);
    lock.unlock();
    return run;
  }

  std::unique_ptr<Handle> subscribe(Tally& tally, std::uint64_t /*expected*/) override {
    return std::make_unique<NatsSubscription>(server_url_, tally);
  }

  std::unique_ptr<Publisher> publisher() override {
    return std::make_unique<NatsPublisher>(server_url_);
  }

  std::unique_ptr<Handle> idle_clients(std::size_t count) override {
    return std::make_unique<IdleSockets>(port_, count, !server_url_.ca_file.empty());
  }

  std::unique_ptr<Handle> streamer(std::size_t chunks, std::size_t bytes) override {
    return std::make_unique<Streamer>(server_url_, chunks, bytes);
  }

  std::unique_ptr<StreamCaller> stream_caller(std::uint32_t /*window*/) override {
    return std::make_unique<NatsStreamCaller>(server_url_);
  }

  std::unique_ptr<DurableProducer> durable_producer() override {
    if (!durable_) return System::durable_producer();
    return std::make_unique<JetStreamProducer>(server_url_);
  }

  std::unique_ptr<DurableConsumer> durable_consumer() override {
    if (!durable_) return System::durable_consumer();
    return std::make_unique<JetStreamConsumer>(server_url_);
  }

 private:
  TempDir dir_;
  int port_;
  bool durable_;
  Server server_url_;
  std::unique_ptr<Child> server_;
  std::size_t names_ = 0;
};

}  // namespace

std::string nats_unavailable(const Paths& paths, bool secure) {
  if (find_nats_server(paths).empty())
    return "nats-server was not found (install the nats-server package, or pass --nats-server "
           "PATH)";
  if (secure && find_openssl().empty())
    return "the openssl command was not found, which makes NATS's TLS certificate (install "
           "openssl)";
#ifndef SAGEBUS_BENCH_HAVE_OPENSSL
  if (secure)
    return "this sage-bus-bench was built without OpenSSL (libssl-dev), which its idle TLS "
           "clients need";
#endif
  return {};
}

std::unique_ptr<System> start_nats(const Paths& paths, bool secure, const Setup& setup) {
  if (auto why = nats_unavailable(paths, secure); !why.empty()) throw std::runtime_error(why);
  return std::make_unique<NatsSystem>(paths, secure, setup);
}

#endif

}  // namespace sagebus::bench
