// The one client-side file that includes httplib: every httplib error and
// exception becomes a Status here.
#include "tw/http_client.h"

#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <exception>
#include <fstream>
#include <thread>

namespace tw {

namespace {

constexpr size_t kMaxBodyInMessage = 200;

struct BaseUrl {
  std::string scheme;
  std::string host;  // without [] for IPv6 literals
  int port = 0;
  std::string prefix;  // "" or "/some/prefix" (no trailing slash)
};

Result<BaseUrl> parseBaseUrl(const std::string& url) {
  auto bad = [&url](const std::string& why) {
    return invalidArgument("bad controller URL '" + url + "': " + why +
                           " (expected http://HOST[:PORT])");
  };
  BaseUrl out;
  size_t sep = url.find("://");
  if (sep == std::string::npos) return bad("no scheme");
  out.scheme = url.substr(0, sep);
  if (out.scheme != "http" && out.scheme != "https") {
    return bad("scheme '" + out.scheme + "' is not http or https");
  }
  std::string rest = url.substr(sep + 3);
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.prefix = rest.substr(slash);
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  if (out.prefix.find_first_of("?#") != std::string::npos) return bad("query or fragment");
  if (authority.find('@') != std::string::npos) return bad("user info is not supported");

  std::string port_text;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return bad("unclosed '['");
    out.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("junk after ']'");
      port_text = after.substr(1);
      if (port_text.empty()) return bad("empty port");
    }
  } else {
    size_t colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return bad("empty port");
    }
  }
  if (out.host.empty()) return bad("no host");
  if (port_text.empty()) {
    out.port = out.scheme == "https" ? 443 : 80;
  } else {
    if (port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(),
                     [](unsigned char c) { return std::isdigit(c) != 0; })) {
      return bad("port '" + port_text + "' is not a number");
    }
    out.port = std::stoi(port_text);
    if (out.port < 1 || out.port > 65535) return bad("port out of range");
  }
  return out;
}

std::string firstLine(const std::string& text) {
  std::string line = text.substr(0, text.find_first_of("\r\n"));
  if (line.size() > kMaxBodyInMessage) line = line.substr(0, kMaxBodyInMessage) + "...";
  return line;
}

Code codeForHttp(int http_status) {
  switch (http_status) {
    case 400:
      return Code::kInvalidArgument;
    case 401:
      return Code::kPermissionDenied;
    case 403:
      return Code::kForbidden;
    case 404:
      return Code::kNotFound;
    case 409:
      return Code::kFailedPrecondition;
    case 503:
      return Code::kUnavailable;
    default:
      return Code::kInternal;
  }
}

const char* httpReason(int http_status) {
  switch (http_status) {
    case 400:
      return "bad request";
    case 401:
      return "missing or wrong token";
    case 403:
      return "forbidden";
    case 404:
      return "not found";
    case 405:
      return "method not allowed";
    case 409:
      return "conflict";
    case 500:
      return "internal server error";
    case 502:
      return "bad gateway";
    case 503:
      return "service unavailable";
    case 504:
      return "gateway timeout";
    default:
      return "unexpected status";
  }
}

std::string dumpJson(const Json& j) {
  // replace: a stray invalid UTF-8 byte must not throw.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

bool resolves(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (found != nullptr) freeaddrinfo(found);
  return rc == 0;
}

std::string transportError(httplib::Error error, const std::string& host, Millis connect_ms,
                           Millis read_ms) {
  switch (error) {
    case httplib::Error::Connection:
      // httplib reports a failed name lookup and a refused connect alike.
      if (!resolves(host)) return "cannot resolve host '" + host + "'";
      return "connection refused";
    case httplib::Error::ConnectionTimeout:
      return "no connection within " + std::to_string(connect_ms) + " ms";
    case httplib::Error::Read:
      return "no answer within " + std::to_string(read_ms) + " ms (or the connection was closed)";
    case httplib::Error::Write:
      return "sending the request failed";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load TLS certificates";
    case httplib::Error::SSLServerVerification:
      return "its TLS certificate is not signed by the trusted CA, or does not name '" + host +
             "' (pass the controller's CA, <state-dir>/tls/ca.pem, with --ca; the names are "
             "init's --san)";
    default:
      return "request failed (" + httplib::to_string(error) + ")";
  }
}

// Builds a ms timeout in the (seconds, microseconds) form httplib takes.
std::pair<time_t, time_t> splitMs(Millis ms) {
  ms = std::max<Millis>(ms, 1);
  return {static_cast<time_t>(ms / 1000), static_cast<time_t>((ms % 1000) * 1000)};
}

}  // namespace

namespace {

// "a,b,c" -> its URLs, trailing slashes cut. Errors: kInvalidArgument for an
// empty element, a bad URL or mixed schemes.
Result<std::vector<std::string>> splitBaseUrls(const std::string& text) {
  std::vector<std::string> out;
  std::string scheme;
  size_t from = 0;
  for (;;) {
    size_t comma = text.find(',', from);
    std::string url = text.substr(from, comma == std::string::npos ? std::string::npos : comma - from);
    if (url.empty()) {
      return invalidArgument("bad controller URL list '" + text + "': an empty element (expected URL[,URL...])");
    }
    Result<BaseUrl> parsed = parseBaseUrl(url);
    if (!parsed.isOk()) return parsed.status();
    if (!scheme.empty() && parsed->scheme != scheme) {
      return invalidArgument("bad controller URL list '" + text + "': all URLs must use one scheme (" + scheme +
                             " and " + parsed->scheme + ")");
    }
    scheme = parsed->scheme;
    while (url.size() > 1 && url.back() == '/') url.pop_back();
    out.push_back(url);
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  return out;
}

// scheme://host:port of a URL, for comparing a Location with the list.
std::string originOf(const BaseUrl& url) {
  return url.scheme + "://" + url.host + ":" + std::to_string(url.port);
}

}  // namespace

Status checkBaseUrl(const std::string& url) { return splitBaseUrls(url).status(); }

Status checkTlsFiles(const ApiClientOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return invalidArgument("a client certificate needs its key, and a key its certificate (--cert, --key)");
  }
  for (const std::string* path : {&options.ca_file, &options.cert_file, &options.key_file}) {
    if (path->empty()) continue;
    std::ifstream in(*path);
    if (!in) return invalidArgument("cannot read TLS file " + *path);
  }
  return Status::ok();
}

std::string urlEncode(const std::string& segment) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(segment.size());
  for (unsigned char c : segment) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

Status statusFromHttp(int http_status, const std::string& body, const std::string& what) {
  Code code = codeForHttp(http_status);
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    std::string message = j["error"].get<std::string>();
    SourceLocation where;
    if (j.contains("file") && j["file"].is_string()) where.file = j["file"].get<std::string>();
    if (j.contains("line") && j["line"].is_number_integer()) where.line = j["line"].get<int>();
    if (j.contains("column") && j["column"].is_number_integer()) {
      where.column = j["column"].get<int>();
    }
    if (where.file.empty() && !where.known()) return Status(code, message);
    // Do not repeat the position when the server already put it in the text.
    std::string prefix = where.str() + ": ";
    if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
    return Status(code, message, where);
  }
  std::string message =
      what + ": HTTP " + std::to_string(http_status) + " " + httpReason(http_status);
  std::string line = firstLine(body);
  if (!line.empty()) message += ": " + line;
  return Status(code, message);
}

struct ApiClient::Impl {
  Impl(const BaseUrl& url, const ApiClientOptions& options)
      : client(url.scheme + "://" +
                   (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host) + ":" +
                   std::to_string(url.port),
               url.scheme == "https" ? options.cert_file : std::string(),
               url.scheme == "https" ? options.key_file : std::string()),
        host(url.host),
        prefix(url.prefix) {
    if (url.scheme == "https") {
      // The chain to the CA and the host name (SANs) are checked by httplib.
      client.enable_server_certificate_verification(true);
      if (!options.ca_file.empty()) client.set_ca_cert_path(options.ca_file);
    }
  }

  httplib::Client client;
  std::string host;
  std::string prefix;
};

namespace {

// The client of one URL, set up as ApiClientOptions say.
Status setUp(httplib::Client& client, const std::string& token, const ApiClientOptions& options) {
  auto [connect_s, connect_us] = splitMs(options.connect_timeout_ms);
  client.set_connection_timeout(connect_s, connect_us);
  auto [read_s, read_us] = splitMs(options.read_timeout_ms);
  client.set_read_timeout(read_s, read_us);
  client.set_write_timeout(read_s, read_us);
  // Callers encode path segments themselves (urlEncode).
  client.set_url_encode(false);
  client.set_keep_alive(options.keep_alive);
  // httplib binds the socket to the interface's address, or to the string
  // itself when no interface has that name (a numeric address).
  if (!options.source_address.empty()) client.set_interface(options.source_address);
  // httplib writes a request's head and body separately: with Nagle on, a
  // kept-alive connection's body waited for the ACK of the head, which the
  // server delays (≈ 40 ms each way; heartbeats took ≈ 90 ms on loopback,
  // bench/tls_heartbeat).
  client.set_tcp_nodelay(true);
  client.set_default_headers({{"Accept", "application/json"}});
  // A follower's 307 is followed by ApiClient itself (same scheme, once).
  client.set_follow_location(false);
  if (!token.empty()) client.set_bearer_token_auth(token);
  return Status::ok();
}

}  // namespace

struct ApiClient::Attempt {
  bool delivered = true;  // false: the request surely did not reach the server
  Status transport;       // not ok: no answer
  int http_status = 0;
  std::string body;
  std::string location;   // of a 3xx
};

ApiClient::ApiClient(ApiClientOptions options) : options_(std::move(options)) {
  Result<std::vector<std::string>> urls = splitBaseUrls(options_.base_url);
  if (!urls.isOk()) {
    url_status_ = urls.status();
    return;
  }
  if (Status tls = checkTlsFiles(options_); !tls.isOk()) {
    url_status_ = tls;
    return;
  }
  urls_ = std::move(*urls);
  try {
    for (const auto& url : urls_) {
      auto impl = std::make_unique<Impl>(*parseBaseUrl(url), options_);
      (void)setUp(impl->client, options_.token, options_);
      impls_.push_back(std::move(impl));
    }
  } catch (const std::exception& e) {
    impls_.clear();
    url_status_ = invalidArgument("bad controller URL '" + options_.base_url + "': " + e.what());
  }
}

ApiClient::~ApiClient() = default;

std::string ApiClient::baseUrl() const {
  if (urls_.empty()) return options_.base_url;
  return urls_[current_.load() % urls_.size()];
}

Result<Json> ApiClient::get(const std::string& path) {
  return send("GET", path, nullptr, options_.read_timeout_ms);
}

Result<Json> ApiClient::get(const std::string& path, Millis read_timeout_ms) {
  return send("GET", path, nullptr, read_timeout_ms);
}

Result<Json> ApiClient::post(const std::string& path, const Json& body) {
  return send("POST", path, &body, options_.read_timeout_ms);
}

ApiClient::Attempt ApiClient::attempt(Impl& impl, const std::string& url, const char* method,
                                      const std::string& full_path, const Json* body,
                                      Millis read_timeout_ms) {
  Attempt out;
  httplib::Result answer{nullptr, httplib::Error::Unknown};
  try {
    auto [read_s, read_us] = splitMs(read_timeout_ms);
    impl.client.set_read_timeout(read_s, read_us);
    if (body != nullptr) {
      std::string text = body->is_null() ? std::string() : dumpJson(*body);
      answer = impl.client.Post(full_path, text, "application/json");
    } else {
      answer = impl.client.Get(full_path);
    }
  } catch (const std::exception& e) {
    out.transport = internalError(std::string(method) + " " + full_path + ": " + e.what());
    return out;
  }
  if (!answer) {
    const httplib::Error error = answer.error();
    out.delivered = !(error == httplib::Error::Connection || error == httplib::Error::ConnectionTimeout ||
                      error == httplib::Error::SSLConnection || error == httplib::Error::SSLServerVerification ||
                      error == httplib::Error::SSLLoadingCerts);
    out.transport = unavailable(
        "controller unreachable: cannot reach it at " + url + ": " +
        transportError(error, impl.host, options_.connect_timeout_ms, read_timeout_ms) +
        // TLS 1.3: a refused client certificate shows as a closed connection.
        (error == httplib::Error::Read && url.rfind("https://", 0) == 0
             ? std::string("; over TLS this is also how a refused client certificate shows")
             : std::string()));
    return out;
  }
  out.http_status = answer->status;
  out.body = std::move(answer->body);
  if (answer->has_header("Location")) out.location = answer->get_header_value("Location");
  return out;
}

namespace {

Result<Json> resultOf(int http_status, const std::string& body, const std::string& what) {
  if (http_status < 200 || http_status > 299) return statusFromHttp(http_status, body, what);
  if (body.empty()) return Json();
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return internalError(what + ": the controller's answer is not JSON: " + firstLine(body));
  }
  return j;
}

// A follower's 503 (controller/leader_redirect.h): {"leader": null, ...}.
// Nothing was done; another replica may lead.
bool knowsNoLeader(const std::string& body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("leader") && j["leader"].is_null();
}

}  // namespace

Result<Json> ApiClient::follow(const Attempt& redirect, const std::string& from_url, const char* method,
                               const std::string& path, const Json* body, Millis read_timeout_ms,
                               bool& no_leader) {
  const std::string what = std::string(method) + " " + path;
  // An absolute Location: its origin (scheme://host:port), then its path and query.
  const size_t scheme_end = redirect.location.find("://");
  const size_t slash =
      scheme_end == std::string::npos ? std::string::npos : redirect.location.find('/', scheme_end + 3);
  const std::string origin = redirect.location.substr(0, slash);
  const std::string full_path = slash == std::string::npos ? "/" : redirect.location.substr(slash);
  Result<BaseUrl> from = parseBaseUrl(from_url);
  Result<BaseUrl> to = scheme_end == std::string::npos ? Result<BaseUrl>(invalidArgument("relative"))
                                                        : parseBaseUrl(origin);
  if (!to.isOk()) {
    return unavailable(what + ": " + from_url + " redirected to a bad Location '" + redirect.location + "'");
  }
  if (!from.isOk() || to->scheme != from->scheme) {
    return unavailable(what + ": " + from_url + " redirected to '" + redirect.location +
                       "', another scheme: not followed");
  }
  // One of ours: its client (its kept-alive connection) and it is remembered.
  for (size_t i = 0; i < urls_.size(); ++i) {
    Result<BaseUrl> mine = parseBaseUrl(urls_[i]);
    if (!mine.isOk() || originOf(*mine) != originOf(*to)) continue;
    Attempt a = attempt(*impls_[i], urls_[i], method, full_path, body, read_timeout_ms);
    last_http_status_ = a.http_status;
    if (!a.transport.isOk()) return a.transport;
    if (a.http_status >= 300 && a.http_status <= 399) {
      return unavailable(what + ": redirected twice (" + from_url + ", then " + urls_[i] + "): not followed");
    }
    no_leader = a.http_status == 503 && knowsNoLeader(a.body);
    current_ = i;
    return resultOf(a.http_status, a.body, what);
  }
  // Not in the list: a client for this one request, with the same token and TLS files.
  Impl once(*to, options_);
  (void)setUp(once.client, options_.token, options_);
  Attempt a = attempt(once, origin, method, full_path, body, read_timeout_ms);
  last_http_status_ = a.http_status;
  if (!a.transport.isOk()) return a.transport;
  if (a.http_status >= 300 && a.http_status <= 399) {
    return unavailable(what + ": redirected twice (" + from_url + ", then " + origin + "): not followed");
  }
  no_leader = a.http_status == 503 && knowsNoLeader(a.body);
  return resultOf(a.http_status, a.body, what);
}

Result<Json> ApiClient::send(const char* method, const std::string& path, const Json* body,
                             Millis read_timeout_ms) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.no_leader_retry_ms);
  for (;;) {
    bool no_leader = false;
    Result<Json> r = sendOnce(method, path, body, read_timeout_ms, no_leader);
    last_no_leader_ = no_leader && !r.isOk();
    if (!no_leader || std::chrono::steady_clock::now() >= give_up) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

void ApiClient::moveOn() {
  const size_t n = urls_.size();
  if (n < 2) return;
  current_ = (current_.load() + 1) % n;
}

Result<Json> ApiClient::sendOnce(const char* method, const std::string& path, const Json* body,
                                 Millis read_timeout_ms, bool& no_leader) {
  last_http_status_ = 0;
  if (impls_.empty()) return url_status_;
  const std::string what = std::string(method) + " " + path;
  const size_t n = impls_.size();
  const size_t start = current_.load() % n;
  Result<Json> last = unavailable("no controller URL");
  for (size_t i = 0; i < n; ++i) {
    const size_t idx = (start + i) % n;
    Attempt a = attempt(*impls_[idx], urls_[idx], method, impls_[idx]->prefix + path, body, read_timeout_ms);
    last_http_status_ = a.http_status;
    if (!a.transport.isOk()) {
      last = a.transport;
      // Sent and maybe acted on: a change is not sent to another replica.
      if (a.delivered && body != nullptr) return last;
      continue;
    }
    if (a.http_status == 307 || a.http_status == 308) {
      Result<Json> followed = follow(a, urls_[idx], method, path, body, read_timeout_ms, no_leader);
      // A change may have reached the leader: it is not sent again.
      if (followed.isOk() || followed.status().code() != Code::kUnavailable || i + 1 == n || body != nullptr) {
        return followed;
      }
      last = followed;
      continue;
    }
    if (a.http_status == 503 && knowsNoLeader(a.body)) {  // another replica may lead
      last = resultOf(a.http_status, a.body, what);
      no_leader = true;
      if (i + 1 < n) continue;
      return last;
    }
    current_ = idx;
    return resultOf(a.http_status, a.body, what);
  }
  if (n > 1 && !last.isOk()) {
    return Status(last.status().code(),
                  "no controller of " + options_.base_url + " answered; the last: " + last.status().message());
  }
  return last;
}

// ------------------------------------------------------- HttpControllerLink ---

namespace {

std::string agentPath(const std::string& host, const std::string& leaf) {
  return "/api/v1/agents/" + urlEncode(host) + "/" + leaf;
}

Result<AssignmentSet> decodeAssignments(const Result<Json>& answer, const std::string& host) {
  if (!answer.isOk()) return answer.status();
  Result<AssignmentSet> set = decode<AssignmentSet>(*answer);
  if (!set.isOk()) {
    return internalError("controller sent a bad assignment set for host '" + host +
                         "': " + set.status().message());
  }
  return set;
}

}  // namespace

HttpControllerLink::HttpControllerLink(const ApiClientOptions& options)
    : heartbeat_client_([&] {
        ApiClientOptions o = options;
        o.keep_alive = true;
        return o;
      }()),
      event_client_(options),
      poll_client_(options),
      read_timeout_ms_(options.read_timeout_ms) {}

namespace {

// A replica answered and refused: a deposed leader's or a follower's 503
// ("term over", "nothing published", no leader), a fence intent's 409.
bool refusedByAReplica(int http_status) { return http_status == 503 || http_status == 409; }

}  // namespace

Result<AssignmentSet> HttpControllerLink::heartbeat(const Heartbeat& hb) {
  std::string digest;
  const Heartbeat sent = compact_.next(hb, &digest);
  Result<AssignmentSet> set = unavailable("not sent");
  if (sent.compact) {
    set = decodeAssignments(heartbeat_client_.post(agentPath(hb.host, "heartbeat/compact"), Json(sent)), hb.host);
    // Not answered (a report wanted, a controller without the route, no
    // controller): the full heartbeat, at once.
  }
  if (!set.isOk()) {
    if (sent.compact) compact_.refused();
    set = decodeAssignments(heartbeat_client_.post(agentPath(hb.host, "heartbeat"), Json(hb)), hb.host);
  }
  compact_.answered(digest, set.isOk());
  if (set.isOk() || set.status().code() != Code::kUnavailable || heartbeat_client_.urlCount() < 2) return set;
  // One replica refused it (a deposed leader: its term is over): it is not
  // asked for the renewal, the next replica is. (When every replica said
  // "no leader", the renewal goes to the one the list starts at.)
  if (refusedByAReplica(heartbeat_client_.lastHttpStatus()) && !heartbeat_client_.lastKnewNoLeader()) {
    heartbeat_client_.moveOn();
  }
  // No leader answered: once more to whichever replica answers, which then
  // renews the lease itself (docs/ha.md, "Agents renew their leases with any
  // replica"). Without the events: a follower takes none, and the agent
  // keeps them for the leader (AssignmentSet::renewed_by).
  Heartbeat renew = hb;
  renew.events.clear();
  Result<AssignmentSet> renewed =
      decodeAssignments(heartbeat_client_.post(agentPath(hb.host, "heartbeat") + "?any_replica=1", Json(renew)), hb.host);
  // Refused there too (nothing published, a fence intent): the next
  // heartbeat, at its own interval, starts at the replica after it.
  if (!renewed.isOk() && refusedByAReplica(heartbeat_client_.lastHttpStatus())) heartbeat_client_.moveOn();
  return renewed.isOk() ? renewed : set;
}

void HttpControllerLink::refusedAnswer(bool pushed) {
  if (pushed) {
    poll_client_.moveOn();
  } else {
    heartbeat_client_.moveOn();
  }
}

Status HttpControllerLink::sendEvent(const AgentEvent& event) {
  Json body = event;
  return event_client_.post(agentPath(event.host, "events"), body).status();
}

Result<AssignmentSet> HttpControllerLink::waitAssignments(const std::string& host,
                                                          int64_t after_version, Millis wait_ms) {
  wait_ms = std::max<Millis>(wait_ms, 0);
  std::lock_guard<std::mutex> lock(poll_mu_);
  std::string path = agentPath(host, "assignments") + "?after=" + std::to_string(after_version) +
                     "&wait_ms=" + std::to_string(wait_ms);
  if (!poll_peers_digest_.empty()) path += "&peers_digest=" + poll_peers_digest_;
  Result<AssignmentSet> set = decodeAssignments(poll_client_.get(path, wait_ms + read_timeout_ms_), host);
  if (set.isOk() && !set->peers_omitted) poll_peers_digest_ = set->peers_digest;
  return set;
}

}  // namespace tw
