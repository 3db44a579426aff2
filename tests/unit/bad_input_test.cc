// Bad input at the library boundaries: the UTF-8 helpers that make quoted
// user bytes safe, parseJson/decode on every kind of bad JSON, and the
// policy parser's messages and size limits. (The HTTP side of the same
// defects: tests/integration/api_bad_input_test.cc.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tw/json.h"
#include "tw/policy.h"
#include "tw/protocol.h"
#include "tw/text.h"

namespace tw {
namespace {

const std::string kE = "\xC3\xA9";        // é, 2 bytes
const std::string kEuro = "\xE2\x82\xAC";  // €, 3 bytes

// Pins: well-formed UTF-8 is told from overlong forms, surrogates, stray
// continuation bytes, truncated sequences and bytes that never occur.
TEST(Utf8, ValidityFollowsTheStandard) {
  EXPECT_TRUE(isValidUtf8(""));
  EXPECT_TRUE(isValidUtf8("plain ascii"));
  EXPECT_TRUE(isValidUtf8(kE + kEuro + "\xF0\x9F\x98\x80"));
  EXPECT_FALSE(isValidUtf8("\xFF"));
  EXPECT_FALSE(isValidUtf8("\xCE"));              // truncated (the /%ce of the report)
  EXPECT_FALSE(isValidUtf8("\x80"));              // stray continuation byte
  EXPECT_FALSE(isValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(isValidUtf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(isValidUtf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(isValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

// Pins: the sanitiser replaces each bad byte by U+FFFD, keeps the rest, and
// its output is always valid.
TEST(Utf8, SanitizeReplacesBadBytes) {
  EXPECT_EQ(utf8Sanitize("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(utf8Sanitize(kE + "\xCE"), kE + "\xEF\xBF\xBD");
  EXPECT_EQ(utf8Sanitize(kEuro), kEuro);
  for (const std::string s : {"\xFF\xFE", "\xE2\x82", "x\xC0\xAFy", "\xED\xA0\x80"}) {
    EXPECT_TRUE(isValidUtf8(utf8Sanitize(s))) << s;
  }
}

// Pins: a prefix never ends inside a character, whatever the cut.
TEST(Utf8, PrefixNeverCutsACharacter) {
  std::string s = "ab" + kEuro + "cd";  // bytes: a b E2 82 AC c d
  EXPECT_EQ(utf8Prefix(s, 2), "ab");
  EXPECT_EQ(utf8Prefix(s, 3), "ab");
  EXPECT_EQ(utf8Prefix(s, 4), "ab");
  EXPECT_EQ(utf8Prefix(s, 5), "ab" + kEuro);
  EXPECT_EQ(utf8Prefix(s, 100), s);
  for (size_t n = 0; n <= s.size(); ++n) EXPECT_TRUE(isValidUtf8(utf8Prefix(s, n))) << n;
  // Stray bytes count as characters of their own.
  EXPECT_EQ(utf8Prefix("\xFF\xFF\xFF", 2), "\xFF\xFF");
}

// Pins: a quoted value longer than the limit is cut between characters
// and marked "...".
TEST(Utf8, QuoteForMessageCutsBetweenCharacters) {
  EXPECT_EQ(quoteForMessage("short"), "'short'");
  std::string value = std::string(56, 'a') + kE + "tail-that-goes-beyond-sixty-bytes";
  std::string quoted = quoteForMessage(value, 60);
  EXPECT_EQ(quoted, "'" + std::string(56, 'a') + "...'");  // é would end at byte 58 > 57
  EXPECT_TRUE(isValidUtf8(quoted));
  EXPECT_EQ(utf8FirstCharacter(kEuro + "x"), kEuro);
  EXPECT_EQ(utf8FirstCharacter("\xFFx"), "\\xff");
  EXPECT_EQ(utf8FirstCharacter(""), "");
}

// Pins: jsonText never throws on text that is not UTF-8 (nlohmann's dump()
// throws type_error.316: what killed the controller on POST /%ce).
TEST(JsonText, InvalidUtf8IsReplacedNotThrown) {
  Json j{{"error", "not found: DELETE /\xCE"}};
  EXPECT_THROW((void)j.dump(), Json::type_error);
  std::string text;
  ASSERT_NO_THROW(text = jsonText(j));
  EXPECT_EQ(text, "{\"error\":\"not found: DELETE /\xEF\xBF\xBD\"}");
  EXPECT_TRUE(parseJson(text).isOk());
}

// Pins: parseJson answers every kind of bad JSON with kInvalidArgument, never
// an exception: syntax (with line/column), a number out of range (1e400 was
// an uncaught out_of_range.406, a 500), invalid UTF-8, an empty body.
TEST(ParseJson, EveryRefusalIsInvalidArgument) {
  for (const std::string text :
       {"{not json", "{\"files\":1e400}", "[-1e999]", "\xFF", "\"\xCE\"", "", "{\"a\":1}}"}) {
    Result<Json> r = Json();
    ASSERT_NO_THROW(r = parseJson(text)) << text;
    ASSERT_FALSE(r.isOk()) << text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << text;
    EXPECT_EQ(r.status().message().rfind("malformed JSON: ", 0), 0u) << r.status().message();
  }
  auto overflow = parseJson("{\"files\":1e400}");
  EXPECT_NE(overflow.status().message().find("1e400"), std::string::npos) << overflow.status().message();
  auto syntax = parseJson("{\n  \"a\": tru\n}");
  ASSERT_TRUE(syntax.status().where().has_value());
  EXPECT_EQ(syntax.status().where()->line, 2);
}

// Pins: a syntax error in a huge token is quoted in at most ~200 bytes (nlohmann
// quotes the whole token read so far).
TEST(ParseJson, LongTokensAreNotQuotedWhole) {
  std::string text = "\"" + std::string(100000, 'x') + "\xFF\"";
  auto r = parseJson(text);
  ASSERT_FALSE(r.isOk());
  EXPECT_LT(r.status().message().size(), 300u);
}

// Pins: decode<> of the wrong shapes and types is kInvalidArgument, and so is
// a float no integer field can take (converting it is undefined behaviour in
// nlohmann's get<int>()).
TEST(Decode, WrongTypesAreInvalidArgument) {
  for (const std::string text :
       {R"([])", R"({"host": 1})", R"({"host": "h1", "seq": "x"})", R"({"host": "h1", "domains": "x"})",
        R"({"host": "h1", "domains": [{"vm": "a", "ports": {"x": 1}}]})",
        R"({"host": "h1", "domains": [{"vm": "a", "ports": [1]}]})",
        R"({"host": "h1", "domains": [{"vm": "a", "state": "flying"}]})",
        R"({"host": "h1", "seq": 1e30})", R"({"host": "h1", "capacity": {"cpus": -1e12}})",
        R"({"host": "h1", "domains": [{"vm": "a", "ports": {"80": 1e300}}]})"}) {
    auto j = parseJson(text);
    ASSERT_TRUE(j.isOk()) << text;
    Result<Heartbeat> hb = Heartbeat();
    ASSERT_NO_THROW(hb = decode<Heartbeat>(*j)) << text;
    ASSERT_FALSE(hb.isOk()) << text;
    EXPECT_EQ(hb.status().code(), Code::kInvalidArgument) << text;
  }
  auto files = decode<std::vector<PolicyFile>>(*parseJson(R"([1, {"name": "a"}])"));
  EXPECT_EQ(files.status().code(), Code::kInvalidArgument);
  // Integral floats that fit are still taken, as before.
  auto ok = decode<Heartbeat>(*parseJson(R"({"host": "h1", "seq": 7.0})"));
  ASSERT_TRUE(ok.isOk()) << ok.status().toString();
  EXPECT_EQ(ok->seq, 7);
}

// Pins: a YAML value quoted in a policy error is cut between characters (it
// was cut at byte 57, in the middle of é: the answer's JSON then failed and
// the user got a 500 instead of file:line:column).
TEST(PolicyMessages, QuotedValuesAreCutBetweenCharacters) {
  std::string value = std::string(56, 'a') + kE + std::string(20, 'b');
  auto r = parsePolicy({PolicyFile{"p.yaml", "tiers:\n  - name: web\n    image: x\n    replicas: " +
                                                 value + "\n"}});
  ASSERT_FALSE(r.isOk());
  EXPECT_TRUE(isValidUtf8(r.status().message())) << r.status().message();
  EXPECT_NE(r.status().message().find("expected an integer for 'replicas'"), std::string::npos)
      << r.status().message();
  ASSERT_TRUE(r.status().where().has_value());
  EXPECT_EQ(r.status().where()->line, 4);
  EXPECT_EQ(r.status().where()->column, 15);
  // Every cut position around a multi-byte character.
  for (size_t pad = 50; pad < 62; ++pad) {
    std::string v = std::string(pad, 'a') + kEuro + kEuro + std::string(10, 'c');
    auto p = parsePolicy({PolicyFile{"p.yaml", "cluster:\n  lease: " + v + "\n"}});
    ASSERT_FALSE(p.isOk());
    EXPECT_TRUE(isValidUtf8(p.status().message())) << pad << ": " << p.status().message();
  }
}

// Pins: yaml-cpp's own messages that quote a single byte of a multi-byte
// character ("unknown escape character") come out as valid UTF-8, with the
// position.
TEST(PolicyMessages, YamlSyntaxErrorsAreValidUtf8) {
  auto r = parsePolicy({PolicyFile{"p.yaml", "tiers:\n  - name: \"\\" + kE + "\"\n"}});
  ASSERT_FALSE(r.isOk());
  EXPECT_TRUE(isValidUtf8(r.status().message())) << r.status().message();
  EXPECT_NE(r.status().message().find("YAML syntax error"), std::string::npos) << r.status().message();
  ASSERT_TRUE(r.status().where().has_value());
  EXPECT_EQ(r.status().where()->line, 2);
}

std::string hostsYaml(int n) {
  std::string y = "hosts:\n";
  for (int i = 0; i < n; ++i) y += "  - { name: h" + std::to_string(i) + " }\n";
  return y;
}

std::string tiersYaml(int n, int replicas, const std::string& prefix = "t") {
  std::string y = "tiers:\n";
  for (int i = 0; i < n; ++i) {
    y += "  - { name: " + prefix + std::to_string(i) + ", image: x, replicas: " +
         std::to_string(replicas) + " }\n";
  }
  return y;
}

// Pins: a policy is bounded — hosts, tiers and VMs (the sum of replicas),
// counted over all its files — and a refusal names the limit and points at
// the first item over it. At the limits it is accepted.
TEST(PolicyLimits, HostsTiersAndVmsAreBounded) {
  ASSERT_TRUE(parsePolicy({PolicyFile{"h.yaml", hostsYaml(kMaxPolicyHosts)}}).isOk());
  auto hosts = parsePolicy({PolicyFile{"h.yaml", hostsYaml(kMaxPolicyHosts + 1)}});
  ASSERT_FALSE(hosts.isOk());
  EXPECT_EQ(hosts.status().code(), Code::kInvalidArgument);
  EXPECT_NE(hosts.status().message().find("at most 1000 hosts"), std::string::npos)
      << hosts.status().message();
  EXPECT_EQ(hosts.status().where()->line, kMaxPolicyHosts + 2);

  ASSERT_TRUE(parsePolicy({PolicyFile{"t.yaml", tiersYaml(kMaxPolicyTiers, 1)}}).isOk());
  // Over two files: the limit is on the union.
  auto tiers = parsePolicy({PolicyFile{"a.yaml", tiersYaml(600, 1, "a")},
                            PolicyFile{"b.yaml", tiersYaml(401, 1, "b")}});
  ASSERT_FALSE(tiers.isOk());
  EXPECT_NE(tiers.status().message().find("at most 1000 tiers"), std::string::npos)
      << tiers.status().message();
  EXPECT_EQ(tiers.status().where()->file, "b.yaml");

  ASSERT_TRUE(parsePolicy({PolicyFile{"v.yaml", tiersYaml(20, 1000)}}).isOk());
  auto vms = parsePolicy({PolicyFile{"v.yaml", tiersYaml(20, 1000) + "  - { name: extra, image: x }\n"}});
  ASSERT_FALSE(vms.isOk());
  EXPECT_NE(vms.status().message().find("at most 20000 VMs"), std::string::npos) << vms.status().message();
  EXPECT_NE(vms.status().message().find("'extra'"), std::string::npos) << vms.status().message();
  EXPECT_EQ(vms.status().where()->line, 22);
}

}  // namespace
}  // namespace tw
