// HttpEtcdClient: tw::EtcdClient over etcd's v3 JSON gateway with cpp-httplib.
// The gateway's JSON is protobuf's: bytes are base64, int64 are strings, and
// fields at their default value (false, 0, "") are left out of answers.
// Errors of the gateway come as {"error": ..., "code": <gRPC code>, ...}.
#include "tw/etcd_client.h"

#include <httplib.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <utility>

#include "tw/json.h"
#include "tw/log.h"

namespace tw {

// ------------------------------------------------------------- helpers ---

EtcdCompare EtcdCompare::createRevisionIs(std::string key, int64_t revision) {
  EtcdCompare c;
  c.key = std::move(key);
  c.target = Target::kCreate;
  c.number = revision;
  return c;
}

EtcdCompare EtcdCompare::modRevisionIs(std::string key, int64_t revision) {
  EtcdCompare c;
  c.key = std::move(key);
  c.target = Target::kMod;
  c.number = revision;
  return c;
}

EtcdCompare EtcdCompare::valueIs(std::string key, std::string value) {
  EtcdCompare c;
  c.key = std::move(key);
  c.target = Target::kValue;
  c.value = std::move(value);
  return c;
}

EtcdOp EtcdOp::put(std::string key, std::string value, int64_t lease) {
  EtcdOp op;
  op.kind = Kind::kPut;
  op.key = std::move(key);
  op.value = std::move(value);
  op.lease = lease;
  return op;
}

EtcdOp EtcdOp::del(std::string key, std::string range_end) {
  EtcdOp op;
  op.kind = Kind::kDelete;
  op.key = std::move(key);
  op.range_end = std::move(range_end);
  return op;
}

EtcdOp EtcdOp::range(std::string key, std::string range_end) {
  EtcdOp op;
  op.kind = Kind::kRange;
  op.key = std::move(key);
  op.range_end = std::move(range_end);
  return op;
}

std::string etcdPrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64Encode(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t n = (static_cast<unsigned char>(bytes[i]) << 16) |
                 (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                 static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<std::string> base64Decode(const std::string& text) {
  std::array<int, 256> value{};
  value.fill(-1);
  for (int i = 0; i < 64; ++i) value[static_cast<unsigned char>(kAlphabet[i])] = i;
  if (text.size() % 4 != 0) return invalidArgument("base64 text of " + std::to_string(text.size()) + " characters is not a multiple of 4");
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int pad = 0;
    uint32_t n = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
        n <<= 6;
        continue;
      }
      int v = value[static_cast<unsigned char>(c)];
      if (v < 0 || pad > 0) return invalidArgument("bad base64 at character " + std::to_string(i + k));
      n = (n << 6) | static_cast<uint32_t>(v);
    }
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

Result<std::vector<std::string>> parseEtcdStoreUrl(const std::string& url) {
  const std::string scheme = "etcd://";
  auto bad = [&](const std::string& why) {
    return invalidArgument("bad etcd store URL '" + url + "': " + why +
                           " (expected etcd://HOST[:PORT][,HOST[:PORT]...])");
  };
  if (url.rfind(scheme, 0) != 0) return bad("it does not start with etcd://");
  std::string rest = url.substr(scheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty()) return bad("no member given");
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    std::string member = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (member.empty()) return bad("an empty member");
    if (member.find_first_of("/?#@ ") != std::string::npos) return bad("member '" + member + "' is not HOST[:PORT]");
    std::string host = member;
    std::string port = "2379";
    if (member.front() == '[') {  // [v6]:port
      size_t close = member.find(']');
      if (close == std::string::npos) return bad("member '" + member + "' has no ']'");
      host = member.substr(0, close + 1);
      if (close + 1 < member.size()) {
        if (member[close + 1] != ':') return bad("member '" + member + "' is not [HOST]:PORT");
        port = member.substr(close + 2);
      }
    } else if (size_t colon = member.rfind(':'); colon != std::string::npos) {
      host = member.substr(0, colon);
      port = member.substr(colon + 1);
    }
    if (host.empty()) return bad("member '" + member + "' has no host");
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) == 0 || std::stoi(port) > 65535) {
      return bad("member '" + member + "' has a bad port");
    }
    out.push_back("http://" + host + ":" + port);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

namespace {

std::string int64Text(int64_t v) { return std::to_string(v); }

// The gateway sends int64 as strings, and leaves out zeros.
int64_t int64Field(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  return 0;
}

Result<std::string> bytesField(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return std::string();
  return base64Decode(it->get<std::string>());
}

Result<EtcdRangeResult> decodeRange(const Json& j) {
  EtcdRangeResult out;
  if (auto h = j.find("header"); h != j.end()) out.revision = int64Field(*h, "revision");
  out.count = int64Field(j, "count");
  out.more = j.value("more", false);
  if (auto kvs = j.find("kvs"); kvs != j.end() && kvs->is_array()) {
    for (const Json& kv : *kvs) {
      EtcdKv e;
      Result<std::string> key = bytesField(kv, "key");
      Result<std::string> value = bytesField(kv, "value");
      if (!key.isOk()) return key.status();
      if (!value.isOk()) return value.status();
      e.key = std::move(*key);
      e.value = std::move(*value);
      e.create_revision = int64Field(kv, "create_revision");
      e.mod_revision = int64Field(kv, "mod_revision");
      e.version = int64Field(kv, "version");
      e.lease = int64Field(kv, "lease");
      out.kvs.push_back(std::move(e));
    }
  }
  return out;
}

Json encodeOp(const EtcdOp& op) {
  switch (op.kind) {
    case EtcdOp::Kind::kPut: {
      Json put{{"key", base64Encode(op.key)}, {"value", base64Encode(op.value)}};
      if (op.lease != 0) put["lease"] = int64Text(op.lease);
      return Json{{"request_put", put}};
    }
    case EtcdOp::Kind::kDelete: {
      Json del{{"key", base64Encode(op.key)}};
      if (!op.range_end.empty()) del["range_end"] = base64Encode(op.range_end);
      return Json{{"request_delete_range", del}};
    }
    case EtcdOp::Kind::kRange: {
      Json range{{"key", base64Encode(op.key)}};
      if (!op.range_end.empty()) range["range_end"] = base64Encode(op.range_end);
      return Json{{"request_range", range}};
    }
  }
  return Json();
}

Json encodeCompare(const EtcdCompare& c) {
  static const char* const kTargets[] = {"CREATE", "MOD", "VERSION", "VALUE"};
  static const char* const kResults[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  Json j{{"key", base64Encode(c.key)},
         {"target", kTargets[static_cast<int>(c.target)]},
         {"result", kResults[static_cast<int>(c.result)]}};
  switch (c.target) {
    case EtcdCompare::Target::kCreate: j["create_revision"] = int64Text(c.number); break;
    case EtcdCompare::Target::kMod: j["mod_revision"] = int64Text(c.number); break;
    case EtcdCompare::Target::kVersion: j["version"] = int64Text(c.number); break;
    case EtcdCompare::Target::kValue: j["value"] = base64Encode(c.value); break;
  }
  return j;
}

// gRPC status codes, as the gateway reports them.
Status statusFromGateway(int http_status, const std::string& body, const std::string& what) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string message = "HTTP " + std::to_string(http_status);
  int code = -1;
  if (j.is_object()) {
    if (j.contains("message") && j["message"].is_string()) message = j["message"].get<std::string>();
    else if (j.contains("error") && j["error"].is_string()) message = j["error"].get<std::string>();
    if (j.contains("code") && j["code"].is_number_integer()) code = j["code"].get<int>();
  }
  std::string text = "etcd " + what + ": " + message;
  if (message.find("too many operations in txn") != std::string::npos) {
    return invalidArgument(text + " (etcd's --max-txn-ops, 128 by default, bounds one transaction)");
  }
  if (message.find("request is too large") != std::string::npos ||
      message.find("larger than max") != std::string::npos) {
    return invalidArgument(text + " (etcd's --max-request-bytes, 1.5 MiB by default, bounds one request)");
  }
  switch (code) {
    case 3:  // INVALID_ARGUMENT
    case 11:  // OUT_OF_RANGE (a compacted revision)
      return invalidArgument(text);
    case 5:  // NOT_FOUND (a lease)
      return notFound(text);
    case 9:  // FAILED_PRECONDITION
      return failedPrecondition(text);
    case 7:   // PERMISSION_DENIED
    case 16:  // UNAUTHENTICATED
      return permissionDenied(text);
    case 4:   // DEADLINE_EXCEEDED
    case 8:   // RESOURCE_EXHAUSTED
    case 10:  // ABORTED
    case 14:  // UNAVAILABLE (no leader, ...)
      return unavailable(text);
    default:
      return http_status >= 500 ? unavailable(text) : internalError(text);
  }
}

class HttpEtcdClient final : public EtcdClient {
 public:
  explicit HttpEtcdClient(HttpEtcdOptions options) : options_(std::move(options)) {}

  Result<EtcdRangeResult> range(const std::string& key, const std::string& range_end,
                                int64_t limit, bool count_only) override {
    Json body{{"key", base64Encode(key)}};
    if (!range_end.empty()) body["range_end"] = base64Encode(range_end);
    if (limit > 0) body["limit"] = int64Text(limit);
    if (count_only) body["count_only"] = true;
    Result<Json> answer = call("/v3/kv/range", body, "range");
    if (!answer.isOk()) return answer.status();
    return decodeRange(*answer);
  }

  Result<int64_t> put(const std::string& key, const std::string& value, int64_t lease) override {
    Json body{{"key", base64Encode(key)}, {"value", base64Encode(value)}};
    if (lease != 0) body["lease"] = int64Text(lease);
    Result<Json> answer = call("/v3/kv/put", body, "put");
    if (!answer.isOk()) return answer.status();
    return int64Field(answer->value("header", Json::object()), "revision");
  }

  Result<int64_t> deleteRange(const std::string& key, const std::string& range_end) override {
    Json body{{"key", base64Encode(key)}};
    if (!range_end.empty()) body["range_end"] = base64Encode(range_end);
    Result<Json> answer = call("/v3/kv/deleterange", body, "delete");
    if (!answer.isOk()) return answer.status();
    return int64Field(*answer, "deleted");
  }

  Result<EtcdTxnResult> txn(const std::vector<EtcdCompare>& compares,
                            const std::vector<EtcdOp>& success,
                            const std::vector<EtcdOp>& failure) override {
    Json body{{"compare", Json::array()}, {"success", Json::array()}, {"failure", Json::array()}};
    for (const EtcdCompare& c : compares) body["compare"].push_back(encodeCompare(c));
    for (const EtcdOp& op : success) body["success"].push_back(encodeOp(op));
    for (const EtcdOp& op : failure) body["failure"].push_back(encodeOp(op));
    Result<Json> answer = call("/v3/kv/txn", body, "txn");
    if (!answer.isOk()) return answer.status();
    EtcdTxnResult out;
    out.succeeded = answer->value("succeeded", false);
    out.revision = int64Field(answer->value("header", Json::object()), "revision");
    if (auto responses = answer->find("responses"); responses != answer->end() && responses->is_array()) {
      for (const Json& r : *responses) {
        if (auto range = r.find("response_range"); range != r.end()) {
          Result<EtcdRangeResult> decoded = decodeRange(*range);
          if (!decoded.isOk()) return decoded.status().withContext("etcd txn");
          out.ranges.push_back(std::move(*decoded));
        }
      }
    }
    return out;
  }

  Result<EtcdLease> leaseGrant(int64_t ttl_s) override {
    Result<Json> answer = call("/v3/lease/grant", Json{{"TTL", int64Text(ttl_s)}}, "lease grant");
    if (!answer.isOk()) return answer.status();
    if (answer->contains("error") && (*answer)["error"].is_string() &&
        !(*answer)["error"].get<std::string>().empty()) {
      return unavailable("etcd lease grant: " + (*answer)["error"].get<std::string>());
    }
    EtcdLease lease{int64Field(*answer, "ID"), int64Field(*answer, "TTL")};
    if (lease.id == 0 || lease.ttl_s <= 0) return internalError("etcd lease grant: answer without ID or TTL");
    return lease;
  }

  Result<int64_t> leaseKeepAlive(int64_t id) override {
    // A stream in gRPC; the gateway answers one request with one
    // {"result": {...}} line.
    Result<Json> answer = call("/v3/lease/keepalive", Json{{"ID", int64Text(id)}}, "lease keepalive");
    if (!answer.isOk()) return answer.status();
    if (auto error = answer->find("error"); error != answer->end() && error->is_object()) {
      return statusFromGateway(200, error->dump(), "lease keepalive");
    }
    return int64Field(answer->value("result", Json::object()), "TTL");
  }

  Status leaseRevoke(int64_t id) override {
    Result<Json> answer = call("/v3/lease/revoke", Json{{"ID", int64Text(id)}}, "lease revoke");
    if (!answer.isOk() && answer.status().code() != Code::kNotFound) return answer.status();
    return Status::ok();  // a lease that is gone already is revoked
  }

 private:
  // Sends to the current member; on a transport failure or "unavailable" from
  // it, tries every other member once.
  Result<Json> call(const std::string& path, const Json& body, const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (options_.endpoints.empty()) return invalidArgument("etcd: no endpoint configured");
    const std::string text = jsonText(body);
    Status last;
    for (size_t attempt = 0; attempt < options_.endpoints.size(); ++attempt) {
      const std::string& endpoint = options_.endpoints[current_];
      Result<Json> answer = callOne(endpoint, path, text, what);
      if (answer.isOk() || answer.status().code() != Code::kUnavailable) return answer;
      last = answer.status();
      if (options_.endpoints.size() > 1) {
        log::debug("etcd member {} failed ({}); trying the next", endpoint, last.toString());
      }
      current_ = (current_ + 1) % options_.endpoints.size();
      client_.reset();
    }
    return last;
  }

  Result<Json> callOne(const std::string& endpoint, const std::string& path, const std::string& text,
                       const std::string& what) {
    httplib::Result answer{nullptr, httplib::Error::Unknown};
    int http_status = 0;
    std::string body;
    try {
      if (!client_) {
        const bool tls = endpoint.rfind("https://", 0) == 0;
        client_ = std::make_unique<httplib::Client>(endpoint, tls ? options_.cert_file : std::string(),
                                                    tls ? options_.key_file : std::string());
        if (tls) {
          // The chain to the CA and the member's name (its SANs) are checked.
          client_->enable_server_certificate_verification(true);
          client_->set_ca_cert_path(options_.ca_file);
        }
        auto split = [](Millis ms) { return std::pair<time_t, time_t>(ms / 1000, (ms % 1000) * 1000); };
        auto [cs, cus] = split(options_.connect_timeout_ms);
        auto [rs, rus] = split(options_.request_timeout_ms);
        client_->set_connection_timeout(cs, cus);
        client_->set_read_timeout(rs, rus);
        client_->set_write_timeout(rs, rus);
        client_->set_keep_alive(true);
        // httplib writes the headers and the body separately: without
        // TCP_NODELAY, Nagle holds the body until the delayed ACK (~40 ms a
        // request, measured by bench/etcd_store).
        client_->set_tcp_nodelay(true);
      }
      // The gateway sends its errors chunked with an HTTP trailer
      // (Grpc-Trailer-Content-Type), which cpp-httplib 0.11 cannot parse: it
      // reports a read error after the whole body came. So the body is
      // collected here as it arrives, and a read error after a complete JSON
      // error body is that error.
      httplib::Request req;
      req.method = "POST";
      req.path = path;
      req.headers = {{"Content-Type", "application/json"}};
      req.body = text;
      req.response_handler = [&](const httplib::Response& r) {
        http_status = r.status;
        return true;
      };
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        body.append(data, n);
        return true;
      };
      answer = client_->send(req);
    } catch (const std::exception& e) {
      client_.reset();
      return invalidArgument("etcd endpoint '" + endpoint + "': " + e.what());
    }
    if (!answer) {
      client_.reset();
      Json partial = Json::parse(body, nullptr, /*allow_exceptions=*/false);
      if (answer.error() == httplib::Error::Read && http_status >= 400 && partial.is_object() &&
          partial.contains("code")) {
        return statusFromGateway(http_status, body, what + " at " + endpoint);
      }
      return unavailable("etcd " + what + ": cannot reach " + endpoint + ": " +
                         httplib::to_string(answer.error()));
    }
    if (http_status < 200 || http_status > 299) {
      return statusFromGateway(http_status, body, what + " at " + endpoint);
    }
    Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return internalError("etcd " + what + " at " + endpoint + ": the answer is not a JSON object");
    }
    return j;
  }

  const HttpEtcdOptions options_;
  std::mutex mu_;  // one request at a time; guards current_ and client_
  size_t current_ = 0;
  std::unique_ptr<httplib::Client> client_;
};

}  // namespace

namespace {

// The first PEM object of `path` that `read` can read, or an error naming
// the file and what it should hold.
template <typename T, typename Read, typename Free>
Result<std::unique_ptr<T, Free>> readPem(const std::string& path, const std::string& flag, const char* what,
                                         Read read, Free free_fn) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "r"), &std::fclose);
  if (!f) return invalidArgument(flag + " " + path + ": cannot read it: " + std::strerror(errno));
  T* obj = read(f.get(), nullptr, nullptr, nullptr);
  ERR_clear_error();
  if (obj == nullptr) return invalidArgument(flag + " " + path + ": holds no PEM " + what);
  return std::unique_ptr<T, Free>(obj, free_fn);
}

}  // namespace

Status checkEtcdTlsFiles(const HttpEtcdOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return invalidArgument("--etcd-cert and --etcd-key go together (a client certificate and its key)");
  }
  if (options.ca_file.empty()) {
    if (!options.cert_file.empty()) {
      return invalidArgument("--etcd-cert needs --etcd-cacert (TLS to etcd is on only with the CA that signed "
                             "the members' certificates)");
    }
    return Status::ok();
  }
  auto ca = readPem<X509>(options.ca_file, "--etcd-cacert", "certificate", &PEM_read_X509, &X509_free);
  if (!ca.isOk()) return ca.status();
  if (options.cert_file.empty()) return Status::ok();
  auto cert = readPem<X509>(options.cert_file, "--etcd-cert", "certificate", &PEM_read_X509, &X509_free);
  if (!cert.isOk()) return cert.status();
  auto key = readPem<EVP_PKEY>(options.key_file, "--etcd-key", "private key", &PEM_read_PrivateKey, &EVP_PKEY_free);
  if (!key.isOk()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return invalidArgument("--etcd-key " + options.key_file + " is not the key of --etcd-cert " + options.cert_file);
  }
  return Status::ok();
}

Result<std::unique_ptr<EtcdClient>> makeHttpEtcdClient(const HttpEtcdOptions& given) {
  if (given.endpoints.empty()) return invalidArgument("etcd: no endpoint given");
  TW_RETURN_IF_ERROR(checkEtcdTlsFiles(given));
  HttpEtcdOptions options = given;
  const bool tls = !options.ca_file.empty();
  for (std::string& e : options.endpoints) {
    if (tls && e.rfind("http://", 0) == 0) e = "https://" + e.substr(7);
    if (e.rfind(tls ? "https://" : "http://", 0) != 0) {
      return invalidArgument("etcd endpoint '" + e + "' is not " + (tls ? "https" : "http") +
                             "://HOST:PORT" + (tls ? "" : " (for TLS give --etcd-cacert)"));
    }
  }
  return std::unique_ptr<EtcdClient>(std::make_unique<HttpEtcdClient>(options));
}

}  // namespace tw
