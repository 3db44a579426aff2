#include "agent/agent_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "tw/json.h"

namespace tw {

namespace {

constexpr int kFormat = 1;

void to_json(Json& j, const PersistedAgentState& s) {
  j = Json{{"format", kFormat},
           {"boot_id", s.boot_id},
           {"lease_until_ms", s.lease_until_ms},
           {"has_peers", s.has_peers},
           {"peers", s.peers},
           {"peer_timeout_ms", s.peer_timeout_ms},
           {"assignments_version", s.assignments_version},
           {"controller_id", s.controller_id},
           {"vms", s.vms},
           {"self_fence_reason", s.self_fence_reason}};
}

void from_json(const Json& j, PersistedAgentState& s) {
  j.at("boot_id").get_to(s.boot_id);
  j.at("lease_until_ms").get_to(s.lease_until_ms);
  j.at("has_peers").get_to(s.has_peers);
  j.at("peers").get_to(s.peers);
  j.at("peer_timeout_ms").get_to(s.peer_timeout_ms);
  j.at("assignments_version").get_to(s.assignments_version);
  j.at("controller_id").get_to(s.controller_id);
  j.at("vms").get_to(s.vms);
  j.at("self_fence_reason").get_to(s.self_fence_reason);
}

Status syncFd(int fd, const std::string& what) {
  if (::fsync(fd) != 0) return unavailable("fsync " + what + ": " + std::strerror(errno));
  return Status::ok();
}

}  // namespace

bool PersistedAgentState::operator==(const PersistedAgentState& o) const {
  auto samePeers = [](const std::vector<PeerInfo>& a, const std::vector<PeerInfo>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].host != b[i].host || a[i].address != b[i].address) return false;
    }
    return true;
  };
  return boot_id == o.boot_id && lease_until_ms == o.lease_until_ms && has_peers == o.has_peers &&
         samePeers(peers, o.peers) && peer_timeout_ms == o.peer_timeout_ms &&
         assignments_version == o.assignments_version && controller_id == o.controller_id &&
         vms == o.vms && self_fence_reason == o.self_fence_reason;
}

std::string encodeAgentState(const PersistedAgentState& s) {
  Json j;
  to_json(j, s);
  return j.dump(2) + "\n";
}

Result<PersistedAgentState> decodeAgentState(const std::string& text) {
  Result<Json> j = parseJson(text);
  if (!j) return j.status();
  if (!j->is_object()) return invalidArgument("bad agent state: not a JSON object");
  Status numbers = checkNumbersFitIntegers(*j);
  if (!numbers.isOk()) return numbers;
  if (!j->contains("format") || !(*j)["format"].is_number_integer() ||
      (*j)["format"].get<int64_t>() != kFormat) {
    return invalidArgument("bad agent state: no \"format\": 1 (written by another version?)");
  }
  PersistedAgentState s;
  try {
    from_json(*j, s);
  } catch (const nlohmann::json::exception& e) {
    return invalidArgument(std::string("bad agent state: ") + e.what());
  }
  if (s.lease_until_ms < 0 || s.peer_timeout_ms <= 0) {
    return invalidArgument("bad agent state: negative lease end or peer timeout");
  }
  return s;
}

Result<std::optional<PersistedAgentState>> MemoryAgentStateStore::load() { return state_; }

Status MemoryAgentStateStore::save(const PersistedAgentState& state) {
  state_ = state;
  ++saves_;
  return Status::ok();
}

Status MemoryAgentStateStore::saveLeaseEnd(const PersistedAgentState& state) {
  if (!state_) return save(state);
  state_->lease_until_ms = state.lease_until_ms;
  ++saves_;
  return Status::ok();
}

Result<std::optional<PersistedAgentState>> FileAgentStateStore::load() {
  std::ifstream f(path());
  if (!f) {
    if (errno == ENOENT) return std::optional<PersistedAgentState>();
    return unavailable("cannot read " + path() + ": " + std::strerror(errno));
  }
  std::stringstream text;
  text << f.rdbuf();
  Result<PersistedAgentState> s = decodeAgentState(text.str());
  if (!s) return s.status().withContext(path());
  return std::optional<PersistedAgentState>(std::move(s).value());
}

Status FileAgentStateStore::save(const PersistedAgentState& state) {
  const std::string tmp = path() + ".tmp";
  const std::string text = encodeAgentState(state);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable("cannot write " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      return unavailable("cannot write " + tmp + ": " + why);
    }
    done += static_cast<size_t>(n);
  }
  Status synced = syncFd(fd, tmp);
  ::close(fd);
  TW_RETURN_IF_ERROR(synced);
  if (::rename(tmp.c_str(), path().c_str()) != 0) {
    return unavailable("cannot rename " + tmp + ": " + std::strerror(errno));
  }
  const int dir = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return unavailable("cannot open " + dir_ + ": " + std::strerror(errno));
  Status dir_synced = syncFd(dir, dir_);
  ::close(dir);
  return dir_synced;
}

std::string currentBootId() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!(f >> id)) return "";
  return id;
}

}  // namespace tw
