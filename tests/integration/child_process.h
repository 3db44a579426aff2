// Helpers of the integration tests that run real processes: a child process
// that dies with the test, a shell command's output, and polling.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace tw {
namespace testing_process {

// A child process (fork + exec, dies with the test: PR_SET_PDEATHSIG), its
// output in a log file (appended to: a restarted child keeps its old lines).
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& log, bool append = false) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      FILE* f = std::fopen(log.c_str(), append ? "a" : "w");
      if (f != nullptr) {
        ::dup2(fileno(f), 1);
        ::dup2(fileno(f), 2);
      }
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Child() { kill(SIGTERM); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  void kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

inline CommandResult run(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Polls `cond` every 100 ms until it holds or `seconds` pass (other
// processes cannot notify a test).
inline bool eventually(const std::function<bool()>& cond, double seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(int(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return cond();
}

}  // namespace testing_process
}  // namespace tw
