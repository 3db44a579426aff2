#pragma once

// Options for a listening socket of ours: a port belongs to one process.
//
// cpp-httplib's default (default_socket_options) sets SO_REUSEPORT, with which
// a second process of the same user binds a port that one already listens on,
// and the kernel then splits new connections between the two. A second
// controller (or a stale agent) started on a taken port would come up without
// an error and answer half of the heartbeats, peer checks and API calls in its
// place; CI saw exactly that when two tests drew the same free port
// (HaLeaderKillTest found "no leader": half its calls reached another test's
// controller). So: SO_REUSEADDR only, which lets a restarted process bind
// while old connections sit in TIME_WAIT, and a taken port fails at bind.

#include <sys/socket.h>

namespace tw {

inline void exclusiveListenOptions(int sock) {
  int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

}  // namespace tw
