// ApiClient with several controller URLs (docs/ha.md) against real
// httplib::Servers on 127.0.0.1: a dead URL is skipped and the working one
// remembered, a follower's 307 is followed once (same method, body, token),
// never to another scheme, and a change that may have arrived is never sent
// to a second replica.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "tw/http_client.h"
#include "tw/json.h"

namespace tw {
namespace {

// One fake replica: an httplib::Server on its own thread, counting requests.
class FakeReplica {
 public:
  explicit FakeReplica(int port = 0) {
    port_ = port == 0 ? server_.bind_to_any_port("127.0.0.1")
                      : (server_.bind_to_port("127.0.0.1", port) ? port : -1);
  }
  ~FakeReplica() { stop(); }
  httplib::Server& server() { return server_; }
  void start() {
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response&) {
      ++hits;
      std::lock_guard<std::mutex> lock(mu);
      last_method = req.method;
      last_target = req.target;
      last_auth = req.get_header_value("Authorization");
      return httplib::Server::HandlerResponse::Unhandled;
    });
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!server_.is_running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  }
  void stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  std::atomic<int> hits{0};
  std::mutex mu;  // guards the last_ fields
  std::string last_method, last_body, last_target, last_auth;

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
};

void json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

// A follower: every request gets 307 to `leader` (same path and query).
void follow(FakeReplica& follower, const std::string& leader) {
  auto redirect = [leader](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Location", leader + req.target);
    json(res, 307, Json{{"error", "follower"}, {"leader", Json{{"identity", "c1"}, {"url", leader}}}});
  };
  follower.server().Get(R"(/.*)", redirect);
  follower.server().Post(R"(/.*)", redirect);
}

// A leader: answers every GET and POST with {"served_by": name}, keeping the
// body it got (httplib reads a body after the pre-routing handler).
void lead(FakeReplica& leader, const std::string& name) {
  auto ok = [name, &leader](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard<std::mutex> lock(leader.mu);
      leader.last_body = req.body;
    }
    json(res, 200, Json{{"served_by", name}});
  };
  leader.server().Get(R"(/.*)", ok);
  leader.server().Post(R"(/.*)", ok);
}

ApiClientOptions options(const std::string& urls) {
  ApiClientOptions o;
  o.base_url = urls;
  o.token = "secret-token";
  o.connect_timeout_ms = 1000;
  o.read_timeout_ms = 2000;
  return o;
}

// A port nothing listens on (yet): connections to it are refused.
int closedPort() {
  FakeReplica probe;
  return probe.port();  // closed again when probe goes
}

// A dead first URL is skipped, and the working one is remembered: the next
// request does not try the first URL again (it now listens, and sees nothing).
TEST(ApiClientFailoverTest, DeadUrlSkippedAndWorkingOneRemembered) {
  const int dead_port = closedPort();
  FakeReplica live;
  lead(live, "live");
  live.start();
  ApiClient client(options("http://127.0.0.1:" + std::to_string(dead_port) + "," + live.url()));
  auto first = client.get("/api/v1/cluster");
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_EQ((*first)["served_by"], "live");
  EXPECT_EQ(client.baseUrl(), live.url());

  FakeReplica revived(dead_port);
  ASSERT_EQ(revived.port(), dead_port);
  lead(revived, "revived");
  revived.start();
  auto second = client.post("/api/v1/vms/a/restart", Json::object());
  ASSERT_TRUE(second.isOk()) << second.status().toString();
  EXPECT_EQ((*second)["served_by"], "live");
  EXPECT_EQ(revived.hits, 0);
}

// A follower's 307 is followed once with the same method, body, query and
// token; the leader (one of the list) is remembered for the next request.
TEST(ApiClientFailoverTest, RedirectFollowedWithSameRequestAndRemembered) {
  FakeReplica leader, follower;
  lead(leader, "leader");
  follow(follower, leader.url());
  leader.start();
  follower.start();
  ApiClient client(options(follower.url() + "," + leader.url()));
  auto answer = client.post("/api/v1/policies?dry_run=1", Json{{"files", Json::array()}});
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ((*answer)["served_by"], "leader");
  {
    std::lock_guard<std::mutex> lock(leader.mu);
    EXPECT_EQ(leader.last_method, "POST");
    EXPECT_EQ(leader.last_target, "/api/v1/policies?dry_run=1");
    EXPECT_EQ(leader.last_body, R"({"files":[]})");
    EXPECT_EQ(leader.last_auth, "Bearer secret-token");
  }
  EXPECT_EQ(client.baseUrl(), leader.url());
  EXPECT_EQ(follower.hits, 1);
  ASSERT_TRUE(client.get("/api/v1/vms").isOk());
  EXPECT_EQ(follower.hits, 1);  // straight to the leader
}

// A Location outside the list is followed too (once), with the same token.
TEST(ApiClientFailoverTest, RedirectToUrlOutsideTheListFollowedOnce) {
  FakeReplica leader, follower;
  lead(leader, "leader");
  follow(follower, leader.url());
  leader.start();
  follower.start();
  ApiClient client(options(follower.url()));
  auto answer = client.get("/api/v1/hosts?limit=5");
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ((*answer)["served_by"], "leader");
  std::lock_guard<std::mutex> lock(leader.mu);
  EXPECT_EQ(leader.last_target, "/api/v1/hosts?limit=5");
  EXPECT_EQ(leader.last_auth, "Bearer secret-token");
}

// Never to another scheme (a token must not leave TLS, nor go in clear),
// never twice.
TEST(ApiClientFailoverTest, RedirectToOtherSchemeOrTwiceRefused) {
  FakeReplica https_follower, loop_a, loop_b;
  follow(https_follower, "https://127.0.0.1:1");
  follow(loop_a, loop_b.url());
  follow(loop_b, loop_a.url());
  https_follower.start();
  loop_a.start();
  loop_b.start();
  ApiClient to_https(options(https_follower.url()));
  auto a = to_https.get("/api/v1/vms");
  ASSERT_FALSE(a.isOk());
  EXPECT_NE(a.status().message().find("another scheme"), std::string::npos) << a.status().toString();
  ApiClient looping(options(loop_a.url()));
  auto b = looping.post("/api/v1/vms/a/kill", Json::object());
  ASSERT_FALSE(b.isOk());
  EXPECT_NE(b.status().message().find("redirected twice"), std::string::npos) << b.status().toString();
  EXPECT_EQ(loop_a.hits, 1);
  EXPECT_EQ(loop_b.hits, 1);
}

// A change that reached a replica which then did not answer in time may have
// been done: it is not sent to the next URL. A read is.
TEST(ApiClientFailoverTest, UnansweredChangeNotResentButReadIs) {
  FakeReplica slow, other;
  auto stall = [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    json(res, 200, Json{{"served_by", "slow"}});
  };
  slow.server().Get(R"(/.*)", stall);
  slow.server().Post(R"(/.*)", stall);
  lead(other, "other");
  slow.start();
  other.start();
  ApiClientOptions o = options(slow.url() + "," + other.url());
  o.read_timeout_ms = 300;
  ApiClient client(o);
  auto change = client.post("/api/v1/vms/a/restart", Json::object());
  ASSERT_FALSE(change.isOk());
  EXPECT_EQ(change.status().code(), Code::kUnavailable);
  EXPECT_EQ(other.hits, 0);
  auto read = client.get("/api/v1/vms");
  ASSERT_TRUE(read.isOk()) << read.status().toString();
  EXPECT_EQ((*read)["served_by"], "other");
}

// A follower that knows no leader (503, "leader": null) sends the client on
// to the next URL.
TEST(ApiClientFailoverTest, FollowerWithoutLeaderMovesOnToTheNext) {
  FakeReplica lost, leader;
  auto no_leader = [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Retry-After", "1");
    json(res, 503, Json{{"error", "no leader known"}, {"leader", nullptr}});
  };
  lost.server().Post(R"(/.*)", no_leader);
  lead(leader, "leader");
  lost.start();
  leader.start();
  ApiClient client(options(lost.url() + "," + leader.url()));
  auto answer = client.post("/api/v1/agents/h1/heartbeat", Json::object());
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ((*answer)["served_by"], "leader");
  ApiClient alone(options(lost.url()));
  auto refused = alone.post("/api/v1/agents/h1/heartbeat", Json::object());
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().code(), Code::kUnavailable);
}

// With no_leader_retry_ms (twctl), an election's 503s are waited out: the
// list is tried again until a leader answers.
TEST(ApiClientFailoverTest, NoLeaderRetriedWithinBudget) {
  FakeReplica electing;
  std::atomic<int> calls{0};
  electing.server().Post(R"(/.*)", [&calls](const httplib::Request&, httplib::Response& res) {
    if (++calls < 3) return json(res, 503, Json{{"error", "no leader known"}, {"leader", nullptr}});
    json(res, 200, Json{{"served_by", "new leader"}});
  });
  electing.start();
  ApiClientOptions o = options(electing.url());
  o.no_leader_retry_ms = 3000;
  ApiClient client(o);
  auto answer = client.post("/api/v1/vms/a/restart", Json::object());
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ(calls, 3);
}

// ---- the agent's link (HttpControllerLink) after a refused answer ----

// A replica's agent listener: the heartbeat (`main`) and its renewal retry
// (?any_replica=1, `renewal`) each answered by the given function; counts
// each kind.
struct AgentListener {
  std::atomic<int> mains{0}, renewals{0};
};
using Answer = std::function<void(httplib::Response&)>;
void answerAgents(FakeReplica& r, AgentListener& counts, Answer main, Answer renewal) {
  r.server().Post(R"(/api/v1/agents/[^/]+/heartbeat)",
                  [&counts, main, renewal](const httplib::Request& req, httplib::Response& res) {
                    if (req.has_param("any_replica")) {
                      ++counts.renewals;
                      renewal(res);
                    } else {
                      ++counts.mains;
                      main(res);
                    }
                  });
}
Answer noLeader() {
  return [](httplib::Response& res) { json(res, 503, Json{{"error", "no leader is known now"}, {"leader", nullptr}}); };
}
Answer termOver() {
  return [](httplib::Response& res) {
    json(res, 503, Json{{"error", "not answering host 'h1': the term 7 this controller acts for is over"}});
  };
}
Answer fenceIntent() {
  return [](httplib::Response& res) { json(res, 409, Json{{"error", "the leader intends to fence host 'h1'"}}); };
}
Answer renewedBy(const std::string& replica, int64_t term) {
  return [replica, term](httplib::Response& res) {
    AssignmentSet set;
    set.host = "h1";
    set.version = 3;
    set.term = term;
    set.lease_ms = 5000;
    set.renewed_by = replica;
    json(res, 200, Json(set));
  };
}
Heartbeat heartbeatOf(const std::string& host) {
  Heartbeat hb;
  hb.host = host;
  hb.agent_id = "agent-" + host;
  return hb;
}

// Pins (issue 14): a deposed leader that refuses the heartbeat (503, its
// term is over) is not asked for the renewal too: the next replica renews
// the lease.
TEST(ControllerLinkFailoverTest, DeposedLeadersRefusalRenewsAtTheNextReplica) {
  FakeReplica deposed, follower;
  AgentListener d, f;
  answerAgents(deposed, d, termOver(), termOver());
  answerAgents(follower, f, noLeader(), renewedBy("c2", 9));
  deposed.start();
  follower.start();
  HttpControllerLink link(options(deposed.url() + "," + follower.url()));
  Result<AssignmentSet> answer = link.heartbeat(heartbeatOf("h1"));
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ(answer->renewed_by, "c2");
  EXPECT_EQ(d.mains, 1);
  EXPECT_EQ(d.renewals, 0);
  EXPECT_EQ(f.renewals, 1);
}

// Pins: a replica that refuses the renewal (409: a fence intent; 503:
// nothing published) is not the first asked at the next heartbeat; that
// one goes on to the next replica, at the caller's own pace (one heartbeat,
// one renewal each time, nothing sent in between).
TEST(ControllerLinkFailoverTest, RefusedRenewalSendsTheNextHeartbeatOn) {
  FakeReplica first, second;
  AgentListener a, b;
  answerAgents(first, a, noLeader(), fenceIntent());
  answerAgents(second, b, noLeader(), renewedBy("c2", 9));
  first.start();
  second.start();
  HttpControllerLink link(options(first.url() + "," + second.url()));
  Result<AssignmentSet> refused = link.heartbeat(heartbeatOf("h1"));
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(a.renewals, 1);
  EXPECT_EQ(b.renewals, 0);
  Result<AssignmentSet> renewed = link.heartbeat(heartbeatOf("h1"));
  ASSERT_TRUE(renewed.isOk()) << renewed.status().toString();
  EXPECT_EQ(renewed->renewed_by, "c2");
  EXPECT_EQ(a.renewals, 1);  // not asked again
  EXPECT_EQ(b.renewals, 1);
  EXPECT_EQ(a.mains + b.mains, 4);  // each heartbeat went round the list once
}

// Pins: after the agent refused a set (an older term, agent/term_watch.h),
// the next heartbeat goes to the next replica instead of the one that sent it.
TEST(ControllerLinkFailoverTest, RefusedSetSendsTheNextHeartbeatOn) {
  FakeReplica stale, current;
  AgentListener s, c;
  answerAgents(stale, s, renewedBy("", 7), renewedBy("", 7));
  answerAgents(current, c, renewedBy("", 9), renewedBy("", 9));
  stale.start();
  current.start();
  HttpControllerLink link(options(stale.url() + "," + current.url()));
  Result<AssignmentSet> old = link.heartbeat(heartbeatOf("h1"));
  ASSERT_TRUE(old.isOk()) << old.status().toString();
  EXPECT_EQ(old->term, 7);
  link.refusedAnswer(/*pushed=*/false);
  Result<AssignmentSet> next = link.heartbeat(heartbeatOf("h1"));
  ASSERT_TRUE(next.isOk()) << next.status().toString();
  EXPECT_EQ(next->term, 9);
  EXPECT_EQ(s.mains, 1);
  EXPECT_EQ(c.mains, 1);
}

// A list is checked whole: no empty element, one scheme.
TEST(ApiClientFailoverTest, UrlListChecked) {
  EXPECT_TRUE(checkBaseUrl("https://a:7800,https://b:7800/").isOk());
  EXPECT_EQ(checkBaseUrl("https://a:7800,,https://b:7800").code(), Code::kInvalidArgument);
  EXPECT_EQ(checkBaseUrl("https://a:7800,http://b:7800").code(), Code::kInvalidArgument);
  EXPECT_EQ(checkBaseUrl("https://a:7800,").code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace tw
