// The scenario script: what happens to a simulated cluster, and when.
//
//   # comment (also after a command)
//   0s      apply policy.yaml
//   2s      vm web-1 crash
//   1500ms  host h1 power off
//   2m      end
//
// One command per line: a time (since the run's start: "0s", "1500ms", "1.5s",
// "2m", "1h"; a multiple of the 10 ms step; never earlier than the line
// before), then the command. The last command must be `end`. Commands:
//
//   apply FILE...                 policy files (relative to the scenario folder)
//   host H power off|on           power loss / boot (a new agent starts)
//   host H network off|on         the host's link to the controller and its peers
//   host H fail-migrations N      the next N migrations from H fail
//   host H libvirt slow MS        every libvirt call of H's agent takes MS ("200ms",
//                                 "1s"; a bare number is ms): after each pass of
//                                 its loop the loop stays blocked for (calls in
//                                 that pass) x MS; `slow 0` ends it
//   agent H stop|start            the agent process only; VMs keep running
//   agent H stall DURATION        the agent's loop (passes, migrations, probes) is
//                                 blocked, as in a hung libvirt call; its
//                                 heartbeat thread and peer checks go on; what
//                                 arrives meanwhile waits for the stall's end
//   vm V crash                    the domain dies wherever it runs
//   vm V health fail|fail-always|ok   the VM's service: fails until the VM
//                                 starts again | fails on every run | answers
//   vm V fail-start N             the next N starts of V fail, wherever they happen
//   controller restart|stop|start the controller process (SQLite file kept)
//   controller stall DURATION     the controller's loop is blocked; its HTTP side
//                                 answers heartbeats with each host's last
//                                 published set and queues them (and agents'
//                                 events, and operator commands) for the loop,
//                                 which works through them in order at the
//                                 stall's end, before its next tick
//   controller network off|on     the controller's machine is cut off from every
//                                 host: heartbeats, events and pushes fail, its
//                                 libvirt connections fail, and so do its fence
//                                 agents (their devices are out of reach too);
//                                 the hosts still reach each other
//   link A B off|on               A's packets to B are lost (one way; A, B are
//                                 hosts or `controller`). Every exchange is a
//                                 request and its answer, so either direction
//                                 cut breaks A<->B (peer checks, migrations;
//                                 with `controller`: heartbeats, events,
//                                 pushes, its libvirt connection; fence agents
//                                 reach the host's fence device another way).
//                                 A cut between two hosts leaves each host's
//                                 link to the controller alone.
//   drain H | undrain H | migrate V H | reset V | restart V   operator commands
//   end                           stop the run here
//
// Several controller replicas (issue 14, docs/ha.md; sim/controller_replicas.h):
//
//   controllers N                 the cluster runs N (2-7) controller replicas,
//                                 c1..cN, on one in-memory etcd (FakeEtcd) with
//                                 a leader lease each, instead of the one
//                                 controller on SQLite. Only as the first
//                                 command, at 0s. Then the plain `controller
//                                 restart|stop|start|stall` are refused (name a
//                                 replica); `controller network` and `link ...
//                                 controller` act on every replica's machine.
//   controller C kill|start|restart   replica C (c1..cN, or `leader`: the replica
//                                 that acts now, resolved when the command runs)
//                                 crashes at once (no resign: its etcd lease runs
//                                 out) | starts (a follower) | both
//   controller C store off|on     C is cut off from etcd (not from the agents)
//   controller C overstay         C's lease thread and clock stop: it renews
//                                 nothing and never sees its deadline pass, so it
//                                 acts on with its old term after another replica
//                                 won a new one (two replicas believe they lead)
//                                 until its first write etcd refuses, or one
//                                 controller tick after the other acted
//   controller C overstay window  the same, and the simulator does not hide the
//                                 daemon's window between that refused write
//                                 and its exit (until its next step C still
//                                 takes heartbeats and events, ticks, and its
//                                 pushes reach agents): only the controller's
//                                 own guard (controller/term_guard.h) keeps
//                                 what it decides after the refusal in
//
// Parsing is pure (no files are read here): the names a script may mention
// are handed in, and every problem is reported as "file:line: what".
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/status.h"

namespace tw::sim {

// Virtual time advances in steps of this many milliseconds.
inline constexpr Millis kStepMs = 10;

// The name `link` uses for the controller's end.
inline constexpr const char* kControllerNode = "controller";

// `controllers N` takes at most this many replicas.
inline constexpr int kMaxControllerReplicas = 7;

// "0s", "1500ms", "1.5s", "2m", "1h" -> milliseconds. The unit is required and
// the value must come out as whole milliseconds. Errors: kInvalidArgument.
Result<Millis> parseScriptTime(const std::string& text);

enum class Op {
  kApply,
  kHostPower,           // arg: "on" | "off"
  kHostNetwork,         // arg: "on" | "off"
  kHostFailMigrations,  // count
  kHostLibvirtSlow,     // duration: per call (0 = normal again)
  kAgent,               // arg: "stop" | "start" | "stall" (duration)
  kVmCrash,
  kVmHealth,           // arg: "ok" | "fail" | "fail-always"
  kVmFailStart,        // count
  kController,         // arg: "restart" | "stop" | "start" | "stall" (duration)
  kControllerNetwork,  // arg: "on" | "off"
  kLink,               // target -> other (host names or "controller"), arg: "on" | "off"
  kControllers,        // count: replicas (first command, at 0s)
  kReplica,            // target: "c1".. or "leader"; arg: kill|start|restart|store-off|store-on|overstay|overstay-window
  kDrain,
  kUndrain,
  kMigrate,  // target vm, arg host
  kReset,
  kRestart,
  kEnd,
};

struct Command {
  Millis t_ms = 0;
  int line = 0;  // 1-based line in the script file
  Op op = Op::kEnd;
  std::string target;              // host or vm name
  std::string other;               // link: the far end
  std::string arg;                 // on/off, stop/start, health, destination host
  int count = 0;                   // fail-migrations, fail-start
  Millis duration = 0;             // stall, libvirt slow
  std::vector<std::string> files;  // apply
  std::string text;                // the command as written (words joined by one space)
};

struct Script {
  std::string file;               // as given, for messages
  std::vector<Command> commands;  // file order; times never decrease; the last is kEnd
  Millis end_ms = 0;
  int controllers = 0;  // `controllers N`: N replicas on etcd; 0 = one controller on SQLite
};

// What a script may name. A set that is not given is not checked.
struct ScriptNames {
  std::optional<std::set<std::string>> hosts;
  std::optional<std::set<std::string>> vms;
  std::optional<std::set<std::string>> files;  // files `apply` may name (relative paths)
};

// Errors: kInvalidArgument with where() = {file, line}: an unknown command or
// wrong arguments, a bad time, times going backwards, an unknown name, a
// command after `end`, no `end` at all.
Result<Script> parseScript(const std::string& text, const std::string& file,
                           const ScriptNames& names = {});

}  // namespace tw::sim
