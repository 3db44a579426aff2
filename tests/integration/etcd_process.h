// A real single-member etcd for integration tests: started once per test
// process on free loopback ports in a temp dir, stopped (and its dir
// removed) at exit. Fast elections (--election-timeout 100 ms), and the
// transaction limit left at etcd's default 128 on purpose.
// EtcdCluster: the same with three members (a real raft quorum), for the HA
// tests that must not depend on one etcd process.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "free_port.h"
#include "tw/etcd_client.h"

namespace tw {
namespace testing_etcd {

using testing_ports::freeLoopbackPort;  // free_port.h

inline std::string etcdBinary() {
  for (const char* p : {"/usr/bin/etcd", "/usr/local/bin/etcd"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

// Starts etcd (argv[0] its binary) with stdout and stderr in `log`: its pid,
// or -1. fork + exec rather than posix_spawn, for PR_SET_PDEATHSIG: etcd dies
// with this test process even when it is killed (a ctest timeout, a closed
// pipe) and never runs its static destructors.
inline pid_t spawnEtcd(std::vector<std::string> argv, const std::string& log) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ::execv(args[0], args.data());
  ::_exit(127);
}

class EtcdProcess {
 public:
  // The process's etcd, started on first use; nullptr when etcd is not
  // installed or does not come up (tests skip then).
  static EtcdProcess* shared() {
    static std::unique_ptr<EtcdProcess> instance = start();
    return instance.get();
  }

  const std::string& url() const { return url_; }  // http://127.0.0.1:PORT
  std::string storeUrl() const { return "etcd://" + url_.substr(7); }

  std::unique_ptr<EtcdClient> client() const {
    HttpEtcdOptions options;
    options.endpoints = {url_};
    auto c = makeHttpEtcdClient(options);
    return c.isOk() ? std::move(c).value() : nullptr;
  }

  ~EtcdProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

 private:
  static std::unique_ptr<EtcdProcess> start() {
    const std::string binary = etcdBinary();
    if (binary.empty()) return nullptr;
    auto p = std::unique_ptr<EtcdProcess>(new EtcdProcess());
    std::string templ = (std::filesystem::temp_directory_path() / "tw-etcd-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) return nullptr;
    p->dir_ = templ;
    const int client_port = freeLoopbackPort();
    const int peer_port = freeLoopbackPort();
    p->url_ = "http://127.0.0.1:" + std::to_string(client_port);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
    std::vector<std::string> argv = {binary,
                                     "--name", "t",
                                     "--data-dir", p->dir_ + "/data",
                                     "--listen-client-urls", p->url_,
                                     "--advertise-client-urls", p->url_,
                                     "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer,
                                     "--initial-cluster", "t=" + peer,
                                     "--heartbeat-interval", "20",
                                     "--election-timeout", "100",
                                     "--log-level", "warn"};
    p->pid_ = spawnEtcd(std::move(argv), p->dir_ + "/etcd.log");
    if (p->pid_ < 0) return nullptr;
    // Ready when a linearizable read answers (etcd cannot tell us otherwise).
    auto client = p->client();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      if (client->range("/ready", "").isOk()) return p;
      if (::waitpid(p->pid_, nullptr, WNOHANG) != 0) break;  // exited
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return nullptr;
  }

  EtcdProcess() = default;
  pid_t pid_ = -1;
  std::string dir_;
  std::string url_;
};

// A real 3-member etcd cluster on loopback (each member its own process, data
// dir and ports), started once per test process like EtcdProcess. Elections
// are a little slower than the single member's (heartbeat 50 ms, election
// 500 ms): three members share two cores with the controllers under test.
class EtcdCluster {
 public:
  static EtcdCluster* shared() {
    static std::unique_ptr<EtcdCluster> instance = start(3);
    return instance.get();
  }

  // "etcd://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C"
  std::string storeUrl() const {
    std::string out = "etcd://";
    for (size_t i = 0; i < urls_.size(); ++i) out += (i ? "," : "") + urls_[i].substr(7);
    return out;
  }
  const std::vector<std::string>& urls() const { return urls_; }

  std::unique_ptr<EtcdClient> client() const {
    HttpEtcdOptions options;
    options.endpoints = urls_;
    auto c = makeHttpEtcdClient(options);
    return c.isOk() ? std::move(c).value() : nullptr;
  }

  ~EtcdCluster() {
    for (pid_t pid : pids_) {
      if (pid > 0) ::kill(pid, SIGKILL);
    }
    for (pid_t pid : pids_) {
      if (pid > 0) ::waitpid(pid, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

 private:
  static std::unique_ptr<EtcdCluster> start(int members) {
    const std::string binary = etcdBinary();
    if (binary.empty()) return nullptr;
    auto c = std::unique_ptr<EtcdCluster>(new EtcdCluster());
    std::string templ = (std::filesystem::temp_directory_path() / "tw-etcd3-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) return nullptr;
    c->dir_ = templ;
    std::vector<std::string> peers;
    std::string initial;
    for (int i = 0; i < members; ++i) {
      c->urls_.push_back("http://127.0.0.1:" + std::to_string(freeLoopbackPort()));
      peers.push_back("http://127.0.0.1:" + std::to_string(freeLoopbackPort()));
      initial += (i ? "," : "") + ("m" + std::to_string(i) + "=" + peers.back());
    }
    for (int i = 0; i < members; ++i) {
      const std::string name = "m" + std::to_string(i);
      std::vector<std::string> argv = {binary,
                                       "--name", name,
                                       "--data-dir", c->dir_ + "/" + name,
                                       "--listen-client-urls", c->urls_[i],
                                       "--advertise-client-urls", c->urls_[i],
                                       "--listen-peer-urls", peers[i],
                                       "--initial-advertise-peer-urls", peers[i],
                                       "--initial-cluster", initial,
                                       "--initial-cluster-state", "new",
                                       "--initial-cluster-token", "tw-test",
                                       "--heartbeat-interval", "50",
                                       "--election-timeout", "500",
                                       "--pre-vote",
                                       "--log-level", "warn"};
      const pid_t pid = spawnEtcd(std::move(argv), c->dir_ + "/" + name + ".log");
      if (pid < 0) return nullptr;
      c->pids_.push_back(pid);
    }
    auto client = c->client();
    if (client == nullptr) return nullptr;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (client->range("/ready", "").isOk()) return c;
      for (pid_t pid : c->pids_) {
        if (::waitpid(pid, nullptr, WNOHANG) != 0) return nullptr;  // a member exited
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return nullptr;
  }

  EtcdCluster() = default;
  std::vector<pid_t> pids_;
  std::string dir_;
  std::vector<std::string> urls_;
};

}  // namespace testing_etcd
}  // namespace tw
