// A scenario's `assert` file: what must hold at the end of the run, checked
// against the final state (Simulation::stateJson()) and the event log.
//
//   # comment
//   max_running_copies == 1        the simulator's ground truth, over the whole run
//   collateral_destroys == 0       VMs destroyed by fencing (self-fence, libvirt,
//                                  fence agent) on a host that was not cut off
//                                  (sim/simulation.h), over the whole run
//   incidents >= 1                 incidents the controller reports
//   time_ms == 60000
//   vms running == 5               how many VMs the controller has in a state
//   vm web-1 state running         a VM's field: state, host, tier, health,
//   vm web-1 host != h1              healthy (true|false), restarts, relocations,
//   vm web-1 healthy true            running_on (where it really runs: "h3",
//   vm db-1 relocations >= 1         "h1,h3" or "none")
//   host h1 state fenced           a host's field: state, power (on|off), network, agent
//   log contains self-fenced       a line of the event log contains the text
//   log lacks moved from           no line contains it
//   log order fenced before placed vm 'web-1'
//                                  the first line containing the first text comes
//                                  before the first line containing the second
//
// Operators: ==, !=, <, <=, >, >= (numbers); ==, != (text). Without one: ==.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tw/json.h"
#include "tw/status.h"

namespace tw::sim {

struct Assertion {
  enum class Kind {
    kMaxCopies,
    kCollateral,
    kLeaseLapses,
    kIncidents,
    kTime,
    kVmsInState,
    kVm,
    kHost,
    kLogContains,
    kLogLacks,
    kLogOrder
  };
  Kind kind = Kind::kMaxCopies;
  int line = 0;
  std::string text;     // as written
  std::string subject;  // vm/host name, or the state for kVmsInState
  std::string field;    // kVm, kHost
  std::string op = "==";
  std::string value;
  std::string later;  // kLogOrder: the text that must come after `value`
};

struct AssertNames {
  std::optional<std::set<std::string>> hosts;
  std::optional<std::set<std::string>> vms;
};

// Errors: kInvalidArgument with where() = {file, line}.
Result<std::vector<Assertion>> parseAssertions(const std::string& text, const std::string& file,
                                               const AssertNames& names = {});

// One message per assertion that does not hold:
// "assert:3: vm web-1 state running: got 'pending'".
std::vector<std::string> checkAssertions(const std::vector<Assertion>& assertions,
                                         const std::string& file, const Json& state,
                                         const std::vector<std::string>& log_lines);

}  // namespace tw::sim
