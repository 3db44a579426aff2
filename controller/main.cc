// tierwarden-controller: parses flags, builds the components, runs the loop.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <pthread.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "controller/api_server.h"
#include "controller/controller.h"
#include "controller/libvirt_host_connector.h"
#include "controller/service.h"
#include "tw/log.h"
#include "tw/policy.h"
#include "tw/store.h"

namespace {

// Reads the token file, creating it (mode 0600, 32 random bytes as hex) on first start.
tw::Result<std::string> loadOrCreateToken(const std::string& path) {
  std::ifstream in(path);
  if (in) {
    std::string token;
    std::getline(in, token);
    if (token.size() < 16) return tw::invalidArgument("token file " + path + " holds no usable token");
    return token;
  }
  std::random_device rd;
  std::string token;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) {
    unsigned v = rd() & 0xff;
    token += hex[v >> 4];
    token += hex[v & 15];
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return tw::unavailable("cannot create token file " + path + ": " + std::strerror(errno));
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) return tw::unavailable("cannot write token file " + path);
  return token;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tierwarden-controller: keeps VM tiers placed, running and healed"};
  std::string state_dir = "/var/lib/tierwarden";
  std::string listen = "127.0.0.1:7800";
  std::string token_file;
  std::string policy_dir;
  std::string web_dir = TW_DEFAULT_WEB_DIR;
  std::string log_level = "info";
  int tick_ms = 100;
  app.set_config("--config", "", "config file (key = value lines, the long flag names)");
  app.add_option("--state-dir", state_dir, "directory of the SQLite database and the token")->capture_default_str();
  app.add_option("--listen", listen, "address:port of the API and dashboard")->capture_default_str();
  app.add_option("--token-file", token_file, "API token file (default <state-dir>/token; created on first start)");
  app.add_option("--policy-dir", policy_dir, "apply the *.yaml policies in this directory at start");
  app.add_option("--web-dir", web_dir, "dashboard files")->capture_default_str();
  app.add_option("--tick-ms", tick_ms, "reconcile loop period")->check(CLI::Range(10, 10000))->capture_default_str();
  app.add_option("--log-level", log_level, "debug|info|warn|error")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  tw::log::init("controller", log_level);

  auto fail = [](const std::string& msg) {
    std::cerr << "tierwarden-controller: " << msg << "\n";
    return 1;
  };
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return fail("--listen must be address:port, got '" + listen + "'");
  std::string address = listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    return fail("--listen must be address:port, got '" + listen + "'");
  }

  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return fail("cannot create state dir " + state_dir + ": " + ec.message());
  ::chmod(state_dir.c_str(), 0700);
  if (token_file.empty()) token_file = state_dir + "/token";
  auto token = loadOrCreateToken(token_file);
  if (!token.isOk()) return fail(token.status().toString());

  auto store = tw::Store::open(state_dir + "/tierwarden.db");
  if (!store.isOk()) return fail(store.status().toString());
  tw::LibvirtHostConnector host_connector;
  tw::Controller controller(**store, tw::SystemClock::instance(), &host_connector);
  tw::Status s = controller.recover();
  if (!s.isOk()) return fail(s.toString());

  if (!policy_dir.empty()) {
    auto files = tw::readPolicyFiles(policy_dir);
    if (!files.isOk()) return fail(files.status().toString());
    auto applied = controller.applyPolicy(*files, false);
    if (!applied.isOk()) return fail(applied.status().toString());
    for (const auto& w : applied->warnings) tw::log::warn("policy: {}", w);
  }

  tw::ControllerService service(controller, tick_ms);
  tw::ApiServer server(service, tw::ApiServerOptions{address, port, *token, web_dir});
  s = server.bind();
  if (!s.isOk()) return fail(s.toString());
  // SIGINT/SIGTERM are taken by one thread with sigwait (no work in a handler).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::thread([&server, &service, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    tw::log::info("signal {}: stopping", sig);
    service.releaseWaiters();
    server.stop();
  }).detach();
  service.start();
  tw::log::info("listening on http://{}:{} (state dir {}, token file {})", address, server.port(),
                state_dir, token_file);
  server.serve();
  service.stop();
  tw::log::info("stopped");
  return 0;
}
