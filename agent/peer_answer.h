// The answer to a peer check (GET /api/v1/peer/status, docs/fencing.md), both
// ways it is written:
//   - compact, when the checker asks for it (`?from=<checker>&compact=1`):
//     {"host":"h2","sees_you":true}, whether the answering host reaches the
//     checker. O(1): at 1,000 hosts the full list was ~6 KB per answer, about
//     6 MB per round per agent (issue #16);
//   - full, otherwise: {"host":"h2","sees":["h1","h3"]}, every peer the
//     answering host reaches. For operators, and for the checkers of agents
//     older than the compact answer: they send `from` too but read only
//     `sees`, so `from` alone must keep getting it during a rolling upgrade.
// A checker reads both (a peer not yet upgraded answers `sees`).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tw/status.h"

namespace tw {

inline constexpr const char* kPeerStatusPath = "/api/v1/peer/status";

// A peer check as received (what the answer depends on).
struct PeerStatusRequest {
  std::vector<std::string> authorization;  // every Authorization header, as received
  std::optional<std::string> from;         // ?from=
  bool compact = false;                    // ?compact=1
};
struct PeerStatusAnswer {
  int status = 200;
  std::string body;  // JSON
};

// The answer to a check: 401 unless exactly one Authorization header carries
// `token` (Bearer, exact bytes); else compact when the check gave `from` and
// asked for it, full otherwise. `hears(peer)`: whether this host had an
// answer from that peer within the peer timeout; `heard()`: all such peers.
PeerStatusAnswer answerPeerStatus(const PeerStatusRequest& request, const std::string& token,
                                  const std::string& self,
                                  const std::function<bool(const std::string&)>& hears,
                                  const std::function<std::vector<std::string>()>& heard);

std::string compactPeerAnswer(const std::string& self, bool sees_you);
std::string fullPeerAnswer(const std::string& self, const std::vector<std::string>& sees);

// What a checker (`self`) learns from the answer of the peer it asked
// (`asked`): true when the peer reaches it (mutual), false when it answered
// without reaching it. Errors (the answer does not count as an answer):
// kInvalidArgument when the body is not JSON, names another host than
// `asked` (someone else answers at that address), or has neither a boolean
// `sees_you` nor a `sees` list of strings.
Result<bool> parsePeerAnswer(const std::string& body, const std::string& asked,
                             const std::string& self);

}  // namespace tw
