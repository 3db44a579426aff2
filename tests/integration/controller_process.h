// What the integration tests that run tierwarden-controller replicas as
// processes on one etcd share (ha_controllers_test.cc, ha_leader_kill_test.cc,
// ha_real_agents_test.cc): a replica's command line, its URLs, the operator's
// token from the shared state dir, a client of one replica, and the leader
// that every live replica names. TW_BIN_DIR comes from tests/CMakeLists.txt.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/http_client.h"
#include "tw/json.h"

namespace tw::testing_replicas {

// Replica `name` on the shared state dir (the tokens every replica needs),
// plain HTTP on loopback, no guest listener, the etcd store at `store_url`
// under `cluster`, a 100 ms tick.
inline std::vector<std::string> replicaCommand(const std::filesystem::path& dir, const std::string& name,
                                               int port, int agent_port, const std::string& store_url,
                                               const std::string& cluster, int leader_ttl_ms) {
  return {std::string(TW_BIN_DIR) + "/tierwarden-controller",
          "--state-dir", dir.string(), "--insecure-http",
          "--listen", "127.0.0.1:" + std::to_string(port),
          "--agent-listen", "127.0.0.1:" + std::to_string(agent_port),
          "--guest-listen", "off", "--store", store_url, "--cluster", cluster,
          "--identity", name, "--leader-ttl-ms", std::to_string(leader_ttl_ms), "--tick-ms", "100"};
}

// "http://127.0.0.1:<port>,..." for every replica, by name.
inline std::string loopbackUrls(const std::map<std::string, int>& ports) {
  std::string out;
  for (const auto& [name, port] : ports) {
    out += (out.empty() ? "" : ",") + ("http://127.0.0.1:" + std::to_string(port));
  }
  return out;
}

// The operator's token that the first replica wrote into the state dir.
inline std::string stateDirToken(const std::filesystem::path& dir) {
  std::ifstream in(dir / "token");
  std::string t;
  std::getline(in, t);
  return t;
}

// A client of one replica (no list: it asks that one).
inline std::unique_ptr<ApiClient> replicaClient(int port, const std::string& token,
                                                Millis read_timeout_ms = 3000) {
  ApiClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(port);
  o.token = token;
  o.connect_timeout_ms = 1000;
  o.read_timeout_ms = read_timeout_ms;
  return std::make_unique<ApiClient>(o);
}

// The leader that every live replica (a key of `children`) names, once it
// says it acts (self == leader on its own /controllers); "" if none. Only the
// live replicas are asked: a killed one answers nothing. clientOf(name) gives
// a client of one replica.
template <typename Children>
std::string actingLeader(const Children& children,
                         const std::function<std::unique_ptr<ApiClient>(const std::string&)>& clientOf) {
  std::string leader;
  for (const auto& [name, child] : children) {
    Result<Json> j = clientOf(name)->get("/api/v1/controllers");
    if (!j.isOk() || !(*j)["leader"].is_string()) return "";
    const std::string named = (*j)["leader"].get<std::string>();
    if (!leader.empty() && named != leader) return "";
    leader = named;
  }
  if (children.count(leader) == 0) return "";
  Result<Json> j = clientOf(leader)->get("/api/v1/controllers");
  if (!j.isOk() || (*j)["self"] != leader || (*j)["leader"] != leader) return "";
  return leader;
}

}  // namespace tw::testing_replicas
