// The libvirt hypervisor's text work, with no connection: domain XML from a
// DomainSpec, our metadata element written, read back and replaced, XML text
// escaped and unescaped, a storage pool's target directory, QEMU's `info
// usernet` forwards. Declared in hypervisor_libvirt_xml.h.
#include "hypervisor_libvirt_xml.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "tw/text.h"

namespace tw::libvirt_detail {

// Escapes text and attribute values (both quote kinds; newlines and tabs as
// character references, so that attribute normalisation keeps them).
std::string xmlEscape(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (char c : in) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\n': out += "&#10;"; break;
      case '\r': out += "&#13;"; break;
      case '\t': out += "&#9;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// Resolves the five predefined entities and character references.
std::optional<std::string> xmlUnescape(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '&') {
      out += in[i];
      continue;
    }
    size_t semi = in.find(';', i);
    if (semi == std::string_view::npos) return std::nullopt;
    std::string_view ref = in.substr(i + 1, semi - i - 1);
    if (ref == "amp") {
      out += '&';
    } else if (ref == "lt") {
      out += '<';
    } else if (ref == "gt") {
      out += '>';
    } else if (ref == "quot") {
      out += '"';
    } else if (ref == "apos") {
      out += '\'';
    } else if (ref.size() > 1 && ref[0] == '#') {
      const bool hex = ref[1] == 'x' || ref[1] == 'X';
      std::string_view digits = ref.substr(hex ? 2 : 1);
      uint32_t cp = 0;
      auto [end, ec] =
          std::from_chars(digits.data(), digits.data() + digits.size(), cp, hex ? 16 : 10);
      if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty() ||
          cp > 0x10ffff) {
        return std::nullopt;
      }
      appendUtf8(out, cp);
    } else {
      return std::nullopt;
    }
    i = semi;
  }
  return out;
}

bool isXmlSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The attributes of the first element of `xml` (as libvirt returns our
// metadata element: `<tw:instance xmlns:tw="..." vm="web-1" .../>`). Names keep
// their prefix; values are unescaped. nullopt when malformed.
std::optional<std::map<std::string, std::string>> readAttributes(std::string_view xml) {
  size_t i = xml.find('<');
  if (i == std::string_view::npos) return std::nullopt;
  ++i;
  while (i < xml.size() && !isXmlSpace(xml[i]) && xml[i] != '/' && xml[i] != '>') ++i;
  std::map<std::string, std::string> attrs;
  for (;;) {
    while (i < xml.size() && isXmlSpace(xml[i])) ++i;
    if (i >= xml.size()) return std::nullopt;
    if (xml[i] == '/' || xml[i] == '>') return attrs;
    size_t name_start = i;
    while (i < xml.size() && !isXmlSpace(xml[i]) && xml[i] != '=') ++i;
    std::string name(xml.substr(name_start, i - name_start));
    while (i < xml.size() && isXmlSpace(xml[i])) ++i;
    if (i >= xml.size() || xml[i] != '=' || name.empty()) return std::nullopt;
    ++i;
    while (i < xml.size() && isXmlSpace(xml[i])) ++i;
    if (i >= xml.size() || (xml[i] != '"' && xml[i] != '\'')) return std::nullopt;
    const char quote = xml[i++];
    size_t close = xml.find(quote, i);
    if (close == std::string_view::npos) return std::nullopt;
    auto value = xmlUnescape(xml.substr(i, close - i));
    if (!value) return std::nullopt;
    attrs[name] = std::move(*value);
    i = close + 1;
  }
}

std::optional<int64_t> parseInt64(const std::string& s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

// Our metadata element as libvirt returned it. kFailedPrecondition when it is
// not ours to read (a domain with a broken tierwarden element).
Result<DomainMeta> parseMeta(const std::string& xml, const std::string& domain_name) {
  const std::string context =
      "domain " + singleQuoted(domain_name) + " has malformed tierwarden metadata";
  auto attrs = readAttributes(xml);
  if (!attrs) return failedPrecondition(context + ": " + xml);
  auto get = [&](const char* key) {
    auto it = attrs->find(key);
    return it == attrs->end() ? std::string() : it->second;
  };
  DomainMeta meta;
  meta.vm = get("vm");
  if (meta.vm.empty()) meta.vm = domain_name;
  meta.tier = get("tier");
  meta.spec_digest = get("spec_digest");
  auto epoch = parseInt64(get("epoch"));
  auto policy_version = parseInt64(get("policy_version"));
  if (!epoch) return failedPrecondition(context + ": epoch " + singleQuoted(get("epoch")));
  if (!policy_version) {
    return failedPrecondition(context + ": policy_version " + singleQuoted(get("policy_version")));
  }
  meta.epoch = *epoch;
  meta.policy_version = *policy_version;
  return meta;
}

// Control characters (other than tab, newline, carriage return) cannot be
// written in XML 1.0 at all.
bool hasForbiddenChars(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 && c != '\t' && c != '\n' && c != '\r';
  });
}

Status validateSpec(const DomainSpec& spec) {
  const std::string context = "defining vm " + singleQuoted(spec.meta.vm);
  if (spec.meta.vm.empty()) return invalidArgument("defining vm: the vm name is empty");
  if (spec.vcpus < 1) return invalidArgument(context + ": vcpus must be at least 1");
  if (spec.memory_mib < 1) return invalidArgument(context + ": memory_mib must be at least 1");
  for (const std::string* field :
       {&spec.meta.vm, &spec.meta.tier, &spec.meta.spec_digest, &spec.domain_type, &spec.kernel,
        &spec.initrd, &spec.cmdline, &spec.disk_path, &spec.console_path}) {
    if (hasForbiddenChars(*field)) {
      return invalidArgument(context + ": a value holds a control character");
    }
  }
  return Status::ok();
}

namespace {

// "<disk dir or /tmp>/<vm>.console.log"
std::string consoleLogPath(const DomainSpec& spec) {
  if (!spec.console_path.empty()) return spec.console_path;
  std::string dir = "/tmp";
  size_t slash = spec.disk_path.find_last_of('/');
  if (!spec.disk_path.empty() && slash != std::string::npos) dir = spec.disk_path.substr(0, slash);
  return dir + "/" + spec.meta.vm + ".console.log";
}

// Our metadata element, as define() writes it and migrate() replaces it.
std::string metadataElement(const DomainMeta& m) {
  std::ostringstream x;
  x << "<" << kMetadataPrefix << ":instance xmlns:" << kMetadataPrefix << "='"
    << xmlEscape(kMetadataNamespace) << "' vm='" << xmlEscape(m.vm) << "' tier='"
    << xmlEscape(m.tier) << "' epoch='" << m.epoch << "' policy_version='" << m.policy_version
    << "' spec_digest='" << xmlEscape(m.spec_digest) << "'/>";
  return x.str();
}

}  // namespace

// `xml` (a whole domain XML as libvirt writes it) with our metadata element
// replaced by `meta`'s. The element is the one that declares our namespace;
// quoted attribute values are skipped while scanning. kInternal when the XML
// holds no such element (the domain is not ours: the caller checked that).
Result<std::string> replaceMetadataElement(const std::string& xml, const DomainMeta& meta) {
  const auto missing = [] { return internalError("the domain XML has no tierwarden metadata"); };
  const size_t ns = xml.find(kMetadataNamespace);
  if (ns == std::string::npos) return missing();
  const size_t begin = xml.rfind('<', ns);
  if (begin == std::string::npos || begin + 1 >= xml.size()) return missing();
  size_t i = begin + 1;
  while (i < xml.size() && !isXmlSpace(xml[i]) && xml[i] != '/' && xml[i] != '>') ++i;
  const std::string qname = xml.substr(begin + 1, i - begin - 1);
  if (qname.empty() || qname[0] == '/' || qname[0] == '!' || qname[0] == '?') return missing();
  // The end of the start tag, outside quoted values.
  char quote = 0;
  for (; i < xml.size(); ++i) {
    if (quote != 0) {
      if (xml[i] == quote) quote = 0;
    } else if (xml[i] == '"' || xml[i] == '\'') {
      quote = xml[i];
    } else if (xml[i] == '>') {
      break;
    }
  }
  if (i >= xml.size()) return missing();
  size_t end = i + 1;
  if (xml[i - 1] != '/') {  // <tw:instance ...>...</tw:instance>
    const std::string close = "</" + qname + ">";
    const size_t at = xml.find(close, end);
    if (at == std::string::npos) return missing();
    end = at + close.size();
  }
  return xml.substr(0, begin) + metadataElement(meta) + xml.substr(end);
}

// The domain XML of a spec. `type` is the domain type ("test", "qemu", "kvm").
std::string buildDomainXml(const DomainSpec& spec, const std::string& type) {
  const bool test_driver = type == "test";
  const DomainMeta& m = spec.meta;
  std::ostringstream x;
  x << "<domain type='" << xmlEscape(type) << "'>\n"
    << "  <name>" << xmlEscape(m.vm) << "</name>\n"
    << "  <uuid>" << uuidForVm(m.vm) << "</uuid>\n"
    << "  <metadata>\n"
    << "    " << metadataElement(m) << "\n"
    << "  </metadata>\n"
    << "  <memory unit='MiB'>" << spec.memory_mib << "</memory>\n"
    << "  <vcpu>" << spec.vcpus << "</vcpu>\n";
  if (test_driver) {
    x << "  <os>\n    <type>hvm</type>\n  </os>\n";
  } else {
    x << "  <os>\n    <type arch='x86_64'>hvm</type>\n";
    if (!spec.kernel.empty()) x << "    <kernel>" << xmlEscape(spec.kernel) << "</kernel>\n";
    if (!spec.initrd.empty()) x << "    <initrd>" << xmlEscape(spec.initrd) << "</initrd>\n";
    if (!spec.cmdline.empty()) x << "    <cmdline>" << xmlEscape(spec.cmdline) << "</cmdline>\n";
    x << "  </os>\n";
  }
  x << "  <on_poweroff>destroy</on_poweroff>\n"
    << "  <on_reboot>restart</on_reboot>\n"
    << "  <on_crash>destroy</on_crash>\n";
  if (!test_driver) {
    const std::string console = xmlEscape(consoleLogPath(spec));
    x << "  <devices>\n";
    if (!spec.disk_path.empty()) {
      x << "    <disk type='file' device='disk'>\n"
        << "      <driver name='qemu' type='qcow2'/>\n"
        << "      <source file='" << xmlEscape(spec.disk_path) << "'/>\n"
        << "      <target dev='vda' bus='virtio'/>\n"
        << "    </disk>\n";
    }
    if (spec.user_network) {
      // No <alias>: libvirt keeps only user aliases that start with "ua-" (and
      // would then name the netdev "hostua-..."); the first interface gets the
      // alias net0 from libvirt itself, so its netdev is hostnet0.
      x << "    <interface type='user'>\n"
        << "      <model type='virtio'/>\n"
        << "    </interface>\n";
    }
    x << "    <serial type='file'>\n"
      << "      <source path='" << console << "'/>\n"
      << "      <target port='0'/>\n"
      << "    </serial>\n"
      << "    <console type='file'>\n"
      << "      <source path='" << console << "'/>\n"
      << "      <target type='serial' port='0'/>\n"
      << "    </console>\n"
      << "  </devices>\n";
  }
  x << "</domain>\n";
  return x.str();
}

std::string xmlUnescape(std::string v) {
  const std::pair<const char*, const char*> entities[] = {
      {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}, {"&amp;", "&"}};
  for (const auto& [from, to] : entities) {
    for (size_t at = v.find(from); at != std::string::npos; at = v.find(from, at + 1)) {
      v.replace(at, std::strlen(from), to);
    }
  }
  return v;
}

// The target directory in a storage pool's XML (<pool type='dir'> ...
// <target><path>/srv/pool</path>); only pools whose volumes are files.
Result<std::string> poolTargetDir(const std::string& xml, const std::string& context) {
  std::string type;
  if (size_t at = xml.find("<pool type="); at != std::string::npos && at + 12 < xml.size()) {
    const char quote = xml[at + 11];
    const size_t end = xml.find(quote, at + 12);
    if (end != std::string::npos) type = xml.substr(at + 12, end - at - 12);
  }
  if (type != "dir" && type != "fs" && type != "netfs") {
    return failedPrecondition(context + ": a pool of type '" + type +
                              "' keeps no files; shared disks need a pool of type dir, fs or netfs");
  }
  const size_t target = xml.find("<target>");
  const size_t open = target == std::string::npos ? target : xml.find("<path>", target);
  const size_t close = open == std::string::npos ? open : xml.find("</path>", open);
  if (close == std::string::npos) return internalError(context + ": no target path in its XML");
  std::string dir = xmlUnescape(xml.substr(open + 6, close - open - 6));
  if (dir.empty() || dir[0] != '/') return internalError(context + ": target path '" + dir + "' is not absolute");
  return dir;
}

// The TCP host forwards in QEMU's `info usernet` answer:
//   Hub -1 (hostnet0):
//     Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
//     TCP[HOST_FORWARD]  13       127.0.0.1 20000       10.0.2.15    80     0     0
std::vector<PortForward> parseUsernetForwards(const std::string& text) {
  std::vector<PortForward> out;
  std::istringstream lines(text);
  std::string line;
  const auto isAddress = [](const std::string& t) {
    return !t.empty() && t.find('.') != std::string::npos &&
           t.find_first_not_of("0123456789.") == std::string::npos;
  };
  const auto toPort = [](const std::string& t) {
    int v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    return ec == std::errc() && end == t.data() + t.size() && v > 0 && v <= 65535 ? v : 0;
  };
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> t;
    for (std::string w; words >> w;) t.push_back(w);
    if (t.empty() || t[0] != "TCP[HOST_FORWARD]") continue;
    for (size_t i = 1; i + 3 < t.size(); ++i) {
      if (!isAddress(t[i])) continue;
      PortForward f;
      f.address = t[i];
      f.host_port = toPort(t[i + 1]);
      f.guest_port = toPort(t[i + 3]);
      if (f.host_port > 0 && f.guest_port > 0 && isAddress(t[i + 2])) out.push_back(f);
      break;
    }
  }
  return out;
}

}  // namespace tw::libvirt_detail
