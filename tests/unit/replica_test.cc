// A controller replica's role (controller/replica.h, replica_directory.h,
// leader_redirect.h): what a follower answers instead of serving a call, its
// read-only views of the store, its switch to acting once it leads, and the
// directory of replicas in etcd. Hermetic: in-memory SQLite, FakeEtcd, a
// manual clock, no threads.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "controller/leader_redirect.h"
#include "controller/replica.h"
#include "controller/replica_directory.h"
#include "controller/service.h"
#include "controller_fixture.h"
#include "tw/fake_etcd.h"
#include "tw/store.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

ReplicaInfo leaderC1() { return ReplicaInfo{"c1", {"https://c1:7800", "https://c1:7801"}, 0}; }

// ---------------------------------------------------------- followerAnswer ---

// A mutating public call goes to the leader's public URL, the same path and
// query, with 307 (the method and body are kept by the client).
TEST(FollowerAnswerTest, PublicChangeRedirectsToLeaderWithPathAndQuery) {
  auto a = followerAnswer(ApiListener::kPublic, "POST", "/api/v1/policies?dry_run=1", leaderC1());
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->status, 307);
  EXPECT_EQ(a->location, "https://c1:7800/api/v1/policies?dry_run=1");
  EXPECT_EQ(a->body["leader"]["identity"], "c1");
  EXPECT_EQ(a->body["leader"]["url"], "https://c1:7800");
  for (const char* method : {"PUT", "DELETE", "PATCH"}) {
    EXPECT_TRUE(followerAnswer(ApiListener::kPublic, method, "/api/v1/x", leaderC1()).has_value()) << method;
  }
}

// Reads, and the token check that changes nothing, are served by the follower.
TEST(FollowerAnswerTest, ReadsAndAuthCheckAreServedHere) {
  EXPECT_FALSE(followerAnswer(ApiListener::kPublic, "GET", "/api/v1/vms?limit=5", leaderC1()).has_value());
  EXPECT_FALSE(followerAnswer(ApiListener::kPublic, "HEAD", "/", leaderC1()).has_value());
  EXPECT_FALSE(followerAnswer(ApiListener::kPublic, "POST", "/api/v1/auth/check", leaderC1()).has_value());
  EXPECT_FALSE(followerAnswer(ApiListener::kPublic, "GET", "/api/v1/tiers", leaderC1()).has_value());
}

// Tier endpoints come from heartbeats (only the leader has them): the public
// listener sends them to the leader; balancers polling the agents' or the
// guests' listener get 503 (a failed fetch keeps their last backends), never
// an empty list.
TEST(FollowerAnswerTest, TierEndpointsNeverEmptyFromAFollower) {
  auto pub = followerAnswer(ApiListener::kPublic, "GET", "/api/v1/tiers/web/endpoints", leaderC1());
  ASSERT_TRUE(pub.has_value());
  EXPECT_EQ(pub->status, 307);
  EXPECT_EQ(pub->location, "https://c1:7800/api/v1/tiers/web/endpoints");
  for (ApiListener l : {ApiListener::kAgents, ApiListener::kGuests}) {
    auto a = followerAnswer(l, "GET", "/api/v1/tiers/web/endpoints", leaderC1());
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->status, 503);
    EXPECT_EQ(a->retry_after_s, 1);
    EXPECT_TRUE(a->location.empty());
  }
  EXPECT_FALSE(followerAnswer(ApiListener::kGuests, "GET", "/api/v1/tiers", leaderC1()).has_value());
}

// Every agent call (heartbeat, event, assignment poll) goes to the leader's
// agents' listener: a follower holds no assignments.
TEST(FollowerAnswerTest, AgentCallsRedirectToLeadersAgentListener) {
  auto hb = followerAnswer(ApiListener::kAgents, "POST", "/api/v1/agents/h1/heartbeat", leaderC1());
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->status, 307);
  EXPECT_EQ(hb->location, "https://c1:7801/api/v1/agents/h1/heartbeat");
  auto poll = followerAnswer(ApiListener::kAgents, "GET", "/api/v1/agents/h1/assignments?after=3", leaderC1());
  ASSERT_TRUE(poll.has_value());
  EXPECT_EQ(poll->location, "https://c1:7801/api/v1/agents/h1/assignments?after=3");
}

// No leader known (an election under way): 503 with Retry-After and a JSON body.
TEST(FollowerAnswerTest, NoLeaderKnownIs503WithRetryAfter) {
  auto a = followerAnswer(ApiListener::kPublic, "POST", "/api/v1/policies", std::nullopt);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->status, 503);
  EXPECT_EQ(a->retry_after_s, 1);
  EXPECT_TRUE(a->location.empty());
  EXPECT_TRUE(a->body["leader"].is_null());
  EXPECT_NE(a->body["error"].get<std::string>().find("no leader"), std::string::npos);
}

// ------------------------------------------------------------ advertisedUrl ---

// The default comes from the listener; a wildcard address becomes the
// hostname; a given URL is checked.
TEST(AdvertisedUrlTest, DefaultsAndChecks) {
  EXPECT_EQ(*advertisedUrl("", true, "10.0.0.5", 7800), "https://10.0.0.5:7800");
  EXPECT_EQ(*advertisedUrl("", false, "::1", 7800), "http://[::1]:7800");
  auto wild = advertisedUrl("", true, "0.0.0.0", 7800);
  ASSERT_TRUE(wild.isOk());
  EXPECT_EQ(wild->find("0.0.0.0"), std::string::npos);
  EXPECT_EQ(*advertisedUrl("https://ctl-1.example:7800/", true, "", 0), "https://ctl-1.example:7800");
  EXPECT_EQ(advertisedUrl("ftp://x", true, "", 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(advertisedUrl("http://a:1,http://b:2", true, "", 0).status().code(), Code::kInvalidArgument);
}

// ----------------------------------------------------- loadView / switch ---

const char* kPolicy = R"(
cluster:
  n_plus_one: warn
hosts:
  - name: h1
    uri: test:///default
  - name: h2
    uri: test:///default
tiers:
  - name: web
    image: tiny-web
    replicas: 2
    memory: 128MiB
)";

const char* kPolicyThree = R"(
cluster:
  n_plus_one: warn
hosts:
  - name: h1
    uri: test:///default
  - name: h2
    uri: test:///default
  - name: h3
    uri: test:///default
tiers:
  - name: web
    image: tiny-web
    replicas: 3
    memory: 128MiB
)";

class ReplicaSwitchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The leader's controller, writing the store the follower reads.
    auto opened = testing_controller::openWithPolicy(clock_, {PolicyFile{"p.yaml", kPolicy}});
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    store_ = std::move(opened->store);
    writer_ = std::move(opened->controller);
    switch_ = std::make_unique<ReplicaSwitch>(
        *store_, clock_, [this] { return leading_; },
        [this] {
          ++views_made_;
          return std::make_unique<Controller>(*store_, clock_);
        },
        [this] {
          auto c = std::make_unique<Controller>(*store_, clock_);
          acting_ = c.get();
          return c;
        },
        [this](Controller&) { ++on_lead_calls_; }, ReplicaSwitch::Options{1000});
  }

  int64_t events() { return *store_->eventCount(); }

  ManualClock clock_{1000};
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> writer_;
  std::unique_ptr<ReplicaSwitch> switch_;
  bool leading_ = false;
  int views_made_ = 0;
  int on_lead_calls_ = 0;
  Controller* acting_ = nullptr;
};

// A view loads what the store holds and writes nothing: a host the leader
// declared dead stays offline in the view (recover() would make it suspect
// and write that, with an event).
TEST_F(ReplicaSwitchTest, ViewWritesNothingAndJudgesNoHost) {
  HostRecord h1 = *writer_->host("h1");
  h1.state = HostState::kOffline;
  ASSERT_TRUE(store_->putHost(h1).isOk());
  const int64_t before = events();
  Controller view(*store_, clock_);
  ASSERT_TRUE(view.loadView().isOk());
  EXPECT_EQ(view.host("h1")->state, HostState::kOffline);
  EXPECT_EQ(view.policyVersion(), writer_->policyVersion());
  EXPECT_EQ(events(), before);
  EXPECT_EQ(store_->hosts()->front().state, HostState::kOffline);
}

// A follower never acts; it refreshes its view from the store at most every
// refresh_every_ms, and the service then answers from the new view.
TEST_F(ReplicaSwitchTest, FollowerRefreshesItsViewAtMostEverySecond) {
  auto first = switch_->start();
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_EQ((*first)->policyVersion(), writer_->policyVersion());
  ControllerService service(**first, 100);
  EXPECT_FALSE(service.hostDeclared("h3"));

  ASSERT_TRUE(writer_->applyPolicy({PolicyFile{"p.yaml", kPolicyThree}}, false).isOk());
  const int64_t before = events();
  clock_.advance(500);
  EXPECT_FALSE(switch_->beforeStep(service));
  EXPECT_EQ(views_made_, 1);  // too early: the old view answers
  EXPECT_FALSE(service.hostDeclared("h3"));

  clock_.advance(500);
  EXPECT_FALSE(switch_->beforeStep(service));
  EXPECT_EQ(views_made_, 2);
  EXPECT_TRUE(service.hostDeclared("h3"));  // the service answers from the new view
  EXPECT_EQ(events(), before);              // and the follower wrote nothing
  // Event waits (the event stream) learn of the leader's events.
  EXPECT_EQ(service.waitEvents(0, 0), *store_->lastEventId());
  EXPECT_GT(service.waitEvents(0, 0), 0);
  EXPECT_FALSE(switch_->acting());
}

// Once it leads, the replica acts only with a Controller recovered from the
// store at that moment (not a follower's view), and runs on_lead once.
TEST_F(ReplicaSwitchTest, WinnerRecoversFromTheStoreBeforeItActs) {
  auto first = switch_->start();
  ASSERT_TRUE(first.isOk());
  ControllerService service(**first, 100);
  // Written after the last view: only a fresh read sees it.
  ASSERT_TRUE(writer_->applyPolicy({PolicyFile{"p.yaml", kPolicyThree}}, false).isOk());
  leading_ = true;
  EXPECT_TRUE(switch_->beforeStep(service));
  ASSERT_NE(acting_, nullptr);
  EXPECT_TRUE(switch_->acting());
  EXPECT_EQ(acting_->policyVersion(), writer_->policyVersion());
  EXPECT_TRUE(service.hostDeclared("h3"));
  EXPECT_EQ(on_lead_calls_, 1);
  EXPECT_TRUE(switch_->beforeStep(service));
  EXPECT_EQ(on_lead_calls_, 1);
  // The term ends: no step (main.cc then ends the process).
  leading_ = false;
  EXPECT_FALSE(switch_->beforeStep(service));
}

// ---------------------------------------------------------- the directory ---

class ReplicaDirectoryTest : public ::testing::Test {
 protected:
  ReplicaDirectoryOptions options(const std::string& who) {
    ReplicaDirectoryOptions o;
    o.prefix = "/tierwarden/test";
    o.identity = who;
    o.urls = {"http://" + who + ":7800", "http://" + who + ":7801"};
    o.ttl_ms = 3000;
    return o;
  }
  ManualClock clock_{1000000};
  FakeEtcd etcd_{clock_};
  FakeEtcdClient client1_{etcd_};
  FakeEtcdClient client2_{etcd_};
};

// Each replica registers its URLs and last-seen time; every replica lists
// all of them and the leader key's holder and term.
TEST_F(ReplicaDirectoryTest, ListsReplicasAndTheLeader) {
  ReplicaDirectory d1(client1_, clock_, options("c1"));
  ReplicaDirectory d2(client2_, clock_, options("c2"));
  d1.runOnce();
  clock_.advance(200);
  d2.runOnce();
  ASSERT_TRUE(client1_.put(etcdLeaderKey("/tierwarden/test"), "c2").isOk());
  d1.runOnce();
  auto v = d1.view();
  ASSERT_TRUE(v.read);
  ASSERT_EQ(v.replicas.size(), 2u);
  EXPECT_EQ(v.replicas[0].identity, "c1");
  EXPECT_EQ(v.replicas[1].urls.agent_url, "http://c2:7801");
  EXPECT_EQ(v.replicas[1].last_seen_ms, 1000200);
  EXPECT_EQ(v.leader, "c2");
  EXPECT_GT(v.term, 0);
  EXPECT_EQ(v.leader_changes, 0);
}

// A replica that stops refreshing drops out when its registration's lease
// runs out; a new leader term is counted as a change.
TEST_F(ReplicaDirectoryTest, SilentReplicaDropsOutAndNewTermsAreCounted) {
  ReplicaDirectory d1(client1_, clock_, options("c1"));
  ReplicaDirectory d2(client2_, clock_, options("c2"));
  const std::string leader = etcdLeaderKey("/tierwarden/test");
  ASSERT_TRUE(client2_.put(leader, "c2").isOk());
  d2.runOnce();
  d1.runOnce();
  EXPECT_EQ(d1.view().replicas.size(), 2u);
  for (int i = 0; i < 4; ++i) {  // c2 is silent for 4 s (TTL 3 s)
    clock_.advance(1000);
    d1.runOnce();
  }
  ASSERT_TRUE(client1_.deleteRange(leader, "").isOk());
  ASSERT_TRUE(client1_.put(leader, "c1").isOk());
  d1.runOnce();
  auto v = d1.view();
  ASSERT_EQ(v.replicas.size(), 1u);
  EXPECT_EQ(v.replicas[0].identity, "c1");
  EXPECT_EQ(v.leader, "c1");
  EXPECT_EQ(v.leader_changes, 1);
  d1.withdraw();
  d2.runOnce();
  EXPECT_EQ(d2.view().replicas.size(), 1u);  // c1 withdrew, c2 registered again
  EXPECT_EQ(d2.view().replicas[0].identity, "c2");
}

// A follower knows the leader's URLs from the lease's view of the leader key
// and the directory; GET /api/v1/controllers and the metrics say who leads.
TEST_F(ReplicaDirectoryTest, EtcdReplicaNamesTheLeaderAndItsUrls) {
  LeaderLeaseOptions lo;
  lo.key = etcdLeaderKey("/tierwarden/test");
  lo.ttl_ms = 3000;
  lo.identity = "c1";
  LeaderLease l1(client1_, clock_, lo);
  lo.identity = "c2";
  LeaderLease l2(client2_, clock_, lo);
  ReplicaDirectory d1(client1_, clock_, options("c1"));
  ReplicaDirectory d2(client2_, clock_, options("c2"));
  l1.runOnce();
  clock_.advance(1);
  l2.runOnce();
  d1.runOnce();
  d2.runOnce();
  ASSERT_TRUE(l1.isLeader());
  EtcdReplica r1(l1, d1, "c1", clock_);
  EtcdReplica r2(l2, d2, "c2", clock_);
  EXPECT_TRUE(r1.leading());
  EXPECT_FALSE(r1.leader().has_value());  // itself
  EXPECT_FALSE(r2.leading());
  ASSERT_TRUE(r2.leader().has_value());
  EXPECT_EQ(r2.leader()->urls.public_url, "http://c1:7800");
  Json j = r2.controllersJson();
  EXPECT_EQ(j["leader"], "c1");
  EXPECT_EQ(j["self"], "c2");
  EXPECT_EQ(j["term"], l1.term());
  ASSERT_EQ(j["replicas"].size(), 2u);
  EXPECT_TRUE(j["replicas"][0]["leader"].get<bool>());
  EXPECT_FALSE(j["replicas"][1]["leader"].get<bool>());
  EXPECT_TRUE(j["replicas"][1]["self"].get<bool>());
  EXPECT_NE(r1.metricsText().find("tierwarden_leader 1\n"), std::string::npos);
  EXPECT_NE(r2.metricsText().find("tierwarden_leader 0\n"), std::string::npos);
  EXPECT_NE(r2.metricsText().find("tierwarden_leader_term " + std::to_string(l1.term()) + "\n"),
            std::string::npos);
}

// Between winning the lease and acting with a recovered Controller, the
// replica does not lead for the HTTP side: a change then is answered 503 (no
// leader known), never by a follower's view.
TEST_F(ReplicaDirectoryTest, WinnerServesChangesOnlyOnceActing) {
  LeaderLeaseOptions lo;
  lo.key = etcdLeaderKey("/tierwarden/test");
  lo.ttl_ms = 3000;
  lo.identity = "c1";
  LeaderLease l1(client1_, clock_, lo);
  ReplicaDirectory d1(client1_, clock_, options("c1"));
  l1.runOnce();
  d1.runOnce();
  ASSERT_TRUE(l1.isLeader());
  bool acting = false;
  EtcdReplica r1(l1, d1, "c1", clock_, [&acting] { return acting; });
  EXPECT_FALSE(r1.leading());
  EXPECT_FALSE(r1.leader().has_value());
  auto answer = followerAnswer(ApiListener::kPublic, "POST", "/api/v1/policies", r1.leader());
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status, 503);
  EXPECT_NE(r1.metricsText().find("tierwarden_leader 0\n"), std::string::npos);
  acting = true;
  EXPECT_TRUE(r1.leading());
  EXPECT_NE(r1.metricsText().find("tierwarden_leader 1\n"), std::string::npos);
}

// The SQLite store's one controller lists itself as the leader.
TEST(SingleReplicaTest, ListsItselfAsLeader) {
  ManualClock clock(5000);
  SingleReplica r("ctl", {"https://ctl:7800", "https://ctl:7801"}, clock);
  Json j = r.controllersJson();
  EXPECT_EQ(j["store"], "sqlite");
  EXPECT_EQ(j["leader"], "ctl");
  ASSERT_EQ(j["replicas"].size(), 1u);
  EXPECT_EQ(j["replicas"][0]["public_url"], "https://ctl:7800");
  EXPECT_EQ(j["replicas"][0]["last_seen_s"], 0.0);
  EXPECT_NE(r.metricsText().find("tierwarden_leader 1\n"), std::string::npos);
}

}  // namespace
}  // namespace tw
