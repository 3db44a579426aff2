// The daemon's HostConnector: one libvirt connection per host (keepalive
// 1 s x 2, set by connectLibvirt), each owned by its own thread that pings it
// every 500 ms and runs fence actions, so a dead or partitioned host never
// blocks the controller's loop. Fence agents run in their own threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controller/host_connector.h"

namespace tw {

class LibvirtHostConnector final : public HostConnector {
 public:
  LibvirtHostConnector() = default;
  ~LibvirtHostConnector() override;

  void setHosts(const std::vector<HostSpec>& hosts) override;
  bool libvirtAlive(const std::string& host) override;
  void fenceByLibvirt(const std::string& host) override;
  void fenceByAgent(const std::string& host, const std::string& agent,
                    const std::vector<std::string>& argv, Millis timeout_ms) override;
  std::vector<FenceResult> takeResults() override;
  Status killVm(const std::string& host, const std::string& vm) override;

 private:
  struct Watcher {
    std::string host;
    std::string uri;
    std::thread thread;
    std::atomic<bool> alive{false};
    // Steady ms when the check under way started (0: none). A check that
    // hangs (a reconnect to an address that went away blocks in TCP connect
    // for tens of seconds) counts as "does not answer" after kCheckBoundMs.
    std::atomic<int64_t> check_started_ms{0};
    std::mutex mu;  // guards stop, fence_requested
    std::condition_variable cv;
    bool stop = false;
    bool fence_requested = false;
    std::vector<std::string> kills;  // VMs to destroy, guarded by mu
  };
  void watch(Watcher& w);
  void push(FenceResult r);

  std::map<std::string, std::unique_ptr<Watcher>> watchers_;  // controller thread only
  std::mutex results_mu_;                                     // guards results_, commands_
  std::vector<FenceResult> results_;
  std::vector<std::thread> commands_;
};

// Runs argv (argv[0] looked up in PATH when it has no '/') without a shell,
// in its own process group, stdin from /dev/null, stdout and stderr the
// controller's, no other file descriptor, default signal dispositions and
// mask; kills the group after timeout_ms. Returns the exit code, or -1 on
// timeout / failure to run. `detail` ("exited 1", "killed by signal 9",
// "timed out after 30.0s", "cannot run it: No such file or directory")
// never holds argv. Blocks until the process ends.
int runFenceAgent(const std::vector<std::string>& argv, Millis timeout_ms, std::string& detail);

}  // namespace tw
