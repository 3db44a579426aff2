#include "agent/domain_builder.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "tw/log.h"

extern char** environ;

namespace tw {

namespace {

bool fileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool isDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool safeName(const std::string& s) {
  if (s.empty() || s[0] == '.') return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string joinPath(const std::string& dir, const std::string& rel) {
  if (rel.empty() || rel[0] == '/') return rel;
  return dir + "/" + rel;
}

Status makeDiskDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return internalError("creating the disk dir " + dir + ": " + ec.message());
  return Status::ok();
}

DomainSpec plainSpec(const Assignment& a) {
  DomainSpec spec;
  spec.meta.vm = a.vm;
  spec.meta.tier = a.tier;
  spec.meta.epoch = a.epoch;
  spec.meta.policy_version = a.policy_version;
  spec.meta.spec_digest = a.spec_digest;
  spec.vcpus = a.vcpus;
  spec.memory_mib = a.memory_mib;
  return spec;
}

std::string readSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<ImageInfo> loadImage(const std::string& dir, const std::string& name) {
  if (!safeName(name)) return invalidArgument("bad image name '" + name + "'");
  const std::string path = dir + "/" + name + ".json";
  std::ifstream in(path);
  if (!in) return notFound("image '" + name + "' is not in " + dir + " (run images/build)");
  ImageInfo img;
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    img.name = j.value("name", name);
    img.role = j.value("role", "");
    img.kernel = joinPath(dir, j.value("kernel", ""));
    img.initrd = joinPath(dir, j.value("initrd", ""));
    img.cmdline = j.value("cmdline", "");
    std::istringstream params(j.value("cmdline_params", ""));
    for (std::string p; params >> p;) img.cmdline_params.push_back(p);
    img.memory_mib = j.value("memory_mib", 128);
    img.min_memory_mib = j.value("min_memory_mib", 0);
    if (j.contains("ports")) img.ports = j.at("ports").get<std::vector<int>>();
    img.disk = joinPath(dir, j.value("disk", ""));
    img.ready_line = j.value("ready_line", "");
    img.failed_line = j.value("failed_line", "");
  } catch (const nlohmann::json::exception& e) {
    return invalidArgument(path + ": " + e.what());
  }
  if (img.kernel.empty()) return invalidArgument(path + ": no kernel");
  for (const std::string* f : {&img.kernel, &img.initrd, &img.disk}) {
    if (!f->empty() && !fileExists(*f)) {
      return notFound("image '" + name + "': " + *f + " is missing (run images/build)");
    }
  }
  return img;
}

Result<DomainSpec> PlainDomainBuilder::build(const Assignment& a) { return plainSpec(a); }

std::string kernelCmdline(const ImageInfo& image, const Assignment& a, const std::string& host,
                          const std::string& api) {
  std::string out = image.cmdline;
  for (const std::string& p : image.cmdline_params) {
    std::string value;
    if (p == "tw.vm") {
      value = a.vm;
    } else if (p == "tw.tier") {
      value = a.tier;
    } else if (p == "tw.host") {
      value = host;
    } else if (p == "tw.api") {
      value = api;
    } else if (p == "tw.backend") {
      value = a.after.empty() ? "" : a.after.front();
    }
    if (value.empty()) continue;
    if (!out.empty()) out += ' ';
    out += p + "=" + value;
  }
  return out;
}

Status runProgram(const std::vector<std::string>& argv) {
  if (argv.empty()) return invalidArgument("no program to run");
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return internalError(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<char*> args;
  for (const std::string& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(err_pipe[0]);
    return internalError("running " + argv[0] + ": " + std::strerror(rc));
  }
  std::string err;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
    if (n > 0) {
      if (err.size() < 16384) err.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(err_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::ok();
  const size_t nl = err.find('\n');
  std::string first = err.substr(0, nl);
  std::string how = WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                      : "signal " + std::to_string(WTERMSIG(status));
  return internalError(argv[0] + " failed (" + how + ")" + (first.empty() ? "" : ": " + first));
}

ImageDomainBuilder::ImageDomainBuilder(ImageBuilderOptions options) : options_(std::move(options)) {}

std::string ImageDomainBuilder::diskPath(const std::string& vm) const {
  return options_.disk_dir + "/" + vm + ".qcow2";
}
std::string ImageDomainBuilder::consolePath(const std::string& vm) const {
  return options_.disk_dir + "/" + vm + ".console.log";
}

Status ImageDomainBuilder::ensureOverlay(const std::string& vm, int64_t epoch,
                                         const std::string& base) {
  const std::string disk = diskPath(vm);
  const std::string marker = disk + ".epoch";
  if (fileExists(disk) && readSmallFile(marker) == std::to_string(epoch)) return Status::ok();
  ::unlink(disk.c_str());
  ::unlink(marker.c_str());
  Status st = createOverlay(base, disk);
  if (!st.isOk()) return st.withContext("creating the disk of vm '" + vm + "'");
  std::ofstream(marker) << epoch;
  log::info("created disk {} (overlay of {}) for vm '{}' at epoch {}", disk, base, vm, epoch);
  return Status::ok();
}

Status ImageDomainBuilder::restoreDisk(const Assignment& a, const std::string& disk) {
  const std::string marker = disk + ".restored";
  const std::string done = "epoch " + std::to_string(a.epoch) + " from " + a.restore_from;
  if (readSmallFile(marker) == done) return Status::ok();  // this restore ran already
  const std::string context = "restoring the disk of vm '" + a.vm + "' from backup " + a.restore_from;
  if (!fileExists(a.restore_from))
    return failedPrecondition(context + ": no such file on host '" + options_.host + "'");
  const std::string part = disk + ".restoring";
  ::unlink(part.c_str());
  Status st = runProgram({options_.qemu_img, "convert", "-q", "-O", "qcow2", a.restore_from, part});
  if (!st.isOk()) {
    ::unlink(part.c_str());
    return st.withContext(context);
  }
  if (::rename(part.c_str(), disk.c_str()) != 0) {
    ::unlink(part.c_str());
    return internalError(context + ": renaming " + part + " failed");
  }
  std::ofstream(marker) << done;
  log::info("vm '{}': disk {} replaced from backup {} (epoch {})", a.vm, disk, a.restore_from,
            a.epoch);
  return Status::ok();
}

Status ImageDomainBuilder::createOverlay(const std::string& base, const std::string& path) {
  return runProgram({options_.qemu_img, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", path});
}

Result<DomainSpec> ImageDomainBuilder::build(const Assignment& a) {
  DomainSpec spec = plainSpec(a);
  if (a.image.empty()) return spec;
  Result<ImageInfo> image = loadImage(options_.images_dir, a.image);
  if (!image.isOk()) return image.status();
  if (image->min_memory_mib > 0 && a.memory_mib < image->min_memory_mib) {
    return invalidArgument("image '" + a.image + "' needs at least " +
                           std::to_string(image->min_memory_mib) + " MiB; tier '" + a.tier +
                           "' gives " + std::to_string(a.memory_mib));
  }
  spec.kernel = image->kernel;
  spec.initrd = image->initrd;
  spec.cmdline = kernelCmdline(*image, a, options_.host, options_.api_now ? options_.api_now() : options_.api);
  spec.user_network = !image->ports.empty() || !a.ports.empty() || a.health.port > 0;
  if (!options_.disk_dir.empty()) {
    TW_RETURN_IF_ERROR(makeDiskDir(options_.disk_dir));
    spec.console_path = consolePath(a.vm);
  }
  if (!image->disk.empty()) {
    if (a.storage.kind == StorageKind::kShared) {
      std::string dir = a.storage.path;
      if (!a.storage.pool.empty()) {
        if (!options_.pool_dir) return unimplemented("storage pool '" + a.storage.pool + "': this agent resolves no pools");
        Result<std::string> pool_dir = options_.pool_dir(a.storage.pool);
        if (!pool_dir.isOk()) return pool_dir.status().withContext("the shared disk of vm '" + a.vm + "'");
        dir = *pool_dir;
      } else if (!isDirectory(dir)) {
        return failedPrecondition("the shared storage of vm '" + a.vm + "', " + dir +
                                  ", is no directory on host '" + options_.host +
                                  "' (mount it on every host)");
      }
      spec.disk_path = dir + "/" + a.vm + ".qcow2";
      if (!a.restore_from.empty()) TW_RETURN_IF_ERROR(restoreDisk(a, spec.disk_path));
      if (!fileExists(spec.disk_path)) {
        Status st = createOverlay(image->disk, spec.disk_path);
        if (!st.isOk()) return st.withContext("creating the shared disk of vm '" + a.vm + "'");
      }
    } else {
      if (options_.disk_dir.empty()) return invalidArgument("image '" + a.image + "' has a disk and the agent has no disk dir");
      TW_RETURN_IF_ERROR(ensureOverlay(a.vm, a.epoch, image->disk));
      spec.disk_path = diskPath(a.vm);
    }
  }
  return spec;
}

Status ImageDomainBuilder::prepareIncoming(const Assignment& a) {
  if (!hasLocalDisk(a)) return Status::ok();
  Result<ImageInfo> image = loadImage(options_.images_dir, a.image);
  if (!image.isOk()) return image.status();
  TW_RETURN_IF_ERROR(makeDiskDir(options_.disk_dir));
  return ensureOverlay(a.vm, a.epoch, image->disk);
}

bool ImageDomainBuilder::hasLocalDisk(const Assignment& a) {
  if (a.image.empty() || a.storage.kind == StorageKind::kShared || options_.disk_dir.empty()) {
    return false;
  }
  Result<ImageInfo> image = loadImage(options_.images_dir, a.image);
  return image.isOk() && !image->disk.empty();
}

void ImageDomainBuilder::release(const std::string& vm) {
  if (options_.disk_dir.empty()) return;
  const std::string disk = diskPath(vm);
  if (::unlink(disk.c_str()) == 0) log::info("removed disk {} of vm '{}'", disk, vm);
  ::unlink((disk + ".epoch").c_str());
}

}  // namespace tw
