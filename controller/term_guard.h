// TermGuard: whether what the controller decided in this step may leave the
// process (issue 14, docs/ha.md "A deposed leader's step ends at the refused
// write").
//
// A controller step (a tick, a heartbeat, an agent's event) writes to the
// store and then acts outward: it publishes assignment sets (agents run
// them: placements, restarts, migration orders, floating addresses),
// answers the heartbeat (which renews the agent's lease), runs a fence
// (libvirt destroy, a fence agent) or kills a domain. On etcd each write is
// its own guarded txn; when etcd refuses one because our term is over
// (EtcdStoreOptions::on_deposed -> LeaderLease::depose), the rest of the
// step still runs in memory. This guard is asked before every outward act:
//
//  - deposed: the term this controller acts for is over (the replica's lease
//    says it no longer leads, or it leads a newer term): nothing more leaves
//    the process, ever (the daemon exits, status 75);
//  - a store write of the current step failed, for any reason: what this
//    step decided is not in the store, so it does not leave the process
//    either. The next step starts clean: a transient etcd error (timeout,
//    no quorum for a moment, a lost id-counter race) silences the one step
//    whose write failed and deposes nothing.
//
// Who can make it fire by accident: etcd or the disk failing writes (each
// failed step sends nothing; sets withheld are pushed at the next step
// that writes fine, a fence withheld reports "not confirmed" and falls back
// as a failed fence does); the replica's own lease deadline passing while
// etcd is slow (that ends the term anyway). A read that fails never fires
// it.
//
// Threads: the controller's thread only (like Controller).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "controller/pending_writes.h"
#include "tw/clock.h"
#include "tw/status.h"
#include "tw/store.h"

namespace tw {

class TermGuard {
 public:
  // The single controller on SQLite: always leads, term 0.
  TermGuard() = default;

  // An etcd replica acting for `term`; `leads()` answers whether this
  // replica still leads that term (LeaderLease: isLeader() && term() == T).
  // REQUIRES: leads is cheap and never blocks on etcd.
  void setTerm(int64_t term, std::function<bool()> leads);
  // The term assignment sets carry (AssignmentSet::term); 0 on SQLite.
  int64_t term() const { return term_; }

  // A new step: forgets the last step's failed writes.
  void beginStep();
  // A store write of this step failed (GuardedStore calls it).
  void writeFailed(const Status& why);
  // Whether this step's decisions may leave the process. When not, logs
  // `what` was withheld, once per step (and "term over" once for good).
  bool mayAct(const std::string& what);
  // The term this controller acts for is over.
  bool deposed() const;
  // Why mayAct() says no ("" when it says yes).
  std::string whyNot() const;

  // Assignment sets a withheld step did not publish (host -> version): the
  // next step that may act publishes them.
  void withhold(const std::string& host, int64_t version) { withheld_[host] = version; }
  bool hasWithheld() const { return !withheld_.empty(); }
  std::map<std::string, int64_t> takeWithheld() { return std::exchange(withheld_, {}); }

  // Steps whose outward acts were withheld (tests, metrics).
  int64_t withheldSteps() const { return withheld_steps_; }

 private:
  int64_t term_ = 0;
  std::function<bool()> leads_;
  bool write_failed_ = false;
  std::string write_error_;
  bool said_this_step_ = false;
  bool said_deposed_ = false;
  int64_t withheld_steps_ = 0;
  std::map<std::string, int64_t> withheld_;
};

// A Store that tells a TermGuard of every write that fails (reads pass
// through unwatched), and keeps the failed whole-record writes to write them
// again (controller/pending_writes.h). The Controller writes through one of
// these.
class GuardedStore final : public Store {
 public:
  // REQUIRES: inner and guard outlive this.
  GuardedStore(Store& inner, TermGuard& guard) : inner_(inner), guard_(guard) {}

  // A controller step begins (TermGuard::beginStep()), then the writes of
  // earlier steps that failed are written again, at most every
  // kRewriteEveryMs while they keep failing. While any is not in the store
  // (failed again, or not tried yet), the step counts as one whose write
  // failed: it acts on nothing. Not inside a batch or transaction.
  void beginStep(Millis now);
  static constexpr Millis kRewriteEveryMs = 250;
  const PendingWrites& pending() const { return pending_; }
  // Writes written again after they had failed (tests, logs).
  int64_t rewritten() const { return rewritten_; }

  int schemaVersion() const override { return inner_.schemaVersion(); }
  void setPolicyCommitListener(PolicyCommitListener listener) override {
    inner_.setPolicyCommitListener(std::move(listener));
  }
  Status transaction(const std::function<Status()>& body) override;
  Status batch(const std::function<Status()>& body) override;
  Result<int64_t> insertPolicy(const PolicyRecord& record) override { return note(inner_.insertPolicy(record)); }
  Result<std::optional<PolicyRecord>> latestPolicy() override { return inner_.latestPolicy(); }
  Status replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) override {
    return note(inner_.replaceTiers(policy_version, tiers));
  }
  Status putHost(const HostRecord& host) override {
    return track("host/" + host.name, [host](Store& s) { return s.putHost(host); });
  }
  Status deleteHost(const std::string& name) override {
    return track("host/" + name, [name](Store& s) { return s.deleteHost(name); });
  }
  Result<std::vector<HostRecord>> hosts() override { return inner_.hosts(); }
  Status putVm(const VmRecord& vm) override {
    return track("vm/" + vm.name, [vm](Store& s) { return s.putVm(vm); });
  }
  Status deleteVm(const std::string& name) override {
    return track("vm/" + name, [name](Store& s) { return s.deleteVm(name); });
  }
  Result<std::vector<VmRecord>> vms() override { return inner_.vms(); }
  Result<EventRecord> appendEvent(EventRecord event) override { return note(inner_.appendEvent(std::move(event))); }
  Result<std::vector<EventRecord>> eventsSince(int64_t after_id, int limit) override {
    return inner_.eventsSince(after_id, limit);
  }
  Result<int64_t> eventCount() override { return inner_.eventCount(); }
  Result<int64_t> lastEventId() override { return inner_.lastEventId(); }
  // Pruning is housekeeping, not a decision: its failure withholds nothing.
  Result<int64_t> pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) override {
    return inner_.pruneEvents(before_ms, keep_at_most, max_rows);
  }
  Result<int64_t> eventLogBytes() override { return inner_.eventLogBytes(); }
  Result<int64_t> putIncident(const IncidentRecord& incident) override {
    if (incident.id == 0) return note(inner_.putIncident(incident));  // an insert: not repeated
    Result<int64_t> id = incident.id;
    Status s = track("incident/" + std::to_string(incident.id), [incident](Store& st) {
      return st.putIncident(incident).status();
    });
    if (!s.isOk()) return s;
    return id;
  }
  Result<std::vector<IncidentRecord>> incidents(int recent) override { return inner_.incidents(recent); }
  Result<int64_t> beginAction(const ActionRecord& action) override { return note(inner_.beginAction(action)); }
  Status endAction(int64_t id) override {
    return track("action/" + std::to_string(id), [id](Store& s) { return s.endAction(id); });
  }
  Result<std::vector<ActionRecord>> openActions() override { return inner_.openActions(); }
  Status putBackup(const BackupRecord& backup) override { return note(inner_.putBackup(backup)); }
  Status deleteBackup(const std::string& vm, const std::string& id) override {
    return note(inner_.deleteBackup(vm, id));
  }
  Result<std::vector<BackupRecord>> backups(const std::string& vm) override { return inner_.backups(vm); }
  bool wantsPublishedSets() const override { return inner_.wantsPublishedSets(); }
  Status publishSets(const std::map<std::string, PublishedSet>& sets) override { return note(inner_.publishSets(sets)); }
  Result<std::optional<PublishedSet>> publishedSet(const std::string& host) override {
    return inner_.publishedSet(host);
  }
  Result<StoreSnapshot> exportState() override { return inner_.exportState(); }
  Status importState(const StoreSnapshot& snapshot, bool replace) override {
    return note(inner_.importState(snapshot, replace));
  }

 private:
  Status note(Status s) {
    if (!s.isOk()) guard_.writeFailed(s);
    return s;
  }
  template <typename T>
  Result<T> note(Result<T> r) {
    if (!r.isOk()) guard_.writeFailed(r.status());
    return r;
  }
  // transaction()/batch(): the commit failed (the body itself returned ok).
  Status noteCommit(const Status& s, bool body_ok) {
    if (!s.isOk() && body_ok) guard_.writeFailed(s);
    return s;
  }
  // A whole-record write of `key`: kept when it fails (now, or with the
  // commit of the batch or transaction it is in).
  Status track(std::string key, PendingWrites::Write write);
  // Runs `run` (inner_'s transaction or batch) as one scope of writes.
  Status scope(const std::function<Status(const std::function<Status()>&)>& run,
               const std::function<Status()>& body);

  Store& inner_;
  TermGuard& guard_;
  PendingWrites pending_;
  // Writes that succeeded inside the open batch/transaction: in the store
  // only once the outermost one commits.
  std::vector<std::pair<std::string, PendingWrites::Write>> scope_writes_;
  int depth_ = 0;
  Millis rewrite_failed_ms_ = -1;  // when a rewrite last failed (-1: none since)
  int64_t rewritten_ = 0;
};

}  // namespace tw
