// EtcdStore on FakeEtcd: the etcd-specific contract (etcd_store_contract.h)
// and the HTTP client's pure parts (URLs, base64). The same contract runs on
// a real etcd in tests/integration/store_etcd_test.cc.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "etcd_store_contract.h"
#include "tw/etcd_client.h"
#include "tw/fake_etcd.h"

namespace tw {
namespace {

struct FakeEtcdBackend {
  bool available() { return true; }
  std::unique_ptr<EtcdClient> client() { return std::make_unique<FakeEtcdClient>(etcd); }
  std::string freshPrefix() { return "/tierwarden/t" + std::to_string(++n); }
  ManualClock clock;
  FakeEtcd etcd{clock};
  int n = 0;
};

using namespace etcd_contract;  // the suite's generated names are unqualified
INSTANTIATE_TYPED_TEST_SUITE_P(Fake, EtcdStoreTest, FakeEtcdBackend);

// Pins: --store etcd://... gives one http:// URL per member, 2379 by default;
// anything else is refused with the expected form.
TEST(EtcdUrlTest, ParsesMembers) {
  auto urls = parseEtcdStoreUrl("etcd://h1:2379,10.0.0.2,[::1]:32379/");
  ASSERT_TRUE(urls.isOk()) << urls.status().toString();
  EXPECT_EQ(*urls, (std::vector<std::string>{"http://h1:2379", "http://10.0.0.2:2379", "http://[::1]:32379"}));
  for (const char* bad : {"http://h1:2379", "etcd://", "etcd://h1:0", "etcd://h1:99999", "etcd://h1,,h2",
                          "etcd://h1:23x9", "etcd://user@h1", "etcd://h1/path"}) {
    auto r = parseEtcdStoreUrl(bad);
    EXPECT_FALSE(r.isOk()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("etcd://HOST[:PORT]"), std::string::npos) << r.status().message();
  }
}

// Pins: base64 round-trips every byte value and every length; bad text is
// refused.
TEST(EtcdBase64Test, RoundTripAndRefusal) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t n = 0; n < 7; ++n) {
    auto back = base64Decode(base64Encode(all.substr(0, n)));
    ASSERT_TRUE(back.isOk());
    EXPECT_EQ(*back, all.substr(0, n));
  }
  EXPECT_EQ(base64Encode("foo"), "Zm9v");
  EXPECT_EQ(base64Encode("fo"), "Zm8=");
  EXPECT_EQ(*base64Decode(base64Encode(all)), all);
  EXPECT_FALSE(base64Decode("Zm9").isOk());
  EXPECT_FALSE(base64Decode("Zm!v").isOk());
  EXPECT_FALSE(base64Decode("Z=9v").isOk());
}

// Pins: the prefix end covers exactly the keys with the prefix.
TEST(EtcdPrefixTest, PrefixEnd) {
  EXPECT_EQ(etcdPrefixEnd("/a/"), "/a0");
  EXPECT_EQ(etcdPrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(etcdPrefixEnd(""), std::string(1, '\0'));
  EXPECT_FALSE(etcdClusterPrefix("Bad_Name").isOk());
  EXPECT_EQ(*etcdClusterPrefix("prod-1"), "/tierwarden/prod-1");
}

}  // namespace
}  // namespace tw
