// ZeroMQ sends and receives that a signal does not interrupt, for threads that take
// signals (the broker's loop takes SIGHUP, SIGTERM and SIGINT).
//
// Before it moves a message, libzmq checks its socket's command mailbox with poll(), a
// zero-timeout one when the call does not block. A signal arriving then makes the call
// fail with EINTR, which cppzmq throws, though nothing was sent or received: the call is
// simply made again. Receiving a whole message frame by frame this way never splits it.
//
// Threads that need no signals block them instead, with block_signals() (the SDK's I/O
// thread and the broker's HTTP thread, as libzmq's own threads do), which covers every
// call they make; the process's signals then go to the threads that want them.
//
// Waiting: the broker's and the SDK's loops wait in one ::poll() on their sockets' ZMQ_FDs
// (and plain fds), not in zmq_poll(), which asks every socket for its events before and
// after each wait, each ask a system call. A ZMQ_FD is edge-triggered: readable when the
// socket's state may have changed, and any call on the socket (a send included) may take
// that news silently. So a loop reads a socket until it has nothing (EAGAIN) whenever its
// fd was readable, and asks events() of a socket it also sends on just before waiting,
// waiting not at all when it can already read.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstddef>
#include <optional>
#include <vector>

#include <zmq.hpp>

namespace sagebus::wire {

// Blocks, in the calling thread, every signal but those a fault raises in the thread
// itself (which cannot wait, and which sanitizers and crash handlers must see).
inline void block_signals() {
  sigset_t set;
  sigfillset(&set);
  for (const int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS})
    sigdelset(&set, fault);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// ZMQ_EVENTS: what `socket` can do now (ZMQ_POLLIN, ZMQ_POLLOUT); again while interrupted.
// Asking takes the socket's pending commands, which re-arms its ZMQ_FD.
inline int events(zmq::socket_ref socket) {
  for (;;) {
    try {
      return socket.get(zmq::sockopt::events);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

// socket.recv(frame, flags), again while interrupted.
inline zmq::recv_result_t receive(zmq::socket_ref socket, zmq::message_t& frame,
                                  zmq::recv_flags flags = zmq::recv_flags::none) {
  for (;;) {
    try {
      return socket.recv(frame, flags);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

// Appends the next whole message to `frames`, at most `keep` (at least 1) of its frames:
// the rest are received and dropped. Returns how many were dropped, or nothing, and
// appends nothing, when no message waits and `flags` says not to wait. The frames after
// the first are already there.
inline std::optional<std::size_t> receive_message(zmq::socket_ref socket,
                                                  std::vector<zmq::message_t>& frames,
                                                  zmq::recv_flags flags = zmq::recv_flags::dontwait,
                                                  std::size_t keep = static_cast<std::size_t>(-1)) {
  zmq::message_t first;
  if (!receive(socket, first, flags)) return std::nullopt;
  bool more = first.more();
  frames.push_back(std::move(first));
  std::size_t kept = 1;
  std::size_t dropped = 0;
  while (more) {
    if (kept < keep) {
      (void)receive(socket, frames.emplace_back());
      more = frames.back().more();
      ++kept;
    } else {
      zmq::message_t frame;
      (void)receive(socket, frame);
      more = frame.more();
      ++dropped;
    }
  }
  return dropped;
}

// socket.send(what, flags) for a message_t (emptied once sent) or a const_buffer (copied),
// again while interrupted. An empty result: ZMQ_DONTWAIT and the queue was full.
template <class Frame>
zmq::send_result_t send(zmq::socket_ref socket, Frame& what, zmq::send_flags flags) {
  for (;;) {
    try {
      return socket.send(what, flags);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

}  // namespace sagebus::wire
