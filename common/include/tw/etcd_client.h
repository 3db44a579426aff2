// A small client of etcd 3's v3 API, through its JSON gateway (grpc-gateway,
// served by etcd 3.4 at <client-url>/v3/...): range, put, delete, txn, and
// leases. Keys and values are raw bytes here; the HTTP implementation does the
// base64 and the int64-as-string of the gateway's JSON.
//
// EtcdClient is an interface so that tests and the simulator use
// FakeEtcdClient (tw/fake_etcd.h) with the same semantics. HttpEtcdClient
// (makeHttpEtcdClient) is the one file that speaks HTTP to etcd.
//
// Threads: an HttpEtcdClient serializes its calls (one request at a time); the
// leader lease's renewals use a client of their own so that they never wait
// behind the store's transactions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/status.h"

namespace tw {

// etcd's defaults (etcd 3.4): a txn may hold at most 128 operations
// (--max-txn-ops) and a request at most 1.5 MiB (--max-request-bytes).
inline constexpr int kEtcdDefaultMaxTxnOps = 128;
inline constexpr int64_t kEtcdDefaultMaxRequestBytes = 1536 * 1024;

struct EtcdKv {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

struct EtcdRangeResult {
  std::vector<EtcdKv> kvs;  // by key (byte order); empty with count_only
  int64_t count = 0;        // keys in the range (not only those returned)
  bool more = false;        // the limit cut the answer short
  int64_t revision = 0;     // the store's revision when it answered
};

// One condition of a txn: `target` of `key` compared with a number
// (create/mod revision, version) or with `value`. A key that does not exist
// has create_revision 0, mod_revision 0 and version 0.
struct EtcdCompare {
  enum class Target { kCreate, kMod, kVersion, kValue };
  enum class Result { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kCreate;
  Result result = Result::kEqual;
  int64_t number = 0;  // for kCreate, kMod, kVersion
  std::string value;   // for kValue

  static EtcdCompare createRevisionIs(std::string key, int64_t revision);
  static EtcdCompare modRevisionIs(std::string key, int64_t revision);
  static EtcdCompare valueIs(std::string key, std::string value);
};

// One operation of a txn branch.
struct EtcdOp {
  enum class Kind { kPut, kDelete, kRange };
  Kind kind = Kind::kPut;
  std::string key;
  std::string range_end;  // kDelete/kRange: empty = the one key
  std::string value;      // kPut
  int64_t lease = 0;      // kPut: 0 = none

  static EtcdOp put(std::string key, std::string value, int64_t lease = 0);
  static EtcdOp del(std::string key, std::string range_end = {});
  static EtcdOp range(std::string key, std::string range_end = {});
};

struct EtcdTxnResult {
  bool succeeded = false;  // the compares held: the success branch ran
  int64_t revision = 0;    // the store's revision after the txn
  // One entry per kRange op of the branch that ran, in order.
  std::vector<EtcdRangeResult> ranges;
};

struct EtcdLease {
  int64_t id = 0;
  int64_t ttl_s = 0;  // as granted (etcd may raise a small TTL to its minimum)
};

class EtcdClient {
 public:
  virtual ~EtcdClient() = default;

  // Keys in [key, range_end) (range_end empty: the one key; "\0": every key
  // >= key), at most `limit` (0 = no limit). Linearizable.
  virtual Result<EtcdRangeResult> range(const std::string& key, const std::string& range_end,
                                        int64_t limit = 0, bool count_only = false) = 0;
  // Returns the store's revision after the put.
  virtual Result<int64_t> put(const std::string& key, const std::string& value,
                              int64_t lease = 0) = 0;
  // Returns how many keys were deleted.
  virtual Result<int64_t> deleteRange(const std::string& key, const std::string& range_end) = 0;
  // All of `compares` hold -> `success` runs, else `failure`; atomically.
  // Errors: kInvalidArgument when etcd refuses the request itself (too many
  // operations: see --max-txn-ops; too large: --max-request-bytes).
  virtual Result<EtcdTxnResult> txn(const std::vector<EtcdCompare>& compares,
                                    const std::vector<EtcdOp>& success,
                                    const std::vector<EtcdOp>& failure) = 0;

  virtual Result<EtcdLease> leaseGrant(int64_t ttl_s) = 0;
  // One keepalive: the lease's TTL again (seconds); 0 when the lease no longer
  // exists (expired or revoked).
  virtual Result<int64_t> leaseKeepAlive(int64_t id) = 0;
  // Revokes the lease and deletes the keys attached to it.
  virtual Status leaseRevoke(int64_t id) = 0;
};

// The end of the range of every key that starts with `prefix`.
std::string etcdPrefixEnd(const std::string& prefix);

struct HttpEtcdOptions {
  // Client URLs of the etcd members ("http://10.0.0.1:2379"); tried in turn:
  // a member that cannot be reached (or has no quorum) sends the request to
  // the next one.
  std::vector<std::string> endpoints;
  Millis connect_timeout_ms = 1000;
  Millis request_timeout_ms = 3000;
  // TLS, as etcdctl's --cacert/--cert/--key: with a CA file every endpoint
  // is spoken to over HTTPS (an http:// endpoint, as parseEtcdStoreUrl
  // makes them, becomes https://), the member's certificate is checked
  // against that CA and its host name against the certificate's SANs; cert
  // and key (both or neither) are this client's certificate, for a cluster
  // started with --client-cert-auth. No CA: plain HTTP, and cert/key are
  // refused.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// Checks the TLS files of `options` before any connection: each readable,
// the CA file holds at least one PEM certificate, the cert a certificate,
// the key a private key that belongs to that certificate.
// Errors: kInvalidArgument with a one-line reason naming the file.
Status checkEtcdTlsFiles(const HttpEtcdOptions& options);

// Parses "etcd://h1:2379,h2:2379" (the --store flag) into client URLs
// ("http://h1:2379", ...). A host without a port gets 2379.
// Errors: kInvalidArgument naming the text and what was expected.
Result<std::vector<std::string>> parseEtcdStoreUrl(const std::string& url);

// Errors: kInvalidArgument for a bad endpoint or bad TLS files
// (checkEtcdTlsFiles).
Result<std::unique_ptr<EtcdClient>> makeHttpEtcdClient(const HttpEtcdOptions& options);

// Base64 (RFC 4648, with padding), as the gateway carries bytes.
std::string base64Encode(const std::string& bytes);
// Errors: kInvalidArgument on a character outside the alphabet or bad padding.
Result<std::string> base64Decode(const std::string& text);

}  // namespace tw
