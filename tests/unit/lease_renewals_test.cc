// LeaseRenewals on FakeEtcd (the contract in lease_renewals_contract.h; the
// same runs on a real etcd in tests/integration/store_etcd_test.cc).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "lease_renewals_contract.h"
#include "tw/fake_etcd.h"

namespace tw {
namespace {

struct FakeRenewalsBackend {
  bool available() { return true; }
  std::unique_ptr<EtcdClient> client() { return std::make_unique<FakeEtcdClient>(etcd); }
  std::string freshPrefix() { return "/tierwarden/r" + std::to_string(++n); }
  ManualClock clock;
  FakeEtcd etcd{clock};
  int n = 0;
};

using namespace renewals_contract;  // the suite's generated names are unqualified
INSTANTIATE_TYPED_TEST_SUITE_P(Fake, LeaseRenewalsTest, FakeRenewalsBackend);

}  // namespace
}  // namespace tw
