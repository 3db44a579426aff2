#include "controller/replica.h"

#include <unistd.h>

#include <sstream>
#include <utility>

#include "tw/http_client.h"
#include "tw/log.h"

namespace tw {

namespace {

Json replicaJson(const ReplicaInfo& r, bool leader, bool self, Millis now) {
  return Json{{"identity", r.identity},
              {"public_url", r.urls.public_url},
              {"agent_url", r.urls.agent_url},
              {"leader", leader},
              {"self", self},
              {"last_seen_s", static_cast<double>(std::max<Millis>(now - r.last_seen_ms, 0)) / 1000.0}};
}

std::string leaderMetrics(bool leading, int64_t term, int64_t changes) {
  std::ostringstream out;
  out << "# HELP tierwarden_leader 1 when this controller replica leads (acts), else 0.\n"
      << "# TYPE tierwarden_leader gauge\n"
      << "tierwarden_leader " << (leading ? 1 : 0) << "\n"
      << "# HELP tierwarden_leader_term The leader's term: the etcd leader key's create revision "
         "(0: no leader known; 1 on the SQLite store).\n"
      << "# TYPE tierwarden_leader_term gauge\n"
      << "tierwarden_leader_term " << term << "\n"
      << "# HELP tierwarden_leader_changes_total New leader terms this replica saw since it started.\n"
      << "# TYPE tierwarden_leader_changes_total counter\n"
      << "tierwarden_leader_changes_total " << changes << "\n";
  return out.str();
}

}  // namespace

// ------------------------------------------------------------ SingleReplica ---

SingleReplica::SingleReplica(std::string identity, ReplicaUrls urls, const Clock& wall)
    : identity_(std::move(identity)), wall_(wall), urls_(std::move(urls)) {}

void SingleReplica::setUrls(ReplicaUrls urls) {
  std::lock_guard<std::mutex> lock(mu_);
  urls_ = std::move(urls);
}

Json SingleReplica::controllersJson() const {
  const Millis now = wall_.nowMs();
  ReplicaUrls urls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    urls = urls_;
  }
  return Json{{"store", "sqlite"},
              {"leader", identity_},
              {"term", 1},
              {"self", identity_},
              {"replicas", Json::array({replicaJson(ReplicaInfo{identity_, urls, now}, true, true, now)})}};
}

std::string SingleReplica::metricsText() const { return leaderMetrics(true, 1, 0); }

// -------------------------------------------------------------- EtcdReplica ---

EtcdReplica::EtcdReplica(const LeaderLease& lease, ReplicaDirectory& directory, std::string identity,
                         const Clock& wall, std::function<bool()> acting)
    : lease_(lease), directory_(directory), identity_(std::move(identity)), wall_(wall), acting_(std::move(acting)) {}

bool EtcdReplica::leading() const { return lease_.isLeader() && (!acting_ || acting_()); }

std::optional<ReplicaInfo> EtcdReplica::leader() const {
  // The lease's view of the leader key is the freshest (a follower reads it
  // every campaign_every_ms); the directory has the URLs.
  std::string who = lease_.leaderIdentity();
  if (who.empty() || who == identity_) return std::nullopt;
  for (auto& r : directory_.view().replicas) {
    if (r.identity == who) return r;
  }
  return std::nullopt;
}

Json EtcdReplica::controllersJson() const {
  const Millis now = wall_.nowMs();
  ReplicaDirectory::View view = directory_.view();
  const bool holds = lease_.isLeader();
  std::string leader = holds ? identity_ : view.leader;
  if (leader.empty() && !view.read) leader = lease_.leaderIdentity();  // the directory not read yet
  Json replicas = Json::array();
  for (const auto& r : view.replicas) {
    replicas.push_back(replicaJson(r, r.identity == leader, r.identity == identity_, now));
  }
  return Json{{"store", "etcd"},
              {"leader", leader.empty() ? Json() : Json(leader)},
              {"term", holds ? lease_.term() : view.term},
              {"self", identity_},
              {"replicas", replicas}};
}

std::string EtcdReplica::metricsText() const {
  const bool leading = this->leading();
  ReplicaDirectory::View view = directory_.view();
  return leaderMetrics(leading, lease_.isLeader() ? lease_.term() : view.term, view.leader_changes);
}

// ------------------------------------------------------------ ReplicaSwitch ---

ReplicaSwitch::ReplicaSwitch(Store& store, const Clock& clock, std::function<bool()> leading,
                             std::function<std::unique_ptr<Controller>()> make_view,
                             std::function<std::unique_ptr<Controller>()> make_acting,
                             std::function<void(Controller&)> on_lead, Options options)
    : store_(store),
      clock_(clock),
      leading_(std::move(leading)),
      make_view_(std::move(make_view)),
      make_acting_(std::move(make_acting)),
      on_lead_(std::move(on_lead)),
      options_(options) {}

Result<Controller*> ReplicaSwitch::start() {
  auto view = make_view_();
  TW_RETURN_IF_ERROR(view->loadView());
  current_ = std::move(view);
  last_refresh_ms_ = clock_.nowMs();
  ++refreshes_;
  return current_.get();
}

bool ReplicaSwitch::beforeStep(ControllerService& service) {
  if (acting_) return leading_();
  if (leading_()) {
    // A fresh read of the store before the first step of the term: the
    // follower's views are dropped, the journal is resumed from the store.
    std::unique_ptr<Controller> next = make_acting_();
    Status st = next->recover();
    if (!st.isOk()) {
      if (st.message() != last_error_) log::warn("won a term but cannot recover from the store: {}", st.toString());
      last_error_ = st.message();
      return false;  // tried again at the next step
    }
    if (on_lead_) on_lead_(*next);
    service.swapController(*next);
    current_ = std::move(next);
    acting_ = true;
    last_error_.clear();
    log::info("leading: recovered from the store, acting from now on");
    return leading_();
  }
  const Millis now = clock_.nowMs();
  if (now - last_refresh_ms_ < options_.refresh_every_ms) return false;
  last_refresh_ms_ = now;
  std::unique_ptr<Controller> view = make_view_();
  Status st = view->loadView();
  if (!st.isOk()) {
    if (st.message() != last_error_) log::warn("following: cannot read the store: {}", st.toString());
    last_error_ = st.message();
    return false;  // the last view keeps answering
  }
  last_error_.clear();
  service.swapController(*view);
  current_ = std::move(view);
  ++refreshes_;
  if (auto last = store_.lastEventId(); last.isOk()) service.noteEventId(*last);
  return false;
}

std::unique_ptr<ReplicaSwitch> makeReplicaSwitch(Store& store, const LeaderLease& lease, HostConnector* hosts,
                                                 FenceAgents fence_agents, std::function<void(Controller&)> on_lead,
                                                 LeaderRenewals* renewals) {
  return std::make_unique<ReplicaSwitch>(
      store, SteadyClock::instance(), [&lease] { return lease.isLeader(); },
      [&store] { return std::make_unique<Controller>(store, SystemClock::instance()); },
      [&store, &lease, hosts, fence_agents = std::move(fence_agents), renewals] {
        auto c = std::make_unique<Controller>(store, SystemClock::instance(), hosts, fence_agents);
        c->setLeaseRenewals(renewals);
        // It acts for the term the lease holds now, and sends nothing once
        // that term is over (controller/term_guard.h).
        const int64_t term = lease.term();
        c->actForTerm(term, [&lease, term] { return lease.isLeader() && lease.term() == term; });
        return c;
      },
      std::move(on_lead), ReplicaSwitch::Options{});
}

// ---------------------------------------------------------- advertised URLs ---

Result<ReplicaUrls> advertisedUrls(const std::string& given_public, const std::string& given_agent, bool tls,
                                   const std::string& address, int port, const std::string& agent_address,
                                   int agent_port) {
  auto url = advertisedUrl(given_public, tls, address, port);
  if (!url.isOk()) return url.status().withContext("--advertise-url");
  auto agent_url = advertisedUrl(given_agent, tls, agent_address, agent_port);
  if (!agent_url.isOk()) return agent_url.status().withContext("--advertise-agent-url");
  return ReplicaUrls{*url, *agent_url};
}

Result<std::string> advertisedUrl(const std::string& given, bool tls, const std::string& address, int port) {
  if (!given.empty()) {
    TW_RETURN_IF_ERROR(checkBaseUrl(given));
    if (given.find(',') != std::string::npos) return invalidArgument("an advertised URL is one URL, got '" + given + "'");
    std::string url = given;
    while (!url.empty() && url.back() == '/') url.pop_back();
    return url;
  }
  std::string host = address;
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    host = name;
  }
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return std::string(tls ? "https" : "http") + "://" + host + ":" + std::to_string(port);
}

}  // namespace tw
