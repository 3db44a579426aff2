#include "sim/runner.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "sim/scenario.h"
#include "sim/simulation.h"

namespace tw::sim {

namespace fs = std::filesystem;

namespace {

struct Outcome {
  bool ran = false;
  std::vector<std::string> lines;
  Json state;
};

// Loads and runs; prints load errors on err. `echo` gets every log line.
int loadAndRun(const std::string& dir, Scenario* scenario, Outcome* outcome, std::ostream* echo,
               std::ostream& err) {
  Result<Scenario> loaded = loadScenario(dir);
  if (!loaded) {
    err << loaded.status().toString() << "\n";
    return kExitMalformed;
  }
  *scenario = std::move(loaded).value();
  Simulation sim(*scenario, [&](const SimEvent& e) {
    std::string line = formatEvent(e);
    if (echo != nullptr) *echo << line << "\n";
    outcome->lines.push_back(std::move(line));
  });
  Status s = sim.run();
  if (!s.isOk()) {
    err << dir << ": the simulation could not run: " << s.toString() << "\n";
    return kExitFailed;
  }
  outcome->state = sim.stateJson();
  outcome->ran = true;
  return kExitOk;
}

std::string joinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Prints `diff -u expected actual` on out.
void printDiff(const std::string& expected_path, const std::string& actual, std::ostream& out) {
  std::error_code ec;
  std::string pattern = (fs::temp_directory_path(ec) / "tierwarden-sim-actual-XXXXXX").string();
  int fd = mkstemp(pattern.data());
  if (fd < 0) {
    out << "(cannot write a temp file for the diff)\n";
    return;
  }
  close(fd);
  {
    std::ofstream f(pattern, std::ios::binary);
    f << actual;
  }
  out.flush();
  std::cout.flush();
  const std::string cmd = "diff -u --label " + shellQuote(expected_path) + " --label actual " +
                          shellQuote(expected_path) + " " + shellQuote(pattern);
  int rc = std::system(cmd.c_str());
  if (rc == -1) out << "(cannot run diff)\n";
  fs::remove(pattern, ec);
}

std::string scenariosDirOf(const std::string& dir) {
  fs::path p = fs::absolute(fs::path(dir)).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.parent_path().string();
}

}  // namespace

bool listedIn(const std::string& path, const std::string& name) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.erase(hash);
    std::istringstream words(line);
    std::string w;
    if (words >> w && w == name) return true;
  }
  return false;
}

int runScenario(const RunOptions& options, std::ostream& out, std::ostream& err) {
  Scenario scenario;
  Outcome outcome;
  int rc = loadAndRun(options.dir, &scenario, &outcome, &out, err);
  if (rc != kExitOk) return rc;
  if (!options.state_json.empty()) {
    std::ofstream f(options.state_json, std::ios::binary);
    f << outcome.state.dump(2) << "\n";
    if (!f) {
      err << options.state_json << ": cannot write the state\n";
      return kExitFailed;
    }
  }
  if (options.update_golden) {
    const std::string path = (fs::path(options.dir) / "expect.log").string();
    std::ofstream f(path, std::ios::binary);
    f << joinLines(outcome.lines);
    if (!f) {
      err << path << ": cannot write the golden log\n";
      return kExitFailed;
    }
  }
  if (options.check_asserts) {
    std::vector<std::string> failures =
        checkAssertions(scenario.asserts, scenario.assert_file, outcome.state, outcome.lines);
    for (const auto& f : failures) err << f << "\n";
    if (!failures.empty()) return kExitFailed;
  }
  return kExitOk;
}

int checkScenario(const std::string& dir, std::ostream& out, std::ostream& err) {
  Scenario scenario;
  Outcome outcome;
  int rc = loadAndRun(dir, &scenario, &outcome, nullptr, err);
  if (rc != kExitOk) return rc;
  std::vector<std::string> failures =
      checkAssertions(scenario.asserts, scenario.assert_file, outcome.state, outcome.lines);

  const std::string pending_file = (fs::path(scenariosDirOf(dir)) / "PENDING").string();
  if (listedIn(pending_file, scenario.name)) {
    if (failures.empty()) {
      out << "scenario '" << scenario.name << "' is listed in " << pending_file
          << " but its asserts hold now: review its event log (tierwarden-sim run " << dir
          << " --update-golden) and remove it from PENDING\n";
      return kExitFailed;
    }
    out << "PENDING: scenario '" << scenario.name << "' waits for behaviour not built yet ("
        << pending_file << "); its asserts fail today:\n";
    for (const auto& f : failures) out << "  " << f << "\n";
    return kExitPending;
  }

  bool ok = true;
  const std::string expect_path = (fs::path(dir) / "expect.log").string();
  std::ifstream in(expect_path, std::ios::binary);
  const std::string actual = joinLines(outcome.lines);
  if (!in) {
    out << expect_path << ": missing; write it with: tierwarden-sim run " << dir
        << " --update-golden\n";
    ok = false;
  } else {
    std::ostringstream expected;
    expected << in.rdbuf();
    if (expected.str() != actual) {
      out << "the event log differs from " << expect_path
          << " (if the change is right: tierwarden-sim run " << dir << " --update-golden):\n";
      printDiff(expect_path, actual, out);
      ok = false;
    }
  }
  for (const auto& f : failures) out << f << "\n";
  if (!failures.empty()) ok = false;
  if (ok) {
    out << "scenario '" << scenario.name << "': event log as expected (" << outcome.lines.size()
        << " lines), " << scenario.asserts.size() << " asserts hold\n";
  }
  return ok ? kExitOk : kExitFailed;
}

}  // namespace tw::sim
