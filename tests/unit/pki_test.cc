// The cluster's CA (controller/pki.h): init makes the CA and the
// controller's certificate once; issue-host's certificate names the host.
#include "controller/pki.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tw {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Pins: a host certificate carries CN = the host's name; a SAN that is
// neither a DNS name nor an IP address is refused.
TEST(PkiTest, IssuedCertificateNamesItsHost) {
  auto ca = makeCa("test CA", 1);
  ASSERT_TRUE(ca.isOk()) << ca.status().toString();
  auto host = issueCert(*ca, "h1", {}, CertUse::kClient, 1);
  ASSERT_TRUE(host.isOk()) << host.status().toString();
  EXPECT_EQ(*certCommonName(host->cert_pem), "h1");
  EXPECT_NE(host->key_pem.find("PRIVATE KEY"), std::string::npos);
  auto server = issueCert(*ca, "tierwarden-controller", {"ctl.example", "127.0.0.1", "::1"}, CertUse::kServer, 1);
  ASSERT_TRUE(server.isOk()) << server.status().toString();
  EXPECT_EQ(issueCert(*ca, "x", {"bad name!"}, CertUse::kServer, 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(issueCert(KeyAndCert{"junk", "junk"}, "x", {}, CertUse::kClient, 1).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(certCommonName("not pem").status().code(), Code::kInvalidArgument);
}

// Pins: init writes the CA and the controller's certificate (keys 0600) and
// refuses to overwrite a CA; a host bundle gets ca.pem, host.pem, host.key.
TEST(PkiTest, InitOnceAndHostBundle) {
  std::string templ = (fs::temp_directory_path() / "tw-pki-XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  TlsPaths paths(templ);
  EXPECT_FALSE(*writeHostCert(paths, "h1", templ));  // no CA yet: nothing written
  EXPECT_FALSE(fs::exists(templ + "/host.pem"));
  ASSERT_TRUE(initPki(paths, {}).isOk());
  struct stat st {};
  ASSERT_EQ(::stat(paths.ca_key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(paths.server_key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string ca_before = slurp(paths.ca_cert);
  EXPECT_EQ(initPki(paths, {}).code(), Code::kFailedPrecondition);
  EXPECT_EQ(slurp(paths.ca_cert), ca_before);
  ASSERT_TRUE(*writeHostCert(paths, "h2", templ));
  EXPECT_EQ(*certCommonName(slurp(templ + "/host.pem")), "h2");
  EXPECT_EQ(slurp(templ + "/ca.pem"), ca_before);
  ASSERT_EQ(::stat((templ + "/host.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  fs::remove_all(templ);
}

}  // namespace
}  // namespace tw
