// The libvirt hypervisor's text work, with no libvirt handle: the domain XML
// of a DomainSpec, our metadata element (tw/hypervisor.h) read and replaced,
// XML escaping, a storage pool's target directory, QEMU's `info usernet`
// forwards. Internal to twcommon: hypervisor_libvirt.cc uses it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tw/hypervisor.h"
#include "tw/status.h"

namespace tw::libvirt_detail {

// Escapes text and attribute values, both quote kinds.
std::string xmlEscape(std::string_view in);
// Resolves the five predefined entities (not character references).
std::string xmlUnescape(std::string v);

// Our metadata element as libvirt returned it; kFailedPrecondition when
// malformed.
Result<DomainMeta> parseMeta(const std::string& xml, const std::string& domain_name);
// Whether `s` holds a control character that XML 1.0 cannot hold.
bool hasForbiddenChars(const std::string& s);
// kInvalidArgument when the spec cannot be defined.
Status validateSpec(const DomainSpec& spec);
// A whole domain XML with our metadata element replaced by `meta`'s;
// kInternal when it holds none.
Result<std::string> replaceMetadataElement(const std::string& xml, const DomainMeta& meta);
// The domain XML of a spec; `type` is the domain type ("test", "qemu", "kvm").
std::string buildDomainXml(const DomainSpec& spec, const std::string& type);

// The target directory in a storage pool's XML; kFailedPrecondition for a pool
// type that keeps no files.
Result<std::string> poolTargetDir(const std::string& xml, const std::string& context);
// The TCP host forwards in QEMU's `info usernet` answer.
std::vector<PortForward> parseUsernetForwards(const std::string& text);

}  // namespace tw::libvirt_detail
