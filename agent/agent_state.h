// What an agent keeps on its host so that a restarted agent can decide
// alone while the controller is out of reach (docs/fencing.md, "A restarted
// agent"): the peer list of its last assignment set (to count the votes it
// reaches), the end of the lease it last held (so that the new process never
// believes in a longer lease than the controller counts), and whether it
// self-fenced (then it starts nothing until a fresh set).
//
// It is never a source of what to run: a restarted agent starts nothing from
// it, and restarts nothing; it keeps the VMs that run when the rules say it
// may (held), like the process before it.
//
// FileAgentStateStore writes `<dir>/agent-state.json` atomically: a temp
// file, fsync, rename, fsync of the directory. Threads: the agent's core only.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

struct PersistedAgentState {
  // Of the boot it was written in; a lease end is only valid in the same boot
  // (after a reboot nothing of ours runs).
  std::string boot_id;
  // End of the lease last renewed (agent clock); 0 = none. Saved now and then,
  // so possibly older than the real one: never later (safe: the new process
  // judges its isolation earlier, never later).
  Millis lease_until_ms = 0;
  // The peers of the last set (other declared hosts) and their check timeout.
  bool has_peers = false;
  std::vector<PeerInfo> peers;
  Millis peer_timeout_ms = 3000;
  // The set last applied (for the operator: which it was, what it named).
  int64_t assignments_version = 0;
  std::string controller_id;
  std::vector<std::string> vms;
  // Non-empty: the agent self-fenced and no controller answered a heartbeat
  // carrying it yet.
  std::string self_fence_reason;

  bool operator==(const PersistedAgentState& o) const;
};

std::string encodeAgentState(const PersistedAgentState& s);
// Errors: invalid argument (with what is wrong) for anything but a document
// encodeAgentState wrote.
Result<PersistedAgentState> decodeAgentState(const std::string& text);

class AgentStateStore {
 public:
  virtual ~AgentStateStore() = default;
  // nullopt: nothing saved yet. Errors: unreadable or malformed.
  virtual Result<std::optional<PersistedAgentState>> load() = 0;
  virtual Status save(const PersistedAgentState& state) = 0;
  // Saves `state` when the caller knows that it differs from what this store
  // last saved or loaded in lease_until_ms alone (Agent::saveState's case on
  // nearly every heartbeat): a store may then write the lease end alone.
  // REQUIRES: as said; else save().
  virtual Status saveLeaseEnd(const PersistedAgentState& state) { return save(state); }
};

// For tests and the simulator: survives the Agent, not the process.
class MemoryAgentStateStore final : public AgentStateStore {
 public:
  Result<std::optional<PersistedAgentState>> load() override;
  Status save(const PersistedAgentState& state) override;
  // Copies the lease end only (not the peer list: 999 peers at 1,000 hosts).
  Status saveLeaseEnd(const PersistedAgentState& state) override;
  int saves() const { return saves_; }

 private:
  std::optional<PersistedAgentState> state_;
  int saves_ = 0;
};

class FileAgentStateStore final : public AgentStateStore {
 public:
  explicit FileAgentStateStore(std::string dir) : dir_(std::move(dir)) {}
  Result<std::optional<PersistedAgentState>> load() override;
  Status save(const PersistedAgentState& state) override;
  std::string path() const { return dir_ + "/agent-state.json"; }

 private:
  std::string dir_;
};

// This boot's id (/proc/sys/kernel/random/boot_id); "" when unknown.
std::string currentBootId();

}  // namespace tw
