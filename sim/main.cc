// tierwarden-sim: runs a scenario on a simulated cluster (the real controller
// and agents, a virtual clock). Parses flags and hands over to sim/runner.h.
//
//   tierwarden-sim run DIR [--state-json FILE] [--assert] [--update-golden]
//   tierwarden-sim check DIR        (what ctest runs; see tests/scenarios/README.md)
//   tierwarden-sim fuzz --seeds N [--start S] [--replicas R [--overstay-window]] [--save DIR] [--save-all]   (sim/fuzz.h)
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

#include "sim/fuzz.h"
#include "sim/runner.h"
#include "tw/log.h"

int main(int argc, char** argv) {
  // Every incremental placement run is checked against place() (Controller::
  // setPlacementCheck()); TW_PLACEMENT_CHECK=0 in the environment turns it off.
  setenv("TW_PLACEMENT_CHECK", "1", /*overwrite=*/0);
  CLI::App app{"tierwarden-sim: replays a scenario on a simulated cluster, on a virtual clock"};
  app.require_subcommand(1);
  std::string log_level = "off";
  app.add_option("--log-level", log_level,
                 "the daemons' own log on stderr: off|debug|info|warn|error")
      ->capture_default_str();

  tw::sim::RunOptions run;
  CLI::App* run_cmd = app.add_subcommand("run", "run a scenario; the event log goes to stdout");
  run_cmd->add_option("dir", run.dir, "the scenario folder")->required();
  run_cmd->add_option("--state-json", run.state_json, "write the final state to this file");
  run_cmd->add_flag("--assert", run.check_asserts, "check the scenario's assert file");
  run_cmd->add_flag("--update-golden", run.update_golden, "write the event log to DIR/expect.log");

  std::string check_dir;
  CLI::App* check_cmd = app.add_subcommand(
      "check", "compare the event log with DIR/expect.log and check the asserts (ctest)");
  check_cmd->add_option("dir", check_dir, "the scenario folder")->required();

  tw::sim::FuzzOptions fuzz;
  CLI::App* fuzz_cmd = app.add_subcommand(
      "fuzz",
      "random clusters, policies and failure schedules; checks double copies and "
      "collateral destroys after every step");
  fuzz_cmd->add_option("--seeds", fuzz.seeds, "how many seeds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  fuzz_cmd->add_option("--start", fuzz.start, "the first seed")->capture_default_str();
  fuzz_cmd->add_option("--replicas", fuzz.replicas,
                       "run N (2-7) controller replicas on an in-memory etcd, and kill, restart and cut "
                       "them off from etcd (0: one controller on SQLite)")
      ->check(CLI::IsMember({0, 2, 3, 4, 5, 6, 7}))
      ->capture_default_str();
  fuzz_cmd->add_flag("--overstay-window", fuzz.overstay_window,
                     "with --replicas: an overstaying leader still takes heartbeats and its pushes reach agents "
                     "until it exits (only the controller's own guard keeps them in)");
  fuzz_cmd->add_option("--save", fuzz.save_dir,
                       "write each failing seed as a scenario folder DIR/seed-S");
  fuzz_cmd->add_flag("--save-all", fuzz.save_all, "with --save: every seed, failing or not");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  tw::log::init("sim", log_level);
  if (*run_cmd) return tw::sim::runScenario(run, std::cout, std::cerr);
  if (*fuzz_cmd) return tw::sim::runFuzz(fuzz, std::cout, std::cerr);
  return tw::sim::checkScenario(check_dir, std::cout, std::cerr);
}
