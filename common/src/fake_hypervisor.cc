// FakeHypervisor: the in-memory Hypervisor of unit tests and the simulator.
// It follows LibvirtHypervisor's answers (codes, idempotence, event order) so
// that logic tested against it behaves the same on libvirt.
#include "tw/fake_hypervisor.h"
#include "tw/text.h"

#include <filesystem>
#include <fstream>
#include <utility>

namespace tw {

namespace {


Status unmanagedError(const std::string& action, const std::string& vm) {
  return failedPrecondition(action + " vm " + singleQuoted(vm) + ": domain " + singleQuoted(vm) +
                            " exists and is not managed by tierwarden");
}

Status missingError(const std::string& action, const std::string& vm) {
  return notFound(action + " vm " + singleQuoted(vm) + ": no domain named " + singleQuoted(vm));
}

}  // namespace

FakeHypervisor::FakeHypervisor(Capacity capacity) : capacity_(capacity) {}

Status FakeHypervisor::check() const {
  if (hung_ || !powered_) return unavailable("hypervisor not answering");
  return Status::ok();
}

void FakeHypervisor::emit(const std::string& vm, DomainEventKind kind, const std::string& detail) {
  if (!handler_ || hung_ || !powered_) return;
  handler_(DomainEvent{vm, kind, detail});
}

Status FakeHypervisor::ping() { return check(); }

Result<Capacity> FakeHypervisor::capacity() {
  TW_RETURN_IF_ERROR(check());
  return capacity_;
}

Status FakeHypervisor::define(const DomainSpec& spec) {
  TW_RETURN_IF_ERROR(check());
  const std::string& vm = spec.meta.vm;
  if (vm.empty()) return invalidArgument("defining vm: the vm name is empty");
  auto it = doms_.find(vm);
  if (it != doms_.end() && !it->second.managed) return unmanagedError("defining", vm);
  const bool existed = it != doms_.end();
  Dom& dom = doms_[vm];
  dom.spec = spec;
  if (!existed) {
    auto pending = pending_fail_starts_.find(vm);
    if (pending != pending_fail_starts_.end()) {
      dom.fail_starts = pending->second;
      pending_fail_starts_.erase(pending);
    }
  }
  emit(vm, DomainEventKind::kDefined, existed ? "updated" : "added");
  return Status::ok();
}

Status FakeHypervisor::start(const std::string& vm) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return missingError("starting", vm);
  Dom& dom = it->second;
  if (!dom.managed) return unmanagedError("starting", vm);
  if (isActive(dom.state)) return Status::ok();  // idempotent, as LibvirtHypervisor
  if (dom.fail_starts > 0) {
    --dom.fail_starts;
    return internalError("starting vm " + singleQuoted(vm) + ": injected start failure");
  }
  dom.state = DomainState::kRunning;
  dom.forwards.clear();
  ++dom.starts;
  emit(vm, DomainEventKind::kStarted, "booted");
  return Status::ok();
}

Status FakeHypervisor::destroy(const std::string& vm) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return Status::ok();
  Dom& dom = it->second;
  if (!dom.managed) return unmanagedError("destroying", vm);
  if (!isActive(dom.state)) return Status::ok();
  dom.state = DomainState::kShutoff;
  dom.forwards.clear();
  emit(vm, DomainEventKind::kStopped, "destroyed");
  return Status::ok();
}

Status FakeHypervisor::undefine(const std::string& vm) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return Status::ok();
  if (!it->second.managed) return unmanagedError("undefining", vm);
  if (isActive(it->second.state)) {
    return failedPrecondition("undefining vm " + singleQuoted(vm) + ": it is running; destroy it first");
  }
  doms_.erase(it);
  emit(vm, DomainEventKind::kUndefined, "removed");
  return Status::ok();
}

Result<std::vector<DomainStatus>> FakeHypervisor::listManaged() {
  TW_RETURN_IF_ERROR(check());
  std::vector<DomainStatus> out;
  for (const auto& [name, dom] : doms_) {  // std::map: sorted by vm
    if (!dom.managed) continue;
    out.push_back(DomainStatus{dom.spec.meta, dom.state});
  }
  return out;
}

Result<DomainStatus> FakeHypervisor::domainState(const std::string& vm) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return missingError("reading state of", vm);
  if (!it->second.managed) return unmanagedError("reading state of", vm);
  return DomainStatus{it->second.spec.meta, it->second.state};
}

Status FakeHypervisor::subscribe(DomainEventHandler handler) {
  // A local registration, like LibvirtHypervisor's: it works while hung.
  handler_ = std::move(handler);
  return Status::ok();
}

Status FakeHypervisor::migrate(const std::string& vm, const std::string& dest_uri,
                               const MigrateOptions& options) {
  TW_RETURN_IF_ERROR(check());
  const std::string context = "migrating vm " + singleQuoted(vm) + " to " + singleQuoted(dest_uri);
  auto it = doms_.find(vm);
  if (it == doms_.end()) return missingError("migrating", vm);
  if (!it->second.managed) return unmanagedError("migrating", vm);
  if (!isActive(it->second.state)) return failedPrecondition(context + ": domain is not running");

  auto peer_it = peers_.find(dest_uri);
  if (peer_it == peers_.end() || peer_it->second == nullptr) {
    return unavailable(context + ": cannot connect to the destination");
  }
  FakeHypervisor* peer = peer_it->second;
  if (peer == this) return failedPrecondition(context + ": the destination is this host");
  Status peer_ok = peer->check();
  if (!peer_ok.isOk()) return peer_ok.withContext(context);
  if (fail_migrations_ > 0) {
    --fail_migrations_;
    return internalError(context + ": injected migration failure");
  }
  auto there = peer->doms_.find(vm);
  if (there != peer->doms_.end()) {
    if (!there->second.managed) return unmanagedError("migrating", vm).withContext(context);
    if (isActive(there->second.state)) {
      return failedPrecondition(context + ": the destination already runs it");
    }
  }

  // As libvirt with PERSIST_DEST | UNDEFINE_SOURCE: it runs there first, then
  // leaves here (STOPPED/MIGRATED, then UNDEFINED).
  Dom& dest = peer->doms_[vm];
  dest.spec = it->second.spec;
  if (options.dest_meta.epoch > 0) dest.spec.meta = options.dest_meta;  // DEST_XML
  dest.state = DomainState::kRunning;
  dest.forwards.clear();
  peer->emit(vm, DomainEventKind::kStarted, "migrated");
  doms_.erase(it);
  emit(vm, DomainEventKind::kMigrated, "migrated");
  emit(vm, DomainEventKind::kUndefined, "removed");
  return Status::ok();
}

void FakeHypervisor::failStarts(const std::string& vm, int n) {
  auto it = doms_.find(vm);
  if (it != doms_.end()) {
    it->second.fail_starts = n;
  } else {
    pending_fail_starts_[vm] = n;
  }
}

void FakeHypervisor::crash(const std::string& vm) {
  auto it = doms_.find(vm);
  if (it == doms_.end() || !it->second.managed || !isActive(it->second.state)) return;
  it->second.state = DomainState::kCrashed;
  it->second.forwards.clear();
  emit(vm, DomainEventKind::kCrashed, "crashed");
}

void FakeHypervisor::setHung(bool hung) { hung_ = hung; }

void FakeHypervisor::powerOff() {
  powered_ = false;
  for (auto& [name, dom] : doms_) {
    dom.state = DomainState::kShutoff;
    dom.forwards.clear();
  }
}

void FakeHypervisor::powerOn() { powered_ = true; }

void FakeHypervisor::addUnmanaged(const std::string& name) {
  Dom dom;
  dom.spec.meta.vm = name;
  dom.state = DomainState::kRunning;
  dom.forwards.clear();
  dom.managed = false;
  doms_[name] = dom;
}

void FakeHypervisor::connectPeer(const std::string& uri, FakeHypervisor* peer) {
  peers_[uri] = peer;
}

void FakeHypervisor::failMigrations(int n) { fail_migrations_ = n; }

int FakeHypervisor::startCount(const std::string& vm) const {
  auto it = doms_.find(vm);
  return it == doms_.end() ? 0 : it->second.starts;
}

const DomainSpec* FakeHypervisor::spec(const std::string& vm) const {
  auto it = doms_.find(vm);
  if (it == doms_.end() || !it->second.managed) return nullptr;
  return &it->second.spec;
}

int FakeHypervisor::runningCount() const {
  int n = 0;
  for (const auto& [name, dom] : doms_) {
    if (dom.managed && isActive(dom.state)) ++n;
  }
  return n;
}

bool FakeHypervisor::isRunning(const std::string& vm) const {
  auto it = doms_.find(vm);
  return it != doms_.end() && it->second.managed && isActive(it->second.state);
}

std::vector<std::string> FakeHypervisor::runningVms() const {
  std::vector<std::string> out;
  for (const auto& [name, dom] : doms_) {
    if (dom.managed && isActive(dom.state)) out.push_back(name);
  }
  return out;
}

bool FakeHypervisor::runsExactly(const std::set<std::string>& vms) const {
  auto want = vms.begin();  // both in name order
  for (const auto& [name, dom] : doms_) {
    if (!dom.managed || !isActive(dom.state)) continue;
    if (want == vms.end() || *want != name) return false;
    ++want;
  }
  return want == vms.end();
}

void FakeHypervisor::failBackups(int n) { fail_backups_ = n; }

Result<DiskBackup> FakeHypervisor::backupDisk(const std::string& vm, const std::string& target_path,
                                              bool snapshot_commit_only) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return missingError("backing up", vm);
  if (!it->second.managed) return unmanagedError("backing up", vm);
  const std::string context = "backing up vm " + singleQuoted(vm) + " to " + singleQuoted(target_path);
  if (it->second.state != DomainState::kRunning)
    return failedPrecondition(context + ": domain is not running");
  if (std::filesystem::exists(target_path)) return failedPrecondition(context + ": target exists");
  if (fail_backups_ > 0) {
    --fail_backups_;
    return internalError(context + ": injected failure");
  }
  std::error_code ec;
  const std::string& disk = it->second.spec.disk_path;
  if (!disk.empty() && std::filesystem::exists(disk)) {
    std::filesystem::copy_file(disk, target_path, ec);
  } else {
    std::ofstream out(target_path, std::ios::binary);
    out << "fake backup of vm " << vm << "\n";
    if (!out) ec = std::make_error_code(std::errc::io_error);
  }
  if (ec) return unavailable(context + ": " + ec.message());
  ++backups_;
  DiskBackup b;
  b.bytes = static_cast<int64_t>(std::filesystem::file_size(target_path, ec));
  b.method = snapshot_commit_only ? "snapshot-commit" : "backup-api";
  return b;
}

Status FakeHypervisor::addPortForward(const std::string& vm, const PortForward& forward) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return missingError("forwarding a port of", vm);
  if (!it->second.managed) return unmanagedError("forwarding a port of", vm);
  if (it->second.state != DomainState::kRunning) {
    return failedPrecondition("forwarding a port of vm " + singleQuoted(vm) + ": domain is not running");
  }
  for (const auto& [name, dom] : doms_) {
    for (const PortForward& f : dom.forwards) {
      if (f.host_port == forward.host_port && f.address == forward.address) {
        return failedPrecondition("forwarding a port of vm " + singleQuoted(vm) + ": " + forward.address +
                                  ":" + std::to_string(forward.host_port) + " is taken");
      }
    }
  }
  it->second.forwards.push_back(forward);
  return Status::ok();
}

Result<std::vector<PortForward>> FakeHypervisor::portForwards(const std::string& vm) {
  TW_RETURN_IF_ERROR(check());
  auto it = doms_.find(vm);
  if (it == doms_.end()) return missingError("listing the port forwards of", vm);
  if (!it->second.managed) return unmanagedError("listing the port forwards of", vm);
  return it->second.forwards;
}

}  // namespace tw
