// The credential store and role checks (controller/auth.h) and the bearer
// header parsing (tw/text.h).
#include "controller/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tw/text.h"

namespace tw {
namespace {

namespace fs = std::filesystem;

const Principal kOp{Role::kOperator, ""};
const Principal kView{Role::kViewer, ""};
const Principal kH1{Role::kAgent, "h1"};

// Pins the role matrix: who may read, operate, and speak for which host;
// 401 for no or unknown token, 403 for a valid token of the wrong role/host.
TEST(AuthTest, AuthorizeRoleMatrix) {
  EXPECT_TRUE(authorize(kOp, true, Access::kRead, "", false).isOk());
  EXPECT_TRUE(authorize(kOp, true, Access::kOperate, "", false).isOk());
  EXPECT_EQ(authorize(kOp, true, Access::kAgent, "h1", false).code(), Code::kForbidden);
  EXPECT_TRUE(authorize(kView, true, Access::kRead, "", false).isOk());
  EXPECT_EQ(authorize(kView, true, Access::kOperate, "", false).code(), Code::kForbidden);
  EXPECT_EQ(authorize(kView, true, Access::kAgent, "h1", false).code(), Code::kForbidden);
  EXPECT_TRUE(authorize(kH1, true, Access::kAgent, "h1", false).isOk());
  EXPECT_EQ(authorize(kH1, true, Access::kAgent, "h2", false).code(), Code::kForbidden);
  EXPECT_EQ(authorize(kH1, true, Access::kOperate, "", false).code(), Code::kForbidden);
  EXPECT_EQ(authorize(kH1, true, Access::kRead, "", false).code(), Code::kForbidden);
  EXPECT_EQ(authorize(kH1, true, Access::kRead, "", true).code(), Code::kForbidden);
  // No token: 401, except reads under --public-read.
  EXPECT_EQ(authorize(std::nullopt, false, Access::kRead, "", false).code(), Code::kPermissionDenied);
  EXPECT_TRUE(authorize(std::nullopt, false, Access::kRead, "", true).isOk());
  EXPECT_EQ(authorize(std::nullopt, false, Access::kOperate, "", true).code(), Code::kPermissionDenied);
  EXPECT_EQ(authorize(std::nullopt, false, Access::kAgent, "h1", true).code(), Code::kPermissionDenied);
  // A wrong token is refused even where none is needed.
  EXPECT_EQ(authorize(std::nullopt, true, Access::kRead, "", true).code(), Code::kPermissionDenied);
}

// Pins: the Bearer scheme in any case, one or more spaces, the token's exact
// bytes (a NUL stays part of it); other schemes and a bare scheme give "".
TEST(AuthTest, BearerTokenParsing) {
  EXPECT_EQ(bearerToken("Bearer abc"), "abc");
  EXPECT_EQ(bearerToken("bearer abc"), "abc");
  EXPECT_EQ(bearerToken("BEARER abc"), "abc");
  EXPECT_EQ(bearerToken("Bearer   abc"), "abc");
  EXPECT_EQ(bearerToken(std::string_view("Bearer abc\0", 11)), std::string("abc\0", 4));
  EXPECT_EQ(bearerToken("Basic abc"), "");
  EXPECT_EQ(bearerToken("Bearerabc"), "");
  EXPECT_EQ(bearerToken("Bearer"), "");
  EXPECT_EQ(bearerToken("Bearer "), "");
  EXPECT_EQ(bearerToken(""), "");
}

// Pins: tokens are matched over exact bytes: a prefix, a NUL suffix or an
// empty token match nobody.
TEST(AuthTest, CredentialSetExactBytes) {
  CredentialSet set;
  set.add(kOp, "operator-token-0123456789");
  set.add(kH1, "h1-token-0123456789abcdef");
  ASSERT_TRUE(set.find("operator-token-0123456789").has_value());
  EXPECT_EQ(set.find("operator-token-0123456789")->role, Role::kOperator);
  EXPECT_EQ(set.find("h1-token-0123456789abcdef")->host, "h1");
  EXPECT_FALSE(set.find(std::string("operator-token-0123456789\0", 26)).has_value());
  EXPECT_FALSE(set.find("operator-token-012345678").has_value());
  EXPECT_FALSE(set.find("").has_value());
  EXPECT_FALSE(tokenMatches(std::string("abc\0", 4), "abc"));
  EXPECT_TRUE(tokenMatches("abc", "abc"));
  EXPECT_FALSE(tokenMatches("", ""));
}

// Pins: host-tokens refuses a bad line with file:line and what was expected.
TEST(AuthTest, HostTokensFileRefusesBadLines) {
  const std::string hash(64, 'a');
  auto ok = parseHostTokens("# comment\n\nh1 " + hash + "\nh2 " + std::string(64, 'b') + "\n", "host-tokens");
  ASSERT_TRUE(ok.isOk()) << ok.status().toString();
  EXPECT_EQ(ok->size(), 2u);
  for (const std::string& bad : {"H1 " + hash, std::string("h1 xyz"), "h1 " + hash + " extra", "h1 " + hash + "\nh1 " + hash,
                                 "h1 " + std::string(64, 'A')}) {
    auto r = parseHostTokens(bad + "\n", "host-tokens");
    ASSERT_FALSE(r.isOk()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    ASSERT_TRUE(r.status().where().has_value());
    EXPECT_EQ(r.status().where()->file, "host-tokens");
    EXPECT_GE(r.status().where()->line, 1);
  }
}

class AuthFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "tw-auth-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::string line;
    std::getline(in, line);
    return line;
  }
  fs::path dir_;
};

// Pins issue-host: a bundle with the host's token and the peer token (0600),
// only the token's hash in host-tokens; the issued token authenticates as
// that host; issuing again retires the old token; revoke-host removes it; a
// bad name changes nothing.
TEST_F(AuthFilesTest, IssueReissueAndRevokeHost) {
  CredentialPaths paths(dir_.string());
  ASSERT_TRUE(loadOrCreateTokenFile(paths.operator_token).isOk());
  FileCredentials creds(paths);
  ASSERT_TRUE(creds.load().isOk());
  EXPECT_EQ(creds.hostCount(), 0u);

  auto first = issueHostToken(paths, "h1", "");
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_EQ(first->token_file, (dir_ / "hosts" / "h1" / "token").string());
  EXPECT_EQ(read(first->token_file), first->token);
  EXPECT_EQ(read(first->peer_token_file), read(paths.peer_token));
  struct stat st {};
  ASSERT_EQ(::stat(first->token_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream hosts(paths.host_tokens);
  std::string all((std::istreambuf_iterator<char>(hosts)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all.find(first->token), std::string::npos) << "the plain token must not be stored";
  EXPECT_NE(all.find("h1 " + sha256Hex(first->token)), std::string::npos);

  // A running controller rereads the file.
  auto who = creds.authenticate(first->token);
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ(who->role, Role::kAgent);
  EXPECT_EQ(who->host, "h1");
  auto op = creds.authenticate(read(paths.operator_token));
  ASSERT_TRUE(op.has_value());
  EXPECT_EQ(op->role, Role::kOperator);
  EXPECT_FALSE(creds.authenticate(read(paths.peer_token)).has_value()) << "the peer token is no API credential";

  auto second = issueHostToken(paths, "h1", (dir_ / "elsewhere").string());
  ASSERT_TRUE(second.isOk());
  EXPECT_NE(second->token, first->token);
  EXPECT_FALSE(creds.authenticate(first->token).has_value());
  EXPECT_TRUE(creds.authenticate(second->token).has_value());

  EXPECT_EQ(issueHostToken(paths, "H1;rm", "").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(creds.hostCount(), 1u);
  ASSERT_TRUE(revokeHostToken(paths, "h1").isOk());
  EXPECT_FALSE(creds.authenticate(second->token).has_value());
  EXPECT_EQ(revokeHostToken(paths, "h1").code(), Code::kNotFound);
}

// Pins rotate-token: the new operator (or viewer) token works at once in a
// running controller and the old one no longer does; a file that turns bad
// keeps the credentials read before.
TEST_F(AuthFilesTest, RotationTakesEffectAndBadFilesKeepOld) {
  CredentialPaths paths(dir_.string());
  auto op = loadOrCreateTokenFile(paths.operator_token);
  auto viewer = loadOrCreateTokenFile(paths.viewer_token);
  ASSERT_TRUE(op.isOk() && viewer.isOk());
  FileCredentials creds(paths);
  ASSERT_TRUE(creds.load().isOk());
  EXPECT_EQ(creds.authenticate(*viewer)->role, Role::kViewer);
  auto rotated = rotateTokenFile(paths.operator_token);
  ASSERT_TRUE(rotated.isOk());
  EXPECT_FALSE(creds.authenticate(*op).has_value());
  EXPECT_EQ(creds.authenticate(*rotated)->role, Role::kOperator);

  std::ofstream(paths.host_tokens) << "not a valid line\n";
  EXPECT_EQ(creds.authenticate(*rotated)->role, Role::kOperator);
  FileCredentials fresh(paths);
  Status s = fresh.load();
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.toString().find("host-tokens:1"), std::string::npos) << s.toString();
}

}  // namespace
}  // namespace tw
