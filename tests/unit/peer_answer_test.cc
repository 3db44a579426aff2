// The answer to a peer check, both ways (agent/peer_answer.h): what an agent
// answers, and what a checker reads from it.
#include <gtest/gtest.h>

#include "agent/peer_answer.h"
#include "agent/peer_checks.h"
#include "tw/json.h"

namespace tw {
namespace {

constexpr const char* kToken = "secret-token-0123456789";

// h2's answering side, having heard from h1 (not from h3) at time 0.
class PeerAnswerTest : public ::testing::Test {
 protected:
  PeerAnswerTest() : checks_("h2") {
    checks_.setPeers({{"h1", "127.0.0.1:1"}, {"h3", "127.0.0.1:3"}}, 3000, 0, 0);
    std::optional<PeerCheck> c1 = checks_.take(PeerLane::kLive, 0);  // by name: h1 first
    std::optional<PeerCheck> c3 = checks_.take(PeerLane::kLive, 0);
    checks_.finish(c1.value(), true, 0);
    checks_.finish(c3.value(), std::nullopt, 0);
  }
  PeerStatusAnswer answer(const PeerStatusRequest& req, Millis now) {
    return answerPeerStatus(
        req, kToken, "h2", [&](const std::string& peer) { return checks_.hears(peer, now); },
        [&] { return checks_.heard(now); });
  }
  static PeerStatusRequest request(std::optional<std::string> from, bool compact) {
    PeerStatusRequest r;
    r.authorization = {std::string("Bearer ") + kToken};
    r.from = std::move(from);
    r.compact = compact;
    return r;
  }
  PeerChecks checks_;
};

// Pins: a check that gives `from` and asks for compact gets
// {"host","sees_you"} and no list; sees_you is whether the answering host
// heard from the checker within the peer timeout (h1 yes, h3 never, h1 no
// longer once the timeout passed, a stranger no).
TEST_F(PeerAnswerTest, CompactAnswerSaysOnlyWhetherItSeesTheChecker) {
  PeerStatusAnswer a = answer(request("h1", true), 1000);
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(a.body, R"({"host":"h2","sees_you":true})");
  EXPECT_EQ(answer(request("h3", true), 1000).body, R"({"host":"h2","sees_you":false})");
  EXPECT_EQ(answer(request("h1", true), 3000).body, R"({"host":"h2","sees_you":false})");
  EXPECT_EQ(answer(request("h9", true), 1000).body, R"({"host":"h2","sees_you":false})");
  // What the checker reads from it.
  EXPECT_TRUE(parsePeerAnswer(a.body, "h2", "h1").value());
  EXPECT_FALSE(parsePeerAnswer(answer(request("h3", true), 1000).body, "h2", "h3").value());
}

// Pins: without compact=1 the answer is the full list, also when `from` is
// given: agents older than the compact answer send `from` and read only
// `sees`, and must keep reading it during a rolling upgrade.
TEST_F(PeerAnswerTest, FullListWithoutCompactEvenWithFrom) {
  for (const auto& req : {request(std::nullopt, false), request("h1", false), request(std::nullopt, true)}) {
    PeerStatusAnswer a = answer(req, 1000);
    ASSERT_EQ(a.status, 200);
    EXPECT_EQ(a.body, R"({"host":"h2","sees":["h1"]})");
  }
}

// Pins: the token check is as strict with compact as without: no header, a
// wrong token, another scheme, two headers (even if one is right) and a
// token with a NUL and more after it are all refused (401) without saying
// what the host sees.
TEST_F(PeerAnswerTest, TokenStillRequired) {
  const std::string right = std::string("Bearer ") + kToken;
  const std::vector<std::vector<std::string>> refused = {
      {},
      {"Bearer wrong-token-0123456789"},
      {std::string("Basic ") + kToken},
      {right, right},
      {right, "Bearer wrong"},
      {right + std::string(1, '\0') + "x"},
      {"Bearer"},
  };
  for (bool compact : {true, false}) {
    for (const auto& auth : refused) {
      PeerStatusRequest r = request("h1", compact);
      r.authorization = auth;
      PeerStatusAnswer a = answer(r, 1000);
      EXPECT_EQ(a.status, 401) << auth.size();
      EXPECT_EQ(a.body.find("h1"), std::string::npos);
      EXPECT_EQ(a.body.find("sees"), std::string::npos);
    }
  }
  PeerStatusRequest r = request("h1", true);
  r.authorization = {"bearer   " + std::string(kToken)};  // scheme in any case (RFC 7235)
  EXPECT_EQ(answer(r, 1000).status, 200);
}

// Pins: an answer of an agent older than the compact answer (only `sees`) is
// read: mutual when it names the checker, not when it does not.
TEST(PeerAnswerParseTest, OldStyleAnswerAccepted) {
  EXPECT_TRUE(parsePeerAnswer(R"({"host":"h2","sees":["h1","h3"]})", "h2", "h1").value());
  EXPECT_FALSE(parsePeerAnswer(R"({"host":"h2","sees":["h3"]})", "h2", "h1").value());
  EXPECT_FALSE(parsePeerAnswer(R"({"host":"h2","sees":[]})", "h2", "h1").value());
  // Old parse skipped elements that are not strings.
  EXPECT_TRUE(parsePeerAnswer(R"({"host":"h2","sees":[1,null,"h1"]})", "h2", "h1").value());
  // Both: sees_you decides (a newer agent's answer).
  EXPECT_FALSE(parsePeerAnswer(R"({"host":"h2","sees_you":false,"sees":["h1"]})", "h2", "h1").value());
}

// Pins: what does not count as an answer at all: not JSON, not an object,
// another host answering at that address, no host, neither field, or a field
// of the wrong type.
TEST(PeerAnswerParseTest, BadAnswersDoNotCount) {
  for (const char* body : {"", "not json", "[]", R"("h2")", R"({"sees":["h1"]})",
                           R"({"host":"h3","sees_you":true})", R"({"host":"h3","sees":["h1"]})",
                           R"({"host":2,"sees_you":true})", R"({"host":"h2"})",
                           R"({"host":"h2","sees_you":"true"})", R"({"host":"h2","sees_you":1})",
                           R"({"host":"h2","sees":"h1"})", R"({"host":"h2","sees":{"h1":true}})"}) {
    Result<bool> r = parsePeerAnswer(body, "h2", "h1");
    EXPECT_FALSE(r.isOk()) << body;
    if (!r.isOk()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << body;
    }
  }
}

}  // namespace
}  // namespace tw
