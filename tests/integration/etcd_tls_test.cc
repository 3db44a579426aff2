// The etcd store over TLS (--etcd-cacert/--etcd-cert/--etcd-key): a real
// etcd started with --cert-file/--key-file/--trusted-ca-file and
// --client-cert-auth, certificates made here with the project's PKI code
// (controller/pki.h). The Store contract runs over TLS; a client without a
// certificate, one that speaks plain HTTP, and one with another CA are
// refused; bad files are refused before any connection. Skips when etcd is
// not installed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>

#include "../unit/store_contract.h"
#include "controller/pki.h"
#include "etcd_process.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using testing_etcd::freeLoopbackPort;

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// One TLS etcd per test process, with its CA and a client certificate.
class TlsEtcd {
 public:
  static TlsEtcd* shared() {
    static std::unique_ptr<TlsEtcd> instance = start();
    return instance.get();
  }

  HttpEtcdOptions options(bool with_client_cert = true) const {
    HttpEtcdOptions o;
    o.endpoints = {"http://127.0.0.1:" + std::to_string(port_)};  // as parseEtcdStoreUrl makes it
    o.ca_file = dir_ + "/ca.pem";
    if (with_client_cert) {
      o.cert_file = dir_ + "/client.pem";
      o.key_file = dir_ + "/client.key";
    }
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 2000;
    return o;
  }
  const std::string& dir() const { return dir_; }
  int port() const { return port_; }

  ~TlsEtcd() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 private:
  static std::unique_ptr<TlsEtcd> start() {
    const std::string binary = testing_etcd::etcdBinary();
    if (binary.empty()) return nullptr;
    auto t = std::unique_ptr<TlsEtcd>(new TlsEtcd());
    std::string templ = (fs::temp_directory_path() / "tw-etcd-tls-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) return nullptr;
    t->dir_ = templ;
    auto ca = makeCa("tw-test-etcd-ca", 2);
    if (!ca.isOk()) return nullptr;
    auto server = issueCert(*ca, "etcd", {"127.0.0.1", "localhost"}, CertUse::kServerAndClient, 2);
    auto client = issueCert(*ca, "tierwarden-controller", {}, CertUse::kClient, 2);
    auto other_ca = makeCa("another-ca", 2);
    if (!server.isOk() || !client.isOk() || !other_ca.isOk()) return nullptr;
    writeFile(t->dir_ + "/ca.pem", ca->cert_pem);
    writeFile(t->dir_ + "/server.pem", server->cert_pem);
    writeFile(t->dir_ + "/server.key", server->key_pem);
    writeFile(t->dir_ + "/client.pem", client->cert_pem);
    writeFile(t->dir_ + "/client.key", client->key_pem);
    writeFile(t->dir_ + "/other-ca.pem", other_ca->cert_pem);
    t->port_ = freeLoopbackPort();
    const std::string url = "https://127.0.0.1:" + std::to_string(t->port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(freeLoopbackPort());
    std::vector<std::string> argv = {binary,
                                     "--name", "t",
                                     "--data-dir", t->dir_ + "/data",
                                     "--listen-client-urls", url,
                                     "--advertise-client-urls", url,
                                     "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer,
                                     "--initial-cluster", "t=" + peer,
                                     "--cert-file", t->dir_ + "/server.pem",
                                     "--key-file", t->dir_ + "/server.key",
                                     "--trusted-ca-file", t->dir_ + "/ca.pem",
                                     "--client-cert-auth",
                                     "--heartbeat-interval", "20",
                                     "--election-timeout", "100",
                                     "--log-level", "warn"};
    t->pid_ = testing_etcd::spawnEtcd(std::move(argv), t->dir_ + "/etcd.log");
    if (t->pid_ < 0) return nullptr;
    auto c = makeHttpEtcdClient(t->options());
    if (!c.isOk()) {
      std::fprintf(stderr, "TLS etcd client: %s\n", c.status().toString().c_str());
      return nullptr;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    Status last;
    while (std::chrono::steady_clock::now() < deadline) {
      Result<EtcdRangeResult> r = (*c)->range("/ready", "");
      if (r.isOk()) return t;
      last = r.status();
      if (::waitpid(t->pid_, nullptr, WNOHANG) != 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // Why, for the skip: the client's last error and etcd's log.
    std::ifstream log(t->dir_ + "/etcd.log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "TLS etcd did not come up: %s\n%s\n", last.toString().c_str(),
                 text.substr(text.size() > 2000 ? text.size() - 2000 : 0).c_str());
    return nullptr;
  }

  TlsEtcd() = default;
  pid_t pid_ = -1;
  std::string dir_;
  int port_ = 0;
};

std::string uniquePrefix() {
  static int n = 0;
  return "/tierwarden/tls" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

struct TlsEtcdStoreBackend {
  bool available() { return TlsEtcd::shared() != nullptr; }
  std::unique_ptr<Store> open() {
    prefix = uniquePrefix();
    return reopen();
  }
  std::unique_ptr<Store> reopen() {
    auto client = makeHttpEtcdClient(TlsEtcd::shared()->options());
    EXPECT_TRUE(client.isOk()) << client.status().toString();
    if (!client.isOk()) return nullptr;
    EtcdStoreOptions options;
    options.prefix = prefix;
    auto store = openEtcdStore(std::move(client).value(), options);
    EXPECT_TRUE(store.isOk()) << store.status().toString();
    return store.isOk() ? std::move(store).value() : nullptr;
  }
  std::string prefix;
};
using namespace store_contract;
INSTANTIATE_TYPED_TEST_SUITE_P(RealEtcdTls, StoreContractTest, TlsEtcdStoreBackend);

class EtcdTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = TlsEtcd::shared();
    if (etcd_ == nullptr) GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server etcd-client)";
  }
  TlsEtcd* etcd_ = nullptr;
};

// Pins: with the CA and a client certificate, reads and writes work.
TEST_F(EtcdTlsTest, ClientWithCertificateWorks) {
  auto c = makeHttpEtcdClient(etcd_->options());
  ASSERT_TRUE(c.isOk()) << c.status().toString();
  ASSERT_TRUE((*c)->put("/tls-test/a", "1").isOk());
  auto r = (*c)->range("/tls-test/a", "");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, "1");
}

// Pins: etcd (--client-cert-auth) refuses a client without a certificate;
// a plain-HTTP client gets nothing either; a client that trusts another CA
// refuses the member's certificate.
TEST_F(EtcdTlsTest, ClientsWithoutCertificateOrTheCaAreRefused) {
  auto no_cert = makeHttpEtcdClient(etcd_->options(false));
  ASSERT_TRUE(no_cert.isOk());
  EXPECT_FALSE((*no_cert)->range("/tls-test/a", "").isOk());
  EXPECT_FALSE((*no_cert)->put("/tls-test/b", "x").isOk());

  HttpEtcdOptions plain;
  plain.endpoints = {"http://127.0.0.1:" + std::to_string(etcd_->port())};
  plain.request_timeout_ms = 1000;
  auto p = makeHttpEtcdClient(plain);
  ASSERT_TRUE(p.isOk());
  EXPECT_FALSE((*p)->range("/tls-test/a", "").isOk());

  HttpEtcdOptions other = etcd_->options();
  other.ca_file = etcd_->dir() + "/other-ca.pem";
  auto o = makeHttpEtcdClient(other);
  ASSERT_TRUE(o.isOk());
  EXPECT_FALSE((*o)->range("/tls-test/a", "").isOk());

  // Nothing was written by the refused clients.
  auto c = makeHttpEtcdClient(etcd_->options());
  ASSERT_TRUE(c.isOk());
  auto r = (*c)->range("/tls-test/b", "");
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(r->kvs.empty());
}

// Pins: bad TLS files are refused before any connection, with one line
// naming the file.
TEST_F(EtcdTlsTest, BadFilesAreRefusedAtOnce) {
  HttpEtcdOptions o = etcd_->options();
  o.ca_file = etcd_->dir() + "/missing.pem";
  auto c = makeHttpEtcdClient(o);
  ASSERT_FALSE(c.isOk());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find("missing.pem"), std::string::npos) << c.status().toString();

  o = etcd_->options();
  o.key_file = etcd_->dir() + "/server.key";  // not the client cert's key
  c = makeHttpEtcdClient(o);
  ASSERT_FALSE(c.isOk());
  EXPECT_NE(c.status().message().find("is not the key of"), std::string::npos) << c.status().toString();

  o = etcd_->options();
  o.cert_file = etcd_->dir() + "/client.key";  // a key where a certificate belongs
  c = makeHttpEtcdClient(o);
  ASSERT_FALSE(c.isOk());
  EXPECT_NE(c.status().message().find("holds no PEM certificate"), std::string::npos) << c.status().toString();

  o = etcd_->options();
  o.ca_file.clear();
  c = makeHttpEtcdClient(o);
  ASSERT_FALSE(c.isOk());
  EXPECT_NE(c.status().message().find("needs --etcd-cacert"), std::string::npos) << c.status().toString();
}

}  // namespace
}  // namespace tw
