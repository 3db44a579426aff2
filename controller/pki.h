// The cluster's small certificate authority (docs/auth.md, "TLS"): an EC
// P-256 CA that `tierwarden-controller init` makes, the controller's server
// certificate and each host's client certificate (CN = host name) that
// `issue-host` writes. OpenSSL's C API, used here and in auth.cc only.
#pragma once

#include <string>
#include <vector>

#include "tw/status.h"

typedef struct ssl_st SSL;

namespace tw {

// A private key and its certificate, both PEM.
struct KeyAndCert {
  std::string key_pem;
  std::string cert_pem;
};

// A self-signed CA ("CN = <cn>"), valid for `days`. Errors: kInternal.
Result<KeyAndCert> makeCa(const std::string& cn, int days);

// kServerAndClient: both extended key usages, for a server that is also
// its own client (an etcd member with --client-cert-auth: its JSON gateway
// dials the member's gRPC side with the member's own certificate).
enum class CertUse { kServer, kClient, kServerAndClient };

// A certificate for `cn` signed by `ca`, valid for `days`, with a key of its
// own. `sans`: DNS names or IP addresses (an entry that parses as an IPv4 or
// IPv6 address is an IP SAN). Errors: kInvalidArgument (a bad CA PEM, a SAN
// that is neither), kInternal.
Result<KeyAndCert> issueCert(const KeyAndCert& ca, const std::string& cn,
                             const std::vector<std::string>& sans, CertUse use, int days);

// The CN of a PEM certificate. Errors: kInvalidArgument.
Result<std::string> certCommonName(const std::string& cert_pem);

// The CN of the certificate the peer of `ssl` presented (verified by the
// handshake); "" when it presented none.
std::string peerCommonName(const SSL* ssl);

// The paths of the controller's TLS files in the state dir.
struct TlsPaths {
  explicit TlsPaths(const std::string& state_dir);
  std::string dir;          // <state-dir>/tls
  std::string ca_cert;      // ca.pem
  std::string ca_key;       // ca.key (0600)
  std::string server_cert;  // controller.pem
  std::string server_key;   // controller.key (0600)
};

// `tierwarden-controller init`: the CA and the controller's certificate
// (SANs `sans`; when empty, this machine's hostname, localhost and
// 127.0.0.1). Refuses (kFailedPrecondition) when the CA exists already.
Status initPki(const TlsPaths& paths, std::vector<std::string> sans);

// Writes host `name`'s bundle files into `out_dir` when the state dir has a
// CA: ca.pem, host.pem (CN = name), host.key (0600). Returns false (and
// writes nothing) when there is no CA.
Result<bool> writeHostCert(const TlsPaths& paths, const std::string& name, const std::string& out_dir);

}  // namespace tw
