// What the benches read about processes and the machine: CPU ticks, memory
// and load from /proc, a free loopback port, percentiles, and the
// controller's heartbeat counters from its /metrics text.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace twbench {

// The wall clock in ms since the epoch (events' t_ms are on it).
int64_t wallMs();
// A loopback TCP port nobody listens on now.
int freePort();
// utime + stime of a process, in clock ticks.
int64_t cpuTicks(pid_t pid);
// The first three fields of /proc/loadavg.
std::string loadAverage();
// A /proc/PID/status field in KiB ("VmRSS", "VmHWM").
int64_t statusKiB(pid_t pid, const std::string& key);
// tierwarden_heartbeats_total{path="..."} of a /metrics text: path -> count.
std::map<std::string, int64_t> heartbeatPaths(const std::string& metrics);
// A counter's series by their one label: `series` is the text up to the
// label's value, e.g. "tierwarden_heartbeats_total{path=\"".
std::map<std::string, int64_t> labelledCounts(const std::string& metrics, const std::string& series);
// The value of an unlabelled metric ("name 123" line) of a /metrics text; -1 if absent.
int64_t metricValue(const std::string& metrics, const std::string& name);
// The p-quantile (0..1) of v, nearest rank below; 0 for none.
double percentile(std::vector<double> v, double p);

}  // namespace twbench
