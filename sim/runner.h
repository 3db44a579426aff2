// What `tierwarden-sim run` and `tierwarden-sim check` do, as functions
// (sim/main.cc only parses flags).
#pragma once

#include <ostream>
#include <string>

namespace tw::sim {

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;     // asserts or the golden log do not hold
inline constexpr int kExitMalformed = 2;  // the scenario itself is wrong
inline constexpr int kExitPending = 77;   // listed in PENDING and failing (ctest: skipped)

struct RunOptions {
  std::string dir;             // the scenario folder
  std::string state_json;      // write the final state here (empty: do not)
  bool check_asserts = false;  // check the scenario's `assert` file (failures on err)
  bool update_golden = false;  // write the event log to <dir>/expect.log
};

// Runs a scenario, printing the event log on `out` as it happens.
// Returns kExitOk, kExitFailed (asserts) or kExitMalformed.
int runScenario(const RunOptions& options, std::ostream& out, std::ostream& err);

// What ctest runs for a scenario: the event log must equal <dir>/expect.log
// (a unified diff is printed when not) and the asserts must hold. A scenario
// named in <dir>/../PENDING is checked on its asserts only: failing, it is
// skipped (kExitPending); passing, it fails with "remove it from PENDING".
int checkScenario(const std::string& dir, std::ostream& out, std::ostream& err);

// Is `name` listed in the PENDING file at `path` (one name a line, # comments)?
bool listedIn(const std::string& path, const std::string& name);

}  // namespace tw::sim
