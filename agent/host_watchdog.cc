#include "agent/host_watchdog.h"

#include <fcntl.h>
#include <linux/watchdog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tw/log.h"

namespace tw {

namespace {

std::string errnoText(int err) { return std::strerror(err); }

std::string secondsText(Millis ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace

// ------------------------------------------------------------ the device ---

DeviceWatchdog::~DeviceWatchdog() {
  // Never disarmed by accident: a destructor without close() is a crash path.
  if (fd_ >= 0) ::close(fd_);
}

Status DeviceWatchdog::open() {
  if (fd_ >= 0) return Status::ok();
  // Opening the device starts it (the kernel's watchdog API).
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return unavailable("cannot open the watchdog device " + path_ + ": " + errnoText(err) +
                       (err == ENOENT ? " (no hardware watchdog? `modprobe softdog`)" : "") +
                       (err == EBUSY ? " (another process holds it: one agent per host)" : ""));
  }
  fd_ = fd;
  watchdog_info info{};
  if (::ioctl(fd_, WDIOC_GETSUPPORT, &info) == 0) {
    const char* name = reinterpret_cast<const char*>(info.identity);
    identity_.assign(name, strnlen(name, sizeof info.identity));
  }
  int secs = static_cast<int>((timeout_ms_ + 999) / 1000);
  if (::ioctl(fd_, WDIOC_SETTIMEOUT, &secs) != 0) {
    const int err = errno;
    // Leave it running rather than disarm it: the agent exits and its
    // restart opens it again.
    ::close(fd_);
    fd_ = -1;
    return unavailable("cannot set the timeout of " + path_ + " to " + std::to_string(secs) +
                       "s: " + errnoText(err));
  }
  int actual = secs;
  if (::ioctl(fd_, WDIOC_GETTIMEOUT, &actual) == 0 && actual > 0) secs = actual;
  if (static_cast<Millis>(secs) * 1000 != timeout_ms_) {
    log::warn("watchdog {}: the driver counts {}s (asked for {})", path_, secs,
              secondsText(timeout_ms_));
  }
  timeout_ms_ = static_cast<Millis>(secs) * 1000;
  return pet();
}

Status DeviceWatchdog::pet() {
  if (fd_ < 0) return failedPrecondition("the watchdog device is not open");
  int dummy = 0;
  if (::ioctl(fd_, WDIOC_KEEPALIVE, &dummy) != 0) {
    return unavailable("petting " + path_ + ": " + errnoText(errno));
  }
  return Status::ok();
}

void DeviceWatchdog::close(bool disarm) {
  if (fd_ < 0) return;
  if (disarm) {
    // The magic close: the driver stops the countdown (unless the kernel
    // was built with nowayout).
    if (::write(fd_, "V", 1) != 1) {
      log::warn("watchdog {}: the magic close failed: {}", path_, errnoText(errno));
    }
  }
  ::close(fd_);
  fd_ = -1;
}

std::string DeviceWatchdog::describe() const {
  return path_ + (identity_.empty() ? "" : " (" + identity_ + ")") + ", " +
         secondsText(timeout_ms_);
}

// -------------------------------------------------------------- the lab ---

Status LabWatchdog::writeState(const std::string& text) {
  // Temp file + rename: the watcher never reads half a line.
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text << "\n";
    if (!f) return unavailable("cannot write the lab watchdog file " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path_, ec);
  if (ec) return unavailable("cannot write the lab watchdog file " + path_ + ": " + ec.message());
  return Status::ok();
}

Status LabWatchdog::open() { return writeState("armed " + std::to_string(timeout_ms_)); }

Status LabWatchdog::pet() {
  // A touch: one syscall, no data written.
  if (::utimensat(AT_FDCWD, path_.c_str(), nullptr, 0) != 0) {
    return unavailable("petting the lab watchdog " + path_ + ": " + errnoText(errno));
  }
  return Status::ok();
}

void LabWatchdog::close(bool disarm) {
  if (!disarm) return;  // it keeps counting: the watcher fires W after the last touch
  Status st = writeState("disarmed");
  if (!st.isOk()) log::warn("{}", st.toString());
}

std::string LabWatchdog::describe() const {
  return "lab watchdog " + path_ + ", " + secondsText(timeout_ms_);
}

// ------------------------------------------------------------- factory ---

Result<std::unique_ptr<HostWatchdog>> makeHostWatchdog(const std::string& spec,
                                                       Millis timeout_ms) {
  if (spec == "none" || spec.empty()) return std::unique_ptr<HostWatchdog>(new NoWatchdog());
  if (timeout_ms <= 0) {
    return invalidArgument("--watchdog-timeout must be more than 0 (got " +
                           std::to_string(timeout_ms) + " ms)");
  }
  if (spec.rfind("lab:", 0) == 0) {
    if (spec.size() == 4) return invalidArgument("--watchdog lab:PATH needs a path");
    return std::unique_ptr<HostWatchdog>(new LabWatchdog(spec.substr(4), timeout_ms));
  }
  if (spec.rfind("/dev/", 0) == 0) {
    return std::unique_ptr<HostWatchdog>(new DeviceWatchdog(spec, timeout_ms));
  }
  return invalidArgument("--watchdog '" + spec +
                         "': expected a device (/dev/watchdog), lab:PATH or none");
}

// ------------------------------------------------------------- the pets ---

WatchdogPetter::WatchdogPetter(HostWatchdog& watchdog, Clock& clock,
                               std::function<bool(Millis)> entitled)
    : watchdog_(watchdog), clock_(clock), entitled_(std::move(entitled)) {
  last_pet_ms_ = clock_.nowMs();
}

Millis WatchdogPetter::tick() {
  const Millis now = clock_.nowMs();
  const Millis w = watchdog_.timeoutMs();
  const Millis every = std::clamp<Millis>(w / 5, 50, 1000);
  if (w <= 0) return now + 1000;
  const bool entitled = entitled_(now);
  if (entitled) {
    Status st = watchdog_.pet();
    if (st.isOk()) {
      last_pet_ms_ = now;
      pet_failed_said_ = false;
    } else if (!pet_failed_said_) {
      pet_failed_said_ = true;
      log::error("{}", st.toString());
    }
  }
  if (entitled != petting_) {
    petting_ = entitled;
    if (entitled) {
      log::info("watchdog ({}): petting again", watchdog_.describe());
    } else {
      log::error("watchdog ({}): not petting it any more: the lease ran out while the host is "
                 "isolated and its VMs are not all destroyed yet; the host is reset in {} "
                 "unless the self-fence completes first",
                 watchdog_.describe(), secondsText(w));
    }
  }
  return now + every;
}

}  // namespace tw
