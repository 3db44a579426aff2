// libvirt's domain states and lifecycle events (its numbers) as ours
// (tw/hypervisor.h). Internal to twcommon: hypervisor_libvirt.cc uses it. Only
// the .cc includes libvirt; this header does not.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "tw/hypervisor.h"

namespace tw::libvirt_detail {

// A virDomainState and its reason as our state (a shut-off domain that
// crashed or failed is kCrashed).
DomainState toDomainState(int state, int reason);
// A virDomainEventType and its detail as our event kind and the detail's
// name; nullopt for events we do not report.
std::optional<std::pair<DomainEventKind, std::string>> translateEvent(int event, int detail);

}  // namespace tw::libvirt_detail
