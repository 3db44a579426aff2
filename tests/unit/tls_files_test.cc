// A listener's TLS files (controller/tls.h): what init wrote loads; a
// missing file or a key that is not the certificate's is refused with the
// file's name, before anything listens.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "controller/pki.h"
#include "controller/tls.h"

namespace tw {
namespace {

namespace fs = std::filesystem;

// Pins: init's files load (with and without the client CA, which turns on
// client certificate checks); a missing certificate names the file and
// `init`; the CA's key with the controller's certificate is refused.
TEST(ServerTlsTest, LoadsInitsFilesAndRefusesBadOnes) {
  std::string templ = (fs::temp_directory_path() / "tw-tls-files-XXXXXX").string();
  ASSERT_NE(::mkdtemp(templ.data()), nullptr);
  const fs::path dir = templ;
  TlsPaths paths(dir.string());
  ASSERT_TRUE(initPki(paths, {"127.0.0.1"}).isOk());

  auto plain = ServerTls::load({paths.server_cert, paths.server_key, ""});
  ASSERT_TRUE(plain.isOk()) << plain.status().toString();
  EXPECT_FALSE((*plain)->verifiesClients());
  auto mutual = ServerTls::load({paths.server_cert, paths.server_key, paths.ca_cert});
  ASSERT_TRUE(mutual.isOk()) << mutual.status().toString();
  EXPECT_TRUE((*mutual)->verifiesClients());

  auto missing = ServerTls::load({(dir / "nope.pem").string(), paths.server_key, ""});
  ASSERT_EQ(missing.status().code(), Code::kInvalidArgument);
  EXPECT_NE(missing.status().message().find((dir / "nope.pem").string()), std::string::npos);
  EXPECT_NE(missing.status().message().find("init"), std::string::npos);

  auto wrong_key = ServerTls::load({paths.server_cert, paths.ca_key, ""});
  ASSERT_EQ(wrong_key.status().code(), Code::kInvalidArgument);
  EXPECT_NE(wrong_key.status().message().find("not the key of " + paths.server_cert), std::string::npos)
      << wrong_key.status().toString();

  auto no_ca = ServerTls::load({paths.server_cert, paths.server_key, (dir / "no-ca.pem").string()});
  EXPECT_EQ(no_ca.status().code(), Code::kInvalidArgument);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tw
