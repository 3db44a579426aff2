#include "controller/api_server.h"

#include "controller/leader_redirect.h"

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "controller/leader_redirect.h"
#include "controller/pki.h"
#include "tw/json.h"
#include "tw/log.h"
#include "tw/text.h"

namespace tw {

namespace {

constexpr const char* kJson = "application/json";
// The longest page of GET /api/v1/vms or /hosts (?limit=).
constexpr int64_t kMaxPageLimit = 5000;
// Any request body (httplib refuses a larger one before reading it: 413).
constexpr size_t kMaxRequestBodyBytes = 8 * 1024 * 1024;
// POST /api/v1/policies: the files of a policy, as JSON. A policy at the
// limits of policy.h (1,000 tiers, 1,000 hosts) in the usual style fits
// in a fraction of this.
constexpr size_t kMaxPolicyRequestBytes = 1024 * 1024;

int httpStatusOf(Code code) {
  switch (code) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument: return 400;
    case Code::kPermissionDenied: return 401;
    case Code::kForbidden: return 403;
    case Code::kNotFound: return 404;
    case Code::kAlreadyExists:
    case Code::kFailedPrecondition: return 409;
    case Code::kUnavailable: return 503;
    case Code::kUnimplemented: return 501;
    case Code::kInternal: return 500;
  }
  return 500;
}

// Every JSON answer is written here. jsonText() never throws on text that is
// not UTF-8 (a user's bytes quoted in a message); anything else that could
// (memory) falls back to a fixed body, so that the error and exception
// handlers that call this never throw (httplib calls the error handler
// outside its try block: an exception there ended the process).
void sendJson(httplib::Response& res, int status, const Json& body) noexcept {
  res.status = status;
  try {
    res.set_header("Cache-Control", "no-store");
    res.set_content(jsonText(body), kJson);
  } catch (...) {
    res.status = 500;
    try {
      res.body = R"({"error":"internal error: cannot encode the answer"})";
    } catch (...) {  // out of memory: an empty 500
    }
  }
}

// A request body larger than a route takes (413), or than any route takes
// (httplib's payload limit, before the body is read).
void sendTooLarge(httplib::Response& res, const char* what, size_t limit) noexcept {
  try {
    sendJson(res, 413,
             Json{{"error", std::string(what) + " is too large: at most " +
                                std::to_string(limit / 1024) + " KiB (" + std::to_string(limit) +
                                " bytes)"}});
  } catch (...) {
    sendJson(res, 413, Json::object());
  }
}

void sendError(httplib::Response& res, const Status& s) {
  Json body{{"error", s.message()}};
  if (s.where()) {
    if (!s.where()->file.empty()) body["file"] = s.where()->file;
    if (s.where()->line > 0) body["line"] = s.where()->line;
    if (s.where()->column > 0) body["column"] = s.where()->column;
  }
  sendJson(res, httpStatusOf(s.code()), body);
}


std::string contentTypeOf(const std::string& path) {
  auto ext = std::filesystem::path(path).extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

// Parses a non-negative integer query parameter; invalid → error.
Result<int64_t> intParam(const httplib::Request& req, const char* name, int64_t def) {
  if (!req.has_param(name)) return def;
  std::string v = req.get_param_value(name);
  if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos) {
    return invalidArgument(std::string("query parameter '") + name +
                           "' must be a non-negative integer, got " + quoteForMessage(v));
  }
  return static_cast<int64_t>(std::stoll(v));
}

// ?limit=&after= of a list (issue #16): limit 1..5000 (absent: the whole
// list), after a name as the API spells names. Bad values → kInvalidArgument.
Result<PageRequest> pageParams(const httplib::Request& req) {
  PageRequest page;
  if (req.has_param("limit")) {
    auto limit = intParam(req, "limit", 0);
    if (!limit.isOk()) return limit.status();
    if (*limit < 1 || *limit > kMaxPageLimit) {
      return invalidArgument("query parameter 'limit' must be between 1 and " +
                             std::to_string(kMaxPageLimit) + ", got " + std::to_string(*limit));
    }
    page.limit = static_cast<int>(*limit);
  }
  if (req.has_param("after")) {
    page.after = req.get_param_value("after");
    const bool ok = !page.after.empty() && page.after.size() <= 253 &&
                    page.after.find_first_not_of(
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
                        std::string::npos;
    if (!ok) {
      return invalidArgument("query parameter 'after' must be a host or vm name (letters, digits, "
                             "'.', '_', '-'), got " + quoteForMessage(page.after));
    }
  }
  return page;
}

// GET /api/v1/vms: pageParams plus ?names=a,b,c (at most kMaxPageLimit
// names, sorted and without repeats in the answer; not with limit/after).
Result<PageRequest> vmListParams(const httplib::Request& req) {
  auto page = pageParams(req);
  if (!page.isOk() || !req.has_param("names")) return page;
  if (req.has_param("limit") || req.has_param("after")) {
    return invalidArgument("query parameter 'names' cannot be combined with 'limit' or 'after'");
  }
  const std::string raw = req.get_param_value("names");
  if (raw.empty() || raw.back() == ',') {
    return invalidArgument("query parameter 'names' must list vm names separated by ',', got " +
                           quoteForMessage(raw));
  }
  std::set<std::string> names;
  std::stringstream list(raw);
  for (std::string name; std::getline(list, name, ',');) {
    const bool ok = !name.empty() && name.size() <= 253 &&
                    name.find_first_not_of(
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
                        std::string::npos;
    if (!ok) {
      return invalidArgument("query parameter 'names' must list vm names separated by ',', got " +
                             quoteForMessage(name));
    }
    names.insert(name);
  }
  if (names.size() > static_cast<size_t>(kMaxPageLimit)) {
    return invalidArgument("query parameter 'names' lists more than " + std::to_string(kMaxPageLimit) +
                           " vms");
  }
  page->names.assign(names.begin(), names.end());
  return page;
}

}  // namespace

bool resolveWebPath(const std::string& web_dir, const std::string& relative, std::string& resolved) {
  namespace fs = std::filesystem;
  if (web_dir.empty() || relative.empty() || relative.size() > 512) return false;
  if (relative.front() == '/' || relative.find('\0') != std::string::npos) return false;
  for (char c : relative) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == '/';
    if (!ok) return false;
  }
  std::stringstream parts(relative);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part == "..") return false;
  }
  std::error_code ec;
  fs::path root = fs::canonical(web_dir, ec);
  if (ec) return false;
  fs::path full = fs::canonical(root / relative, ec);
  if (ec) return false;
  // Must stay inside the root after symlinks are resolved.
  auto rel = full.lexically_relative(root);
  if (rel.empty() || rel.native().rfind("..", 0) == 0) return false;
  if (!fs::is_regular_file(full, ec)) return false;
  resolved = full.string();
  return true;
}

ApiServer::ApiServer(ControllerService& service, ApiServerOptions options)
    : service_(service),
      options_(std::move(options)),
      public_(std::make_unique<GuardedHttpServer>("public", options_.public_limits)),
      agent_(std::make_unique<GuardedHttpServer>("agent", options_.agent_limits)),
      guest_(options_.guest_port >= 0 ? std::make_unique<GuardedHttpServer>("guest", options_.guest_limits)
                                      : nullptr),
      streamer_(service, options_.stream_limits,
                [this](const std::map<std::string, std::string>& headers) {
                  auto h = headers.find("authorization");
                  return check(h == headers.end() ? std::string() : h->second, Access::kRead, "");
                }),
      long_polls_(service, [this](uint64_t ticket, const std::string& host, int64_t after,
                                  const std::string& peers_digest) {
        // The published set: waitAssignments() returns it without a wait.
        agent_->answerDeferred(ticket, 200,
                               jsonText(Json(service_.waitAssignments(host, after, 0, peers_digest))));
      }) {
  if (!options_.auth) {
    CredentialSet set;
    if (!options_.token.empty()) set.add(Principal{Role::kOperator, ""}, options_.token);
    options_.auth = std::make_shared<StaticAuthenticator>(std::move(set));
  }
  public_->setDivert("GET /api/v1/events/stream",
                     [this](std::unique_ptr<Transport> io, const std::string& peer,
                            std::chrono::steady_clock::time_point deadline) {
                       streamer_.take(std::move(io), peer, deadline);
                     });
  if (!options_.replica) {
    options_.replica = std::make_shared<SingleReplica>(
        "controller", ReplicaUrls{"http://" + options_.host + ":" + std::to_string(options_.port), ""},
        SystemClock::instance());
  }
  if (options_.public_tls) public_->setTls(options_.public_tls);
  if (options_.agent_tls) agent_->setTls(options_.agent_tls);
  routes();
}

ApiServer::~ApiServer() { stop(); }

namespace {

Status bindOne(httplib::Server& server, const std::string& host, int port, int& bound) {
  if (port == 0) {
    bound = server.bind_to_any_port(host);
    if (bound <= 0) return unavailable("cannot listen on " + host + ": no free port");
    return Status::ok();
  }
  if (!server.bind_to_port(host, port)) {
    return unavailable("cannot listen on " + host + ":" + std::to_string(port) +
                       " (address in use or not permitted)");
  }
  bound = port;
  return Status::ok();
}

}  // namespace

Status ApiServer::bind() {
  TW_RETURN_IF_ERROR(bindOne(*public_, options_.host, options_.port, port_));
  TW_RETURN_IF_ERROR(bindOne(*agent_, options_.agent_host, options_.agent_port, agent_port_));
  public_->raiseBacklog(1024);
  agent_->raiseBacklog(1024);
  if (guest_) {
    TW_RETURN_IF_ERROR(bindOne(*guest_, options_.guest_host, options_.guest_port, guest_port_));
    guest_->raiseBacklog(256);
  }
  return Status::ok();
}

void ApiServer::serve() {
  streamer_.start();
  long_polls_.start();
  agent_thread_ = std::thread([this] { agent_->listen_after_bind(); });
  if (guest_) guest_thread_ = std::thread([this] { guest_->listen_after_bind(); });
  public_->listen_after_bind();
  if (agent_thread_.joinable()) agent_thread_.join();
  if (guest_thread_.joinable()) guest_thread_.join();
  streamer_.stop();
}

void ApiServer::stop() {
  streamer_.stop();
  long_polls_.stop();
  if (public_) public_->stop();
  if (agent_) agent_->stop();
  if (guest_) guest_->stop();
}

bool ApiServer::sentToLeader(ApiListener listener, const httplib::Request& req, httplib::Response& res) {
  if (options_.replica->leading()) return false;
  if (listener == ApiListener::kAgents && options_.follower_heartbeats && req.method == "POST" &&
      req.has_param("any_replica") && req.path.ends_with("/heartbeat")) {
    return false;  // renewed here: the leader did not answer the agent
  }
  auto answer = followerAnswer(listener, req.method, req.target, options_.replica->leader());
  if (!answer) return false;
  if (!answer->location.empty()) res.set_header("Location", answer->location);
  if (answer->retry_after_s > 0) res.set_header("Retry-After", std::to_string(answer->retry_after_s));
  sendJson(res, answer->status, answer->body);
  return true;
}

Status ApiServer::check(const std::string& authorization, Access need, const std::string& host,
                        std::optional<Principal>* who_out) {
  const std::string token = bearerToken(authorization);
  std::optional<Principal> who;
  if (!token.empty()) who = options_.auth->authenticate(token);
  if (who_out) *who_out = who;
  return authorize(who, !authorization.empty(), need, host, options_.public_read);
}

namespace {

// The Authorization header as received, exact bytes; "" when absent.
// httplib's Request::get_header_value() hands a value out through a C string,
// which cut it at a NUL: "Bearer <token>\0junk" was taken as the token.
// Sent more than once: `repeated`.
std::string authorizationOf(const httplib::Request& req, bool& repeated) {
  auto range = req.headers.equal_range("Authorization");
  repeated = range.first != range.second && std::next(range.first) != range.second;
  return range.first == range.second ? std::string() : range.first->second;
}

}  // namespace

Status ApiServer::checkRequest(const httplib::Request& req, Access need, const std::string& host,
                               std::optional<Principal>* who) {
  bool repeated = false;
  const std::string authorization = authorizationOf(req, repeated);
  if (repeated) return permissionDenied("more than one Authorization header");
  return check(authorization, need, host, who);
}

bool ApiServer::allowed(const httplib::Request& req, httplib::Response& res, Access need,
                        const std::string& host) {
  std::optional<Principal> who;
  Status st = checkRequest(req, need, host, &who);
  if (st.isOk() && need == Access::kAgent && options_.agent_tls) {
    // mTLS: the handshake verified the certificate against the CA; it must
    // also be this host's (CN = the host the request speaks for).
    const std::string cn = peerCommonName(req.ssl);
    if (cn.empty()) {
      st = forbidden("an agent call needs the client certificate of its host (issue-host writes it)");
    } else if (cn != host) {
      st = forbidden("the client certificate of host " + quoteForMessage(cn) +
                     " may not speak for host " + quoteForMessage(host));
    }
  }
  if (who) {
    // A valid credential: the connection is never evicted (http_guard.h).
    public_->authenticated(req);
    agent_->authenticated(req);
  }
  if (st.isOk()) return true;
  if (st.code() == Code::kPermissionDenied) res.set_header("WWW-Authenticate", "Bearer");
  sendError(res, st);
  return false;
}

namespace {

// Registers handlers on one or more listeners. Every handler first tells its
// listener that the request has been read (the read deadline is lifted),
// then asks `gate` (a follower sends some calls to the leader) when set.
class Routes {
 public:
  using Gate = std::function<bool(const httplib::Request&, httplib::Response&)>;
  explicit Routes(std::vector<GuardedHttpServer*> servers, Gate gate = nullptr)
      : servers_(std::move(servers)), gate_(std::move(gate)) {}
  template <typename H>
  void Get(const std::string& pattern, H handler) {
    for (auto* srv : servers_) srv->handlers().Get(pattern, wrap(srv, handler));
  }
  template <typename H>
  void Post(const std::string& pattern, H handler) {
    for (auto* srv : servers_) srv->handlers().Post(pattern, wrap(srv, handler));
  }
  void set_payload_max_length(size_t n) {
    for (auto* srv : servers_) srv->handlers().set_payload_max_length(n);
  }
  template <typename H>
  void set_error_handler(H handler) {
    for (auto* srv : servers_) srv->handlers().set_error_handler(handler);
  }
  template <typename H>
  void set_exception_handler(H handler) {
    for (auto* srv : servers_) srv->handlers().set_exception_handler(handler);
  }

 private:
  template <typename H>
  httplib::Server::Handler wrap(GuardedHttpServer* srv, H handler) const {
    return [srv, handler, gate = gate_](const httplib::Request& req, httplib::Response& res) {
      srv->requestRead(req);
      if (gate && gate(req, res)) return;
      handler(req, res);
    };
  }
  std::vector<GuardedHttpServer*> servers_;
  Gate gate_;
};

}  // namespace

void ApiServer::routes() {
  // `s`: the public listener; `a`: the agents' listener; `g`: the guests'
  // (or none); `both`: all of them.
  Routes s({public_.get()}, [this](const httplib::Request& req, httplib::Response& res) {
    return sentToLeader(ApiListener::kPublic, req, res);
  });
  Routes a({agent_.get()}, [this](const httplib::Request& req, httplib::Response& res) {
    return sentToLeader(ApiListener::kAgents, req, res);
  });
  Routes g(guest_ ? std::vector<GuardedHttpServer*>{guest_.get()} : std::vector<GuardedHttpServer*>{},
           [this](const httplib::Request& req, httplib::Response& res) {
             return sentToLeader(ApiListener::kGuests, req, res);
           });
  Routes both(guest_ ? std::vector<GuardedHttpServer*>{public_.get(), agent_.get(), guest_.get()}
                     : std::vector<GuardedHttpServer*>{public_.get(), agent_.get()});
  s.set_payload_max_length(kMaxRequestBodyBytes);
  a.set_payload_max_length(kMaxRequestBodyBytes);
  g.set_payload_max_length(64 * 1024);

  // Auth (controller/auth.h): reads need a viewer or operator token unless
  // --public-read, changes the operator's, agent calls their host's.
  auto authorized = [this](const httplib::Request& req, httplib::Response& res) {
    return allowed(req, res, Access::kOperate);
  };
  auto readable = [this](const httplib::Request& req, httplib::Response& res) {
    return allowed(req, res, Access::kRead);
  };
  auto body = [](const httplib::Request& req) -> Result<Json> {
    if (req.body.empty()) return invalidArgument("empty request body: expected JSON");
    return parseJson(req.body);
  };

  s.Get("/api/v1/cluster", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    sendJson(res, 200, service_.call([](Controller& c) { return c.clusterJson(); }));
  });
  s.Get("/api/v1/hosts", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    auto page = pageParams(req);
    if (!page.isOk()) return sendError(res, page.status());
    auto j = service_.call([&](Controller& c) { return c.hostsJson(*page); });
    if (!j.isOk()) return sendError(res, j.status());
    sendJson(res, 200, *j);
  });
  s.Get("/api/v1/tiers", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    sendJson(res, 200, service_.call([](Controller& c) { return c.tiersJson(); }));
  });
  // A tier's endpoints: a read on the public listener; open on the guests'
  // listener and on a plain agents' listener, where balancer VMs poll it for
  // their backends (guests hold no token and no certificate; the answer holds
  // service addresses and ports only).
  auto endpoints = [this](const httplib::Request& req, httplib::Response& res) {
    std::string tier = req.matches[1];
    auto j = service_.call([&](Controller& c) { return c.endpointsJson(tier); });
    if (!j.isOk()) return sendError(res, j.status());
    sendJson(res, 200, *j);
  };
  s.Get(R"(/api/v1/tiers/([A-Za-z0-9._-]+)/endpoints)",
        [=](const httplib::Request& req, httplib::Response& res) {
          if (!readable(req, res)) return;
          endpoints(req, res);
        });
  a.Get(R"(/api/v1/tiers/([A-Za-z0-9._-]+)/endpoints)", endpoints);
  g.Get(R"(/api/v1/tiers/([A-Za-z0-9._-]+)/endpoints)", endpoints);
  s.Get("/api/v1/vms", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    auto page = vmListParams(req);
    if (!page.isOk()) return sendError(res, page.status());
    sendJson(res, 200, service_.call([&](Controller& c) { return c.vmsJson(*page); }));
  });
  s.Get(R"(/api/v1/vms/([A-Za-z0-9._-]+))", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    std::string name = req.matches[1];
    auto j = service_.call([&](Controller& c) { return c.vmJson(name); });
    if (!j.isOk()) return sendError(res, j.status());
    sendJson(res, 200, *j);
  });
  s.Get("/api/v1/events", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    if (req.has_param("tail")) {  // the newest N
      if (req.has_param("since") || req.has_param("limit")) {
        return sendError(res, invalidArgument("query parameter 'tail' cannot be combined with 'since' or 'limit'"));
      }
      auto tail = intParam(req, "tail", 0);
      if (!tail.isOk()) return sendError(res, tail.status());
      if (*tail < 1 || *tail > 5000) {
        return sendError(res, invalidArgument("query parameter 'tail' must be between 1 and 5000, got " +
                                              std::to_string(*tail)));
      }
      auto j = service_.call([&](Controller& c) { return c.eventsTailJson(static_cast<int>(*tail)); });
      if (!j.isOk()) return sendError(res, j.status());
      return sendJson(res, 200, *j);
    }
    auto since = intParam(req, "since", 0);
    if (!since.isOk()) return sendError(res, since.status());
    auto limit = intParam(req, "limit", 500);
    if (!limit.isOk()) return sendError(res, limit.status());
    int lim = static_cast<int>(std::clamp<int64_t>(*limit, 1, 5000));
    auto j = service_.call([&](Controller& c) { return c.eventsJson(*since, lim); });
    if (!j.isOk()) return sendError(res, j.status());
    sendJson(res, 200, *j);
  });
  s.Get("/metrics", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    res.set_content(service_.call([](Controller& c) { return c.metricsText(); }) + options_.replica->metricsText() +
                        heartbeat_counters_.metricsText() + service_.fastPathMetricsText(),
                    "text/plain; version=0.0.4");
  });
  // The controller replicas (docs/ha.md), from any replica.
  s.Get("/api/v1/controllers", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    sendJson(res, 200, options_.replica->controllersJson());
  });

  s.Post("/api/v1/policies", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    // Bounded before it is parsed; the policy's size itself (tiers, hosts,
    // VMs) is bounded by parsePolicy (policy.h).
    if (req.body.size() > kMaxPolicyRequestBytes) {
      return sendTooLarge(res, "a policy request body", kMaxPolicyRequestBytes);
    }
    auto j = body(req);
    if (!j.isOk()) return sendError(res, j.status());
    if (!j->is_object() || !j->contains("files") || !(*j)["files"].is_array()) {
      return sendError(res, invalidArgument("expected {\"files\": [{\"name\", \"content\"}, ...]}"));
    }
    auto files = decode<std::vector<PolicyFile>>((*j)["files"]);
    if (!files.isOk()) return sendError(res, files.status());
    for (const auto& f : *files) {
      if (f.name.empty() || f.name.find('/') != std::string::npos) {
        return sendError(res, invalidArgument("a policy file name must be a non-empty base name, got " +
                                              quoteForMessage(f.name)));
      }
    }
    std::string dry = req.has_param("dry_run") ? req.get_param_value("dry_run") : "0";
    if (dry != "0" && dry != "1" && dry != "true" && dry != "false") {
      return sendError(res, invalidArgument("dry_run must be 0 or 1, got " + quoteForMessage(dry)));
    }
    bool dry_run = dry == "1" || dry == "true";
    // May wait (bounded) for the hosts to check new paths (path_probes.h).
    auto result = service_.applyPolicy(*files, dry_run);
    if (!result.isOk()) return sendError(res, result.status());
    Json plan = Json::array();
    for (const auto& p : result->plan) {
      plan.push_back(Json{{"vm", p.vm}, {"tier", p.tier}, {"host", p.host}, {"action", p.action},
                          {"reason", p.reason}});
    }
    Json breaking = Json::object();
    for (const auto& [h, list] : result->n_plus_one.breaking) breaking[h] = list;
    sendJson(res, 200,
             Json{{"dry_run", result->dry_run},
                  {"applied", result->applied},
                  {"changed", result->changed},
                  {"version", result->version},
                  {"plan", Json{{"vms", plan},
                                {"n_plus_one", Json{{"safe", result->n_plus_one.safe},
                                                    {"summary", result->n_plus_one.summary()},
                                                    {"breaking", breaking}}}}},
                  {"warnings", result->warnings},
                  {"unchecked_hosts", result->unchecked_hosts}});
  });
  s.Post(R"(/api/v1/vms/([A-Za-z0-9._-]+)/restart)",
         [=, this](const httplib::Request& req, httplib::Response& res) {
           if (!authorized(req, res)) return;
           std::string name = req.matches[1];
           Status st = service_.call([&](Controller& c) { return c.restartVm(name); });
           if (!st.isOk()) return sendError(res, st);
           sendJson(res, 202, Json{{"message", "restart of vm '" + name + "' requested"}});
         });

  // Operator actions on VMs and hosts: POST /api/v1/{vms|hosts}/NAME/ACTION.
  auto action = [&s, authorized, this](const char* pattern, std::function<Status(Controller&, const std::string&,
                                                                  const Json&)> fn,
                          std::string done) {
    s.Post(pattern, [=, this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      std::string name = req.matches[1];
      Json args = Json::object();
      if (!req.body.empty()) {
        auto j = parseJson(req.body);
        if (!j.isOk()) return sendError(res, j.status());
        if (!j->is_object()) return sendError(res, invalidArgument("expected a JSON object"));
        args = *j;
      }
      Status st = service_.call([&](Controller& c) { return fn(c, name, args); });
      if (!st.isOk()) return sendError(res, st);
      std::string message = done;
      auto pos = message.find("{}");
      if (pos != std::string::npos) message.replace(pos, 2, name);
      sendJson(res, 202, Json{{"message", message}});
    });
  };
  action(R"(/api/v1/vms/([A-Za-z0-9._-]+)/kill)",
         [](Controller& c, const std::string& n, const Json&) { return c.killVm(n); },
         "vm '{}' killed; watch it heal");
  action(R"(/api/v1/vms/([A-Za-z0-9._-]+)/reset)",
         [](Controller& c, const std::string& n, const Json&) { return c.resetVm(n); },
         "vm '{}' reset: budgets cleared, retrying");
  action(R"(/api/v1/vms/([A-Za-z0-9._-]+)/migrate)",
         [](Controller& c, const std::string& n, const Json& a) -> Status {
           if (!a.contains("to") || !a["to"].is_string()) {
             return invalidArgument("expected {\"to\": \"<host>\"}");
           }
           return c.migrateVm(n, a["to"].get<std::string>());
         },
         "migration of vm '{}' started");
  // Backups (docs/backups.md).
  action(R"(/api/v1/vms/([A-Za-z0-9._-]+)/backup)",
         [](Controller& c, const std::string& n, const Json&) { return c.backupVm(n).status(); },
         "backup of vm '{}' requested");
  action(R"(/api/v1/vms/([A-Za-z0-9._-]+)/restore)",
         [](Controller& c, const std::string& n, const Json& a) -> Status {
           if (!a.contains("from") || !a["from"].is_string())
             return invalidArgument("expected {\"from\": \"<backup id>\"}");
           return c.restoreVm(n, a["from"].get<std::string>()).status();
         },
         "restore of vm '{}' requested: it stops, gets the backup's disk and starts again");
  s.Get("/api/v1/backups", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    const std::string vm = req.has_param("vm") ? req.get_param_value("vm") : "";
    auto j = service_.call([&](Controller& c) { return c.backupsJson(vm); });
    if (!j.isOk()) return sendError(res, j.status());
    sendJson(res, 200, *j);
  });
  action(R"(/api/v1/hosts/([A-Za-z0-9._-]+)/drain)",
         [](Controller& c, const std::string& n, const Json&) { return c.drainHost(n); },
         "drain of host '{}' started");
  action(R"(/api/v1/hosts/([A-Za-z0-9._-]+)/undrain)",
         [](Controller& c, const std::string& n, const Json&) { return c.undrainHost(n); },
         "host '{}' returned to service");

  s.Get("/api/v1/incidents", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!readable(req, res)) return;
    sendJson(res, 200, service_.call([](Controller& c) { return c.incidentsJson(); }));
  });

  // Server-sent events (GET /api/v1/events/stream): diverted before httplib
  // reads them, served by EventStreamer (event_streamer.h) without a thread.

  // Token check for the dashboard (nothing changes): 204 for the operator's
  // token; 403 with the token's "role" for a valid one that may not change
  // anything (a viewer's: the dashboard reads with it); 401 otherwise.
  s.Post("/api/v1/auth/check", [this](const httplib::Request& req, httplib::Response& res) {
    std::optional<Principal> who;
    Status st = checkRequest(req, Access::kOperate, "", &who);
    if (st.isOk()) {
      res.status = 204;
      return;
    }
    if (st.code() == Code::kPermissionDenied) res.set_header("WWW-Authenticate", "Bearer");
    Json body{{"error", st.message()}};
    if (who) body["role"] = roleName(who->role);
    sendJson(res, httpStatusOf(st.code()), body);
  });

  // ---- agents (their own listener) ----
  auto elsewhere = [this](const httplib::Request&, httplib::Response& res) {
    sendError(res, notFound("agent calls are served on the agents' listener (--agent-listen, port " +
                            std::to_string(agent_port_) + "), not on the public API"));
  };
  s.Post(R"(/api/v1/agents/.*)", elsewhere);
  s.Get(R"(/api/v1/agents/.*)", elsewhere);
  // A heartbeat, full (POST .../heartbeat) or compact (POST
  // .../heartbeat/compact: its report named by digest, tw/compact_heartbeats.h).
  auto heartbeat = [=, this](const httplib::Request& req, httplib::Response& res, bool compact) {
           // Counted as refused unless answered with a set (heartbeat_counters.h).
           HeartbeatPath how = HeartbeatPath::kRefused;
           struct Count {
             HeartbeatCounters& counters;
             HeartbeatPath& how;
             ~Count() { counters.count(how); }
           } count{heartbeat_counters_, how};
           const std::string host = req.matches[1];
           if (!allowed(req, res, Access::kAgent, host)) return;
           auto j = body(req);
           if (!j.isOk()) return sendError(res, j.status());
           auto hb = decode<Heartbeat>(*j);
           if (!hb.isOk()) return sendError(res, hb.status());
           // The token speaks for the path's host only (allowed above).
           if (hb->host != host) {
             return sendError(res, forbidden("the token of host '" + host +
                                             "' may not send a heartbeat for host " +
                                             quoteForMessage(hb->host)));
           }
           if (hb->compact != compact || (compact && hb->report_digest.empty())) {
             return sendError(res, invalidArgument(compact ? "a compact heartbeat carries \"compact\": true and its report_digest"
                                                           : "a compact heartbeat goes to POST /api/v1/agents/" + host +
                                                                 "/heartbeat/compact"));
           }
           if (!compact && options_.follower_heartbeats && req.has_param("any_replica") &&
               !options_.replica->leading()) {
             auto set = options_.follower_heartbeats->handle(*hb);  // docs/ha.md: renewal by any replica
             if (!set.isOk()) return sendError(res, set.status());
             how = HeartbeatPath::kFollower;
             return sendJson(res, 200, *set);
           }
           HeartbeatPath answered = HeartbeatPath::kLoop;
           auto text = service_.heartbeatJson(*hb, 250, &answered);  // never waits long for the loop
           if (!text.isOk()) {
             if (answered == HeartbeatPath::kReportWanted) how = answered;
             return sendError(res, text.status());
           }
           how = answered;
           res.status = 200;
           res.set_header("Cache-Control", "no-store");  // as sendJson
           // As set_content(*text, kJson), without copying the answer again
           // (a malloc and a copy of the set's text per heartbeat).
           res.body = std::move(*text);
           res.set_header("Content-Type", kJson);
  };
  a.Post(R"(/api/v1/agents/([A-Za-z0-9._-]+)/heartbeat)",
         [heartbeat](const httplib::Request& req, httplib::Response& res) { heartbeat(req, res, false); });
  a.Post(R"(/api/v1/agents/([A-Za-z0-9._-]+)/heartbeat/compact)",
         [heartbeat](const httplib::Request& req, httplib::Response& res) { heartbeat(req, res, true); });
  a.Post(R"(/api/v1/agents/([A-Za-z0-9._-]+)/events)",
         [=, this](const httplib::Request& req, httplib::Response& res) {
           const std::string host = req.matches[1];
           if (!allowed(req, res, Access::kAgent, host)) return;
           auto j = body(req);
           if (!j.isOk()) return sendError(res, j.status());
           auto e = decode<AgentEvent>(*j);
           if (!e.isOk()) return sendError(res, e.status());
           if (!e->host.empty() && e->host != host) {
             return sendError(res, forbidden("the token of host '" + host +
                                             "' may not send an event for host " +
                                             quoteForMessage(e->host)));
           }
           e->host = host;
           Status st = service_.agentEvent(*e);  // queued for the loop
           if (!st.isOk()) return sendError(res, st);
           res.status = 204;
         });
  a.Get(R"(/api/v1/agents/([A-Za-z0-9._-]+)/assignments)",
        [=, this](const httplib::Request& req, httplib::Response& res) {
          std::string host = req.matches[1];
          if (!allowed(req, res, Access::kAgent, host)) return;
          auto after = intParam(req, "after", 0);
          if (!after.isOk()) return sendError(res, after.status());
          auto wait = intParam(req, "wait_ms", 0);
          if (!wait.isOk()) return sendError(res, wait.status());
          if (!service_.hostDeclared(host)) {
            return sendError(res, notFound("host '" + host + "' is not declared in the applied policy"));
          }
          const Millis wait_ms = std::min<int64_t>(*wait, 30000);
          // The peer list the agent holds (AssignmentSet::peers_digest): an
          // opaque token, compared only; any other value gets the list.
          const std::string peers_digest = req.get_param_value("peers_digest");
          if (wait_ms > 0 && !service_.assignmentsAfter(host, *after)) {
            // Waits parked, without this thread (long_polls.h).
            if (uint64_t ticket = agent_->defer(req); ticket != 0) {
              long_polls_.add(ticket, host, *after, wait_ms, peers_digest);
              return;
            }
          }
          sendJson(res, 200, service_.waitAssignments(host, *after, wait_ms, peers_digest));
        });

  // ---- dashboard: only files under web_dir ----
  s.Get(R"(/(.*))", [this](const httplib::Request& req, httplib::Response& res) {
    std::string rel = req.matches[1];
    if (rel.empty()) rel = "index.html";
    if (rel.rfind("api/", 0) == 0) return sendError(res, notFound("no such API path: " + req.path));
    std::string path;
    if (!resolveWebPath(options_.web_dir, rel, path)) {
      return sendError(res, notFound("not found: " + req.path));
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream data;
    data << in.rdbuf();
    std::string type = contentTypeOf(path);
    res.set_header("Cache-Control", type.rfind("text/html", 0) == 0 ? "no-cache" : "public, max-age=60");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_content(data.str(), type);
  });

  // httplib's own answers (no route, wrong method, a request it refused
  // before routing) get a JSON body. httplib calls this outside its try
  // block: it must not throw (sendJson does not; the rest is caught here).
  both.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.status < 400) return;
    try {
      // The method and path as received, cut: they are the client's bytes.
      std::string request = utf8Prefix(req.method, 16) + " " + utf8Prefix(req.path, 200);
      switch (res.status) {
        case 404: return sendJson(res, 404, Json{{"error", "not found: " + request}});
        case 405: return sendJson(res, 405, Json{{"error", "method not allowed: " + request}});
        case 413:
          // httplib takes at most 8 KiB of a form-encoded body (curl -d's
          // default type), whatever the payload limit.
          if (req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0) {
            return sendTooLarge(res, "a form-encoded request body (send Content-Type: application/json)",
                                CPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH);
          }
          return sendTooLarge(res, "request body", kMaxRequestBodyBytes);
        case 414:
          return sendJson(res, 414, Json{{"error", "request line too long: at most " +
                                                       std::to_string(CPPHTTPLIB_REQUEST_URI_MAX_LENGTH) +
                                                       " bytes"}});
        case 400: return sendJson(res, 400, Json{{"error", "bad request: malformed HTTP request"}});
        default: return sendJson(res, res.status, Json{{"error", "request refused"}});
      }
    } catch (...) {
      sendJson(res, res.status, Json::object());
    }
  });
  // A handler threw: a bug (bad input is answered by the handlers with 4xx),
  // answered 500. Never throws either: httplib calls it from a catch block.
  both.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::string what = "unknown error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = utf8Prefix(e.what(), 300);
      } catch (...) {
      }
      log::error("internal error serving {} {}: {}", utf8Prefix(req.method, 16),
                 utf8Prefix(req.path, 200), what);
      sendJson(res, 500, Json{{"error", "internal error: " + what}});
    } catch (...) {
      sendJson(res, 500, Json::object());
    }
  });
}

}  // namespace tw
