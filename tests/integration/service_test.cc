// ControllerService with its real loop thread: heartbeats are answered while
// the loop is busy (a large apply, a slow store), and the loop takes the
// queued heartbeats before it next judges liveness.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "controller/controller.h"
#include "controller/service.h"
#include "tw/store.h"

namespace tw {
namespace {

using Steady = std::chrono::steady_clock;

const char* kPolicy = R"(cluster: { heartbeat_interval: 500ms, dead_after: 1500ms, lease: 3s }
hosts:
  - { name: h1, capacity: { cpus: 4, memory: 4GiB } }
tiers:
  - { name: web, image: tiny-web, replicas: 1 }
)";

Heartbeat beat(int64_t seq) {
  Heartbeat hb;
  hb.host = "h1";
  hb.agent_id = "a1";
  hb.seq = seq;
  hb.capacity = {4, 4096};
  return hb;
}

// Pins: while the loop is blocked for 3 s (twice dead_after), heartbeats are
// answered within the answer wait (250 ms) plus a margin, with the published
// set (the VM assigned to h1, lease 3 s); after the block the host is still
// online (the queued heartbeats were taken before liveness was judged), and a
// host not declared is refused at once.
TEST(ServiceTest, HeartbeatsAreAnsweredWhileTheLoopIsBusy) {
  auto store = Store::open(":memory:");
  ASSERT_TRUE(store.isOk());
  Controller controller(**store, SystemClock::instance());
  ASSERT_TRUE(controller.recover().isOk());
  ControllerService service(controller, 50);
  service.start();
  auto applied = service.call([](Controller& c) {
    return c.applyPolicy({PolicyFile{"p.yaml", kPolicy}}, false);
  });
  ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  int64_t seq = 0;
  for (int i = 0; i < 10; ++i) {  // the host reports; the VM gets placed and published
    ASSERT_TRUE(service.heartbeat(beat(++seq)).isOk());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  auto busy = std::async(std::launch::async, [&] {
    service.call([](Controller&) {
      std::this_thread::sleep_for(std::chrono::seconds(3));
      return 0;
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  double worst_ms = 0;
  for (int i = 0; i < 8; ++i) {
    auto t0 = Steady::now();
    auto set = service.heartbeat(beat(++seq));
    double ms = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
    worst_ms = std::max(worst_ms, ms);
    ASSERT_TRUE(set.isOk()) << set.status().toString();
    EXPECT_EQ(set->host, "h1");
    EXPECT_EQ(set->lease_ms, 3000);
    ASSERT_EQ(set->assignments.size(), 1u);
    EXPECT_EQ(set->assignments[0].vm, "web-1");
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_LT(worst_ms, 1000.0);
  EXPECT_EQ(service.heartbeat(beat(++seq)).status().code(), Code::kOk);
  Heartbeat stranger = beat(++seq);
  stranger.host = "h9";
  EXPECT_EQ(service.heartbeat(stranger).status().code(), Code::kNotFound);
  busy.wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto state = service.call([](Controller& c) { return c.host("h1")->state; });
  EXPECT_EQ(state, HostState::kOnline);
  service.stop();
}

}  // namespace
}  // namespace tw
