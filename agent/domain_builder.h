// What a VM's domain is made of on this host: the agent asks a DomainBuilder
// for the DomainSpec of an assignment when it defines the domain, lets it
// prepare what an incoming migration needs, and tells it when a VM has left
// the host (its local disk goes).
//
// PlainDomainBuilder: name, vcpus, memory and metadata only (the test driver,
// unit tests, the simulator). ImageDomainBuilder: resolves the tier's image
// (`image: tiny-web` → DIR/tiny-web.json, see images/README.md) into direct
// kernel boot, a kernel command line carrying the VM's identity, QEMU user
// networking for its service ports, and a copy-on-write overlay of the
// image's disk (qemu-img) in the host's disk dir.
//
// Threads: called from the agent's loop thread only.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tw/hypervisor.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

// One image's metadata (images/<name>.json). Paths are absolute (resolved
// against the image dir) once loaded.
struct ImageInfo {
  std::string name;
  std::string role;
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::vector<std::string> cmdline_params;  // "tw.vm", "tw.tier", ...: appended by the builder
  int memory_mib = 128;
  int min_memory_mib = 0;
  std::vector<int> ports;
  std::string disk;  // base qcow2 of the VM's disk; empty = diskless
  std::string ready_line;
  std::string failed_line;
};

// DIR/<name>.json. Errors: kNotFound (no such file: "image 'x' is not in DIR
// (run images/build)"), kInvalidArgument (bad JSON or fields).
Result<ImageInfo> loadImage(const std::string& dir, const std::string& name);

class DomainBuilder {
 public:
  virtual ~DomainBuilder() = default;
  // The domain to define for `a` (its disk created when needed).
  virtual Result<DomainSpec> build(const Assignment& a) = 0;
  // `a` arrives by migration: prepare what the domain needs before it comes
  // (its disk, empty, for a storage-copying migration). Idempotent.
  virtual Status prepareIncoming(const Assignment& /*a*/) { return Status::ok(); }
  // Whether `a`'s domain has a disk of this host only, which a live migration
  // must copy (MigrateOptions::copy_storage).
  virtual bool hasLocalDisk(const Assignment& /*a*/) { return false; }
  // `vm` left this host (undefined, or migrated away): its local files go.
  virtual void release(const std::string& /*vm*/) {}
};

// Name, vcpus, memory and metadata; no boot source, disk or network.
class PlainDomainBuilder final : public DomainBuilder {
 public:
  Result<DomainSpec> build(const Assignment& a) override;
};

struct ImageBuilderOptions {
  std::string images_dir;  // where <image>.json and the files they name are
  std::string disk_dir;    // VM disks and console logs of this host
  std::string host;        // tw.host=
  std::string api;         // tw.api= (the controller's HOST:PORT as this host reaches it)
  // When set, tw.api= is what this returns at each build instead of `api`: the
  // agent's controller replica that answered last (several replicas,
  // docs/ha.md), so that a VM started after the leader moved polls a replica
  // that is up. Called on the agent's loop thread.
  std::function<std::string()> api_now;
  std::string qemu_img = "qemu-img";
  // Resolves a tier's storage.pool to its target directory on this host
  // (Hypervisor::storagePoolDir); unset: a pool is an error.
  std::function<Result<std::string>(const std::string& pool)> pool_dir;
};

class ImageDomainBuilder final : public DomainBuilder {
 public:
  explicit ImageDomainBuilder(ImageBuilderOptions options);

  // An assignment without an image gets the plain spec. Errors: the image's
  // (unknown, bad metadata, a file it names missing), memory below the
  // image's minimum, or qemu-img failing.
  Result<DomainSpec> build(const Assignment& a) override;
  Status prepareIncoming(const Assignment& a) override;
  bool hasLocalDisk(const Assignment& a) override;
  void release(const std::string& vm) override;

  // DISK_DIR/<vm>.qcow2 and DISK_DIR/<vm>.console.log.
  std::string diskPath(const std::string& vm) const;
  std::string consolePath(const std::string& vm) const;

 private:
  // The overlay of `base` for `vm` at `epoch`: kept when it exists for that
  // epoch (a restart in place keeps its data), else created anew (a new
  // placement starts from the image). DISK_DIR/<vm>.qcow2.epoch records it.
  Status ensureOverlay(const std::string& vm, int64_t epoch, const std::string& base);
  // A restore (Assignment::restore_from): `disk` becomes a copy of the
  // backup (qemu-img convert, then rename), once per epoch and backup file
  // (the marker <disk>.restored says which ran last). The domain is not
  // running: a restore comes with a new epoch, whose old domain the agent
  // destroyed before it defines the new one.
  Status restoreDisk(const Assignment& a, const std::string& disk);
  // qemu-img create -f qcow2 -b BASE -F qcow2 PATH.
  Status createOverlay(const std::string& base, const std::string& path);

  ImageBuilderOptions options_;
};

// The kernel command line of `a` booting `image`: image.cmdline, then each
// parameter of image.cmdline_params with its value (tw.vm, tw.tier, tw.host,
// tw.api, tw.backend = the first tier of a.after); parameters without a value
// are left out.
std::string kernelCmdline(const ImageInfo& image, const Assignment& a, const std::string& host,
                          const std::string& api);

// Runs argv (no shell), waiting for it. Errors: kInternal with the program's
// stderr (first line) and exit status.
Status runProgram(const std::vector<std::string>& argv);

}  // namespace tw
