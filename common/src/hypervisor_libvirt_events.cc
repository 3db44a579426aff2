// libvirt's domain states and lifecycle events as ours (tw/hypervisor.h): plain
// mappings of libvirt's numbers, no connection. Declared in
// hypervisor_libvirt_events.h.
#include "hypervisor_libvirt_events.h"

#include <libvirt/libvirt.h>

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace tw::libvirt_detail {

DomainState toDomainState(int state, int reason) {
  switch (state) {
    case VIR_DOMAIN_RUNNING: return DomainState::kRunning;
    case VIR_DOMAIN_BLOCKED: return DomainState::kBlocked;
    case VIR_DOMAIN_PAUSED: return DomainState::kPaused;
    case VIR_DOMAIN_SHUTDOWN: return DomainState::kShutdown;
    case VIR_DOMAIN_SHUTOFF:
      // A domain that died is shut off with reason "crashed" (QEMU killed) or
      // "failed": report it as crashed, as the events do.
      return reason == VIR_DOMAIN_SHUTOFF_CRASHED || reason == VIR_DOMAIN_SHUTOFF_FAILED
                 ? DomainState::kCrashed
                 : DomainState::kShutoff;
    case VIR_DOMAIN_CRASHED: return DomainState::kCrashed;
    case VIR_DOMAIN_PMSUSPENDED: return DomainState::kPmSuspended;
    default: return DomainState::kNoState;
  }
}

namespace {

template <size_t N>
std::string detailName(const char* const (&names)[N], int detail) {
  if (detail >= 0 && static_cast<size_t>(detail) < N) return names[detail];
  return "unknown";
}

}  // namespace

// libvirt's lifecycle event as ours; nullopt for events we do not report
// (SHUTDOWN: the guest is shutting down, STOPPED follows).
std::optional<std::pair<DomainEventKind, std::string>> translateEvent(int event, int detail) {
  using K = DomainEventKind;
  switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED: {
      static const char* const kNames[] = {"added", "updated", "renamed", "from snapshot"};
      return std::make_pair(K::kDefined, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_UNDEFINED: {
      static const char* const kNames[] = {"removed", "renamed"};
      return std::make_pair(K::kUndefined, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_STARTED: {
      static const char* const kNames[] = {"booted", "migrated", "restored", "from snapshot",
                                           "wakeup"};
      return std::make_pair(K::kStarted, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_SUSPENDED: {
      static const char* const kNames[] = {"paused",    "migrated", "ioerror",
                                           "watchdog",  "restored", "from snapshot",
                                           "api error", "postcopy", "postcopy failed"};
      return std::make_pair(K::kSuspended, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_RESUMED: {
      static const char* const kNames[] = {"unpaused", "migrated", "from snapshot", "postcopy",
                                           "postcopy failed"};
      return std::make_pair(K::kResumed, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_STOPPED: {
      static const char* const kNames[] = {"shutdown", "destroyed", "crashed",      "migrated",
                                           "saved",    "failed",    "from snapshot"};
      K kind = K::kStopped;
      if (detail == VIR_DOMAIN_EVENT_STOPPED_CRASHED || detail == VIR_DOMAIN_EVENT_STOPPED_FAILED) {
        kind = K::kCrashed;
      } else if (detail == VIR_DOMAIN_EVENT_STOPPED_MIGRATED) {
        kind = K::kMigrated;
      }
      return std::make_pair(kind, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_PMSUSPENDED: {
      static const char* const kNames[] = {"pmsuspended memory", "pmsuspended disk"};
      return std::make_pair(K::kSuspended, detailName(kNames, detail));
    }
    case VIR_DOMAIN_EVENT_CRASHED: {
      static const char* const kNames[] = {"panicked", "crashloaded"};
      return std::make_pair(K::kCrashed, detailName(kNames, detail));
    }
    default: return std::nullopt;
  }
}

}  // namespace tw::libvirt_detail
