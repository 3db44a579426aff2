// Fence agents: the commands that make sure a dead host is off (a BMC power
// off, a PDU outlet, ...). They are defined only in the controller's own
// configuration file (--fence-agents FILE); a policy only names one
// (hosts[].fence: { agent: NAME }), so that holding the API token does not
// mean running commands as the controller's user, and events never show a
// command or its arguments (they may hold secrets).
//
// The file, one agent a line (docs/policy.md, "Fence agents"):
//
//   # name = command template
//   ipmi = ipmitool -I lanplus -H bmc-{host} -U fence -f /etc/tierwarden/bmc.pass chassis power off
//   pdu  = /usr/local/sbin/pdu-off --outlet '{host}' --note "fenced by tierwarden"
//
// The template is split into words when the file is read: blanks separate
// words; '...' and "..." quote (inside "...", \" and \\ escape); a backslash
// outside quotes takes the next character literally. There is no shell: the
// words are the program's argv (the program is looked up in PATH when it has
// no '/'), and | & ; < > ( ) $ ` outside quotes, and $ ` inside "...", are
// refused rather than passed on to a shell that is not there. Placeholders
// {host} (the host's name) and {uri} (its libvirt URI from the policy) are
// replaced inside words, quoted or not, when the agent runs; any other
// {word} is refused. A value can never add or split words.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/status.h"

namespace tw {

struct FenceAgent {
  std::string name;
  std::vector<std::string> argv;  // the template's words, placeholders not yet replaced
  SourceLocation where;           // its line in the configuration file
  bool uses_uri = false;          // some word holds {uri}
};

using FenceAgents = std::map<std::string, FenceAgent>;  // by name

// The values of the placeholders for one host.
struct FenceTarget {
  std::string host;  // {host}
  std::string uri;   // {uri}
};

// Parses the text of a fence-agents file (`file` names it in messages).
// Errors: kInvalidArgument with where() = file:line:column and what was
// expected (bad name, no '=', empty or unbalanced template, shell syntax,
// unknown placeholder, a name defined twice).
Result<FenceAgents> parseFenceAgents(const std::string& text, const std::string& file);

// Reads and parses the fence-agents file at `path`. Refuses a file that is
// not a regular file, that its group or others may write, that is owned by
// another user than root or the controller's own, or whose directory others
// may write to (not sticky): its commands run as the controller's user.
// Errors: kNotFound (no such file), kPermissionDenied, kInvalidArgument.
Result<FenceAgents> loadFenceAgents(const std::string& path);

// The agent's argv for `target`: placeholders replaced. Errors:
// kInvalidArgument when a value is missing or unfit (an agent using {uri}
// for a host without a uri, or whose uri does not start with a scheme).
Result<std::vector<std::string>> fenceArgv(const FenceAgent& agent, const FenceTarget& target);

// "'ipmi', 'pdu'" (for messages), or "none".
std::string fenceAgentNames(const FenceAgents& agents);

}  // namespace tw
