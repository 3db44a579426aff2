#include "controller/pki.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "controller/state_guard.h"

namespace tw {

namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct ExtFree {
  void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// OpenSSL's error queue as one line (and emptied), for a message.
std::string sslError(const std::string& what) {
  std::string out = what;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    out += std::string(": ") + buf;
  }
  return out;
}

std::string pemOf(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return "";
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string pemOf(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) return "";
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

X509Ptr certFromPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr keyFromPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

bool isIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool validDnsName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  return s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
         std::string::npos;
}

Status addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, ExtFree> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return internalError(sslError("adding certificate extension '" + value + "'"));
  }
  return Status::ok();
}

// A new certificate for `key` named `cn`, valid from now for `days`; not
// signed yet (issuer: itself until the caller sets it).
Result<X509Ptr> newCert(EVP_PKEY* key, const std::string& cn, int days) {
  X509Ptr cert(X509_new());
  if (!cert) return internalError(sslError("X509_new"));
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return internalError(sslError("no random serial"));
  serial[0] &= 0x7f;  // positive
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(BN_bin2bn(serial, sizeof serial, nullptr), BN_free);
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) {
    return internalError(sslError("serial"));
  }
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);  // clocks a little behind
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) != 1) {
    return internalError(sslError("setting CN"));
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return internalError(sslError("X509_set_pubkey"));
  return cert;
}

Result<PkeyPtr> newKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return internalError(sslError("generating an EC P-256 key"));
  return key;
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return notFound("cannot read '" + path + "'");
  std::stringstream data;
  data << in.rdbuf();
  return data.str();
}

}  // namespace

Result<KeyAndCert> makeCa(const std::string& cn, int days) {
  auto key = newKey();
  if (!key.isOk()) return key.status();
  auto cert = newCert(key->get(), cn, days);
  if (!cert.isOk()) return cert.status();
  X509* c = cert->get();
  X509_set_issuer_name(c, X509_get_subject_name(c));
  TW_RETURN_IF_ERROR(addExt(c, c, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  TW_RETURN_IF_ERROR(addExt(c, c, NID_key_usage, "critical,keyCertSign,cRLSign"));
  TW_RETURN_IF_ERROR(addExt(c, c, NID_subject_key_identifier, "hash"));
  if (X509_sign(c, key->get(), EVP_sha256()) <= 0) return internalError(sslError("signing the CA"));
  return KeyAndCert{pemOf(key->get()), pemOf(c)};
}

Result<KeyAndCert> issueCert(const KeyAndCert& ca, const std::string& cn, const std::vector<std::string>& sans,
                             CertUse use, int days) {
  X509Ptr ca_cert = certFromPem(ca.cert_pem);
  PkeyPtr ca_key = keyFromPem(ca.key_pem);
  if (!ca_cert || !ca_key) return invalidArgument(sslError("cannot read the CA's certificate or key"));
  std::string san;
  for (const auto& s : sans) {
    if (isIp(s)) {
      san += (san.empty() ? "" : ",") + std::string("IP:") + s;
    } else if (validDnsName(s)) {
      san += (san.empty() ? "" : ",") + std::string("DNS:") + s;
    } else {
      return invalidArgument("'" + s + "' is neither a DNS name nor an IP address");
    }
  }
  auto key = newKey();
  if (!key.isOk()) return key.status();
  auto cert = newCert(key->get(), cn, days);
  if (!cert.isOk()) return cert.status();
  X509* c = cert->get();
  X509_set_issuer_name(c, X509_get_subject_name(ca_cert.get()));
  TW_RETURN_IF_ERROR(addExt(c, ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  TW_RETURN_IF_ERROR(addExt(c, ca_cert.get(), NID_key_usage, "critical,digitalSignature,keyAgreement"));
  TW_RETURN_IF_ERROR(addExt(c, ca_cert.get(), NID_ext_key_usage,
                            use == CertUse::kServer   ? "serverAuth"
                            : use == CertUse::kClient ? "clientAuth"
                                                      : "serverAuth,clientAuth"));
  TW_RETURN_IF_ERROR(addExt(c, ca_cert.get(), NID_subject_key_identifier, "hash"));
  TW_RETURN_IF_ERROR(addExt(c, ca_cert.get(), NID_authority_key_identifier, "keyid:always"));
  if (!san.empty()) TW_RETURN_IF_ERROR(addExt(c, ca_cert.get(), NID_subject_alt_name, san));
  if (X509_sign(c, ca_key.get(), EVP_sha256()) <= 0) return internalError(sslError("signing a certificate"));
  return KeyAndCert{pemOf(key->get()), pemOf(c)};
}

namespace {

std::string commonNameOf(X509* cert) {
  if (!cert) return "";
  X509_NAME* name = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

}  // namespace

Result<std::string> certCommonName(const std::string& cert_pem) {
  X509Ptr cert = certFromPem(cert_pem);
  if (!cert) return invalidArgument(sslError("not a PEM certificate"));
  return commonNameOf(cert.get());
}

std::string peerCommonName(const SSL* ssl) {
  if (!ssl) return "";
  X509Ptr cert(SSL_get1_peer_certificate(ssl));
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return "";
  return commonNameOf(cert.get());
}

TlsPaths::TlsPaths(const std::string& state_dir)
    : dir(state_dir + "/tls"),
      ca_cert(dir + "/ca.pem"),
      ca_key(dir + "/ca.key"),
      server_cert(dir + "/controller.pem"),
      server_key(dir + "/controller.key") {}

Status initPki(const TlsPaths& paths, std::vector<std::string> sans) {
  std::error_code ec;
  if (std::filesystem::exists(paths.ca_key, ec)) {
    return failedPrecondition("a CA exists already in '" + paths.dir +
                              "' (to replace it, move the directory away: docs/auth.md, \"Rotating the CA\")");
  }
  std::filesystem::create_directories(paths.dir, ec);
  if (ec) return unavailable("cannot create '" + paths.dir + "': " + ec.message());
  if (sans.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0 && host[0] != '\0') sans.emplace_back(host);
    sans.emplace_back("localhost");
    sans.emplace_back("127.0.0.1");
  }
  auto ca = makeCa("tierwarden CA", 3650);
  if (!ca.isOk()) return ca.status();
  auto server = issueCert(*ca, "tierwarden-controller", sans, CertUse::kServer, 825);
  if (!server.isOk()) return server.status();
  TW_RETURN_IF_ERROR(writeFileAtomically(paths.ca_key, ca->key_pem));
  TW_RETURN_IF_ERROR(writeFileAtomically(paths.ca_cert, ca->cert_pem));
  TW_RETURN_IF_ERROR(writeFileAtomically(paths.server_key, server->key_pem));
  TW_RETURN_IF_ERROR(writeFileAtomically(paths.server_cert, server->cert_pem));
  ::chmod(paths.ca_cert.c_str(), 0644);
  ::chmod(paths.server_cert.c_str(), 0644);
  return Status::ok();
}

Result<bool> writeHostCert(const TlsPaths& paths, const std::string& name, const std::string& out_dir) {
  std::error_code ec;
  if (!std::filesystem::exists(paths.ca_key, ec)) return false;
  auto ca_key = readFile(paths.ca_key);
  if (!ca_key.isOk()) return ca_key.status();
  auto ca_cert = readFile(paths.ca_cert);
  if (!ca_cert.isOk()) return ca_cert.status();
  KeyAndCert ca{*ca_key, *ca_cert};
  auto host = issueCert(ca, name, {}, CertUse::kClient, 825);
  if (!host.isOk()) return host.status();
  TW_RETURN_IF_ERROR(writeFileAtomically(out_dir + "/ca.pem", *ca_cert));
  TW_RETURN_IF_ERROR(writeFileAtomically(out_dir + "/host.key", host->key_pem));
  TW_RETURN_IF_ERROR(writeFileAtomically(out_dir + "/host.pem", host->cert_pem));
  return true;
}

}  // namespace tw
