#include "controller/libvirt_host_connector.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "tw/hypervisor.h"
#include "tw/log.h"

namespace tw {

namespace {

// A libvirt check that takes longer than this counts as "does not answer".
constexpr int64_t kCheckBoundMs = 1000;

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace


LibvirtHostConnector::~LibvirtHostConnector() {
  for (auto& [_, w] : watchers_) {
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->stop = true;
    }
    w->cv.notify_all();
  }
  for (auto& [_, w] : watchers_)
    if (w->thread.joinable()) w->thread.join();
  std::lock_guard<std::mutex> lock(results_mu_);
  for (auto& t : commands_)
    if (t.joinable()) t.join();
}

void LibvirtHostConnector::setHosts(const std::vector<HostSpec>& hosts) {
  std::map<std::string, std::string> wanted;
  for (const auto& h : hosts) {
    // test:///default is a fake private to each process: the controller's
    // copy would say nothing about the host, so it is not a second signal.
    if (h.uri.empty() || h.uri == "test:///default") continue;
    wanted[h.name] = h.uri;
  }
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    auto w = wanted.find(it->first);
    if (w != wanted.end() && w->second == it->second->uri) {
      ++it;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(it->second->mu);
      it->second->stop = true;
    }
    it->second->cv.notify_all();
    if (it->second->thread.joinable()) it->second->thread.join();
    it = watchers_.erase(it);
  }
  for (const auto& [name, uri] : wanted) {
    if (watchers_.count(name)) continue;
    auto w = std::make_unique<Watcher>();
    w->host = name;
    w->uri = uri;
    Watcher* raw = w.get();
    w->thread = std::thread([this, raw] { watch(*raw); });
    watchers_[name] = std::move(w);
  }
}

bool LibvirtHostConnector::libvirtAlive(const std::string& host) {
  auto it = watchers_.find(host);
  if (it == watchers_.end()) return false;
  const int64_t started = it->second->check_started_ms.load();
  if (started != 0 && steadyMs() - started > kCheckBoundMs) return false;  // hangs
  return it->second->alive.load();
}

void LibvirtHostConnector::fenceByLibvirt(const std::string& host) {
  auto it = watchers_.find(host);
  if (it == watchers_.end()) {
    push({host, "libvirt", false, "no libvirt connection to this host"});
    return;
  }
  {
    std::lock_guard<std::mutex> lock(it->second->mu);
    it->second->fence_requested = true;
  }
  it->second->cv.notify_all();
}

void LibvirtHostConnector::fenceByAgent(const std::string& host, const std::string& agent,
                                        const std::vector<std::string>& argv, Millis timeout_ms) {
  std::lock_guard<std::mutex> lock(results_mu_);
  commands_.emplace_back([this, host, agent, argv, timeout_ms] {
    std::string detail;
    int code = runFenceAgent(argv, timeout_ms, detail);
    push({host, "agent", code == 0, detail, agent});
  });
}

Status LibvirtHostConnector::killVm(const std::string& host, const std::string& vm) {
  auto it = watchers_.find(host);
  if (it == watchers_.end() || !it->second->alive.load()) {
    return failedPrecondition("the controller has no working libvirt connection to host '" + host + "'");
  }
  {
    std::lock_guard<std::mutex> lock(it->second->mu);
    it->second->kills.push_back(vm);
  }
  it->second->cv.notify_all();
  return Status::ok();
}

std::vector<FenceResult> LibvirtHostConnector::takeResults() {
  std::lock_guard<std::mutex> lock(results_mu_);
  std::vector<FenceResult> out;
  out.swap(results_);
  return out;
}

void LibvirtHostConnector::push(FenceResult r) {
  std::lock_guard<std::mutex> lock(results_mu_);
  results_.push_back(std::move(r));
}

void LibvirtHostConnector::watch(Watcher& w) {
  std::unique_ptr<Hypervisor> hv;
  bool was_alive = false;
  for (;;) {
    bool fence = false;
    std::vector<std::string> kills;
    {
      std::unique_lock<std::mutex> lock(w.mu);
      if (w.stop) return;
      fence = w.fence_requested;
      w.fence_requested = false;
      kills.swap(w.kills);
    }
    w.check_started_ms = steadyMs();
    if (!hv) {
      auto c = connectLibvirt(w.uri);
      if (c.isOk()) hv = std::move(c).value();
    }
    bool alive = hv && hv->ping().isOk();
    w.alive = alive;
    w.check_started_ms = 0;
    if (alive != was_alive) {
      log::info("libvirt of host '{}' {}", w.host, alive ? "answers" : "does not answer");
      was_alive = alive;
    }
    for (const auto& vm : kills) {
      Status s = alive ? hv->destroy(vm) : unavailable("libvirt not answering");
      if (s.isOk()) {
        log::warn("killed vm '{}' on host '{}' (demo kill)", vm, w.host);
      } else {
        log::error("cannot kill vm '{}' on host '{}': {}", vm, w.host, s.toString());
      }
    }
    if (fence) {
      FenceResult r{w.host, "libvirt", false, ""};
      auto doms = alive ? hv->listManaged() : Result<std::vector<DomainStatus>>(unavailable("libvirt not answering"));
      if (!doms.isOk()) {
        r.detail = doms.status().message();
      } else {
        int destroyed = 0;
        Status last;
        for (const auto& d : *doms) {
          if (!isActive(d.state)) continue;
          Status s = hv->destroy(d.meta.vm);
          if (s.isOk()) ++destroyed; else last = s;
        }
        auto after = hv->listManaged();
        int still = 0;
        if (after.isOk())
          for (const auto& d : *after) still += isActive(d.state);
        r.confirmed = after.isOk() && still == 0;
        r.detail = r.confirmed ? "destroyed " + std::to_string(destroyed) + " domains"
                               : (last.isOk() ? std::to_string(still) + " domains still run" : last.message());
      }
      push(r);
    }
    std::unique_lock<std::mutex> lock(w.mu);
    w.cv.wait_for(lock, std::chrono::milliseconds(500),
                  [&] { return w.stop || w.fence_requested || !w.kills.empty(); });
  }
}

int runFenceAgent(const std::vector<std::string>& argv, Millis timeout_ms, std::string& detail) {
  if (argv.empty() || argv[0].empty()) {
    detail = "cannot run it: no program";
    return -1;
  }
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  // The controller blocks SIGINT/SIGTERM in its threads and ignores SIGPIPE;
  // a child keeps both across exec unless told otherwise.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // sockets, the database
  pid_t pid = -1;
  int err = ::posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) {
    detail = std::string("cannot run it: ") + std::strerror(err);
    return -1;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        detail = "exited " + std::to_string(code);
        return code;
      }
      detail = "killed by signal " + std::to_string(WTERMSIG(status));
      return -1;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      char buf[48];
      std::snprintf(buf, sizeof buf, "timed out after %.1fs",
                    static_cast<double>(timeout_ms) / 1000.0);
      detail = buf;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace tw
