// PendingWrites: store writes that failed for a transient reason, kept to be
// written again (issue 14, docs/ha.md "A failed write is written again").
//
// A controller step changes its memory and writes the records it changed.
// When a write fails (etcd out of reach or without a quorum for a moment, a
// request timeout; the disk under SQLite), the step's outward acts are
// withheld (controller/term_guard.h), but its memory stays ahead of the
// store. This keeps each failed write, by the record it writes, and the next
// step writes them again first: a later write of the same record replaces
// the pending one (it carries the newer state), a later write that reached
// the store drops it. Until every pending write is in the store again, no
// step acts (GuardedStore::beginStep): memory ahead of the store never leaves
// the process, so a new leader reading the store finds what every agent was
// told.
//
// What is kept: whole-record writes, which are idempotent (a write repeated
// after a timeout that did reach etcd writes the same value): hosts, VMs
// (put and delete), incidents that have an id, the end of a journaled
// action. What is not: appends whose id the store gives out (events, a new
// policy, a new incident, a journal entry: the caller sees the error and
// keeps nothing, or tries again itself), and the published assignment sets
// (their own withheld list, TermGuard::withhold).
//
// Threads: the controller's thread only.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tw/status.h"
#include "tw/store.h"

namespace tw {

class PendingWrites {
 public:
  // Writes one record to `store` (a copy of the record inside).
  using Write = std::function<Status(Store& store)>;

  // The write of `key` ("vm/web-1") failed: kept, replacing an older pending
  // write of the same key (in its place in the order).
  void failed(const std::string& key, Write write);
  // A write of `key` reached the store: a pending one is dropped.
  void written(const std::string& key);

  bool empty() const { return writes_.empty(); }
  size_t size() const { return writes_.size(); }
  // The keys, oldest failure first (tests, messages).
  std::vector<std::string> keys() const;

  // Writes them to `store`, oldest failure first, dropping each that
  // succeeds; stops at the first that fails (the store is likely still out
  // of reach) and returns its error, keeping it and the rest.
  Status rewrite(Store& store);

 private:
  std::vector<std::pair<std::string, Write>> writes_;  // oldest failure first
};

}  // namespace tw
