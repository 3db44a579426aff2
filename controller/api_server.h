// The controller's HTTP face: the REST API (docs/api.md), agent endpoints,
// Prometheus metrics, and the dashboard's static files from the web dir.
// Handlers never touch the Controller directly: they go through the
// ControllerService's loop thread.
#pragma once

#include <memory>
#include <string>

#include "controller/service.h"
#include "tw/status.h"

namespace httplib {
class Server;
}

namespace tw {

struct ApiServerOptions {
  std::string host = "127.0.0.1";
  int port = 7800;          // 0 = any free port (see ApiServer::port())
  std::string token;        // required on POST and /api/v1/agents/*
  std::string web_dir;      // dashboard files; only files under it are served
};

class ApiServer {
 public:
  ApiServer(ControllerService& service, ApiServerOptions options);
  ~ApiServer();

  // Binds the listening socket. Errors: kUnavailable when the address is taken.
  Status bind();
  // Serves until stop() (blocks). REQUIRES: bind() succeeded.
  void serve();
  void stop();
  int port() const { return port_; }

 private:
  void routes();

  ControllerService& service_;
  ApiServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
};

// True when `relative` names a file inside web_dir (no "..", no absolute path,
// no symlink out of it); sets `resolved` to its path. Exposed for tests.
bool resolveWebPath(const std::string& web_dir, const std::string& relative, std::string& resolved);

}  // namespace tw
