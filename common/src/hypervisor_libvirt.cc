// LibvirtHypervisor: the Hypervisor on one libvirt connection. With
// hypervisor_libvirt_events.cc (libvirt's state and event numbers as ours) the
// only file of the project that includes libvirt headers; libvirt's errors
// become Status values here, with libvirt's own message and our context. The
// domain XML and the other text work, which need no libvirt handle, live in
// hypervisor_libvirt_xml.cc.
//
// Threads: callers may use one LibvirtHypervisor from several threads; mu_
// lets one call at a time use (and, when it died, reopen) the connection.
// libvirt delivers events on one process-wide thread that loops
// virEventRunDefaultImpl(); that thread calls the subscribed handler.
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hypervisor_libvirt_events.h"
#include "hypervisor_libvirt_xml.h"
#include "tw/hypervisor.h"
#include "tw/log.h"
#include "tw/text.h"

namespace tw {

namespace {

// ------------------------------------------------------------ RAII handles ---

struct ConnectCloser {
  void operator()(virConnectPtr conn) const { virConnectClose(conn); }
};
struct DomainFreer {
  void operator()(virDomainPtr dom) const { virDomainFree(dom); }
};
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }  // NOLINT(cppcoreguidelines-no-malloc)
};
using ConnectPtr = std::unique_ptr<virConnect, ConnectCloser>;
using DomainPtr = std::unique_ptr<virDomain, DomainFreer>;
struct StoragePoolFreer {
  void operator()(virStoragePoolPtr p) const { virStoragePoolFree(p); }
};
using CString = std::unique_ptr<char, FreeDeleter>;

// Typed parameters built with virTypedParamsAdd*.
class TypedParams {
 public:
  TypedParams() = default;
  TypedParams(const TypedParams&) = delete;
  TypedParams& operator=(const TypedParams&) = delete;
  ~TypedParams() { virTypedParamsFree(params_, count_); }
  bool addString(const char* name, const std::string& value) {
    return virTypedParamsAddString(&params_, &count_, &capacity_, name, value.c_str()) == 0;
  }
  virTypedParameterPtr get() const { return params_; }
  int count() const { return count_; }

 private:
  virTypedParameterPtr params_ = nullptr;
  int count_ = 0;
  int capacity_ = 0;
};

// ------------------------------------------------------------------ errors ---


struct LibvirtError {
  int code = VIR_ERR_OK;
  int domain = VIR_FROM_NONE;
  std::string message;
};

// Reads and clears this thread's last libvirt error. Call it at once after the
// failing call: every libvirt entry point (even virDomainFree) resets it.
LibvirtError takeLastError() {
  LibvirtError e;
  virErrorPtr err = virGetLastError();
  if (err != nullptr) {
    e.code = err->code;
    e.domain = err->domain;
    if (err->message != nullptr) e.message = err->message;
  }
  if (e.message.empty()) e.message = "unknown libvirt error";
  virResetLastError();
  return e;
}

Code codeFor(const LibvirtError& e) {
  if (e.domain == VIR_FROM_RPC) return Code::kUnavailable;  // socket, keepalive, daemon gone
  switch (e.code) {
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_INVALID_CONN:
    case VIR_ERR_RPC:
    case VIR_ERR_OPERATION_TIMEOUT:
    case VIR_ERR_AGENT_UNRESPONSIVE:
    case VIR_ERR_RESOURCE_BUSY:
    case VIR_ERR_AUTH_UNAVAILABLE: return Code::kUnavailable;
    case VIR_ERR_NO_DOMAIN: return Code::kNotFound;
    case VIR_ERR_OPERATION_INVALID: return Code::kFailedPrecondition;
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_CONFIG_UNSUPPORTED: return Code::kInvalidArgument;
    case VIR_ERR_AUTH_FAILED:
    case VIR_ERR_AUTH_CANCELLED:
    case VIR_ERR_ACCESS_DENIED: return Code::kPermissionDenied;
    default: return Code::kInternal;
  }
}

Status toStatus(const LibvirtError& e, const std::string& context) {
  return Status(codeFor(e), context + ": " + e.message);
}

// Reads the last error of the call that just failed.
Status lastError(const std::string& context) { return toStatus(takeLastError(), context); }

// ---------------------------------------------------- process-wide set-up ---

void ignoreLibvirtError(void* /*user_data*/, virErrorPtr /*error*/) {}  // errors are values

// Once per process, before the first connection: libvirt initialised, its
// stderr printing off, the default event loop registered and run by one
// detached thread for the rest of the process.
Status initLibvirtOnce() {
  static std::once_flag once;
  static Status init_status;
  std::call_once(once, [] {
    if (virInitialize() < 0) {
      init_status = lastError("initialising libvirt");
      return;
    }
    virSetErrorFunc(nullptr, ignoreLibvirtError);
    if (virEventRegisterDefaultImpl() < 0) {
      init_status = lastError("registering libvirt's event loop");
      return;
    }
    std::thread([] {
      bool reported = false;
      for (;;) {
        if (virEventRunDefaultImpl() < 0 && !reported) {
          log::error("libvirt event loop: {}", takeLastError().message);
          reported = true;
        }
      }
    }).detach();
  });
  return init_status;
}

// --------------------------------------------------- XML, states, events -----

// The text work (hypervisor_libvirt_xml.cc) and libvirt's numbers as our
// states and events (hypervisor_libvirt_events.cc).
using libvirt_detail::buildDomainXml;
using libvirt_detail::hasForbiddenChars;
using libvirt_detail::parseMeta;
using libvirt_detail::parseUsernetForwards;
using libvirt_detail::poolTargetDir;
using libvirt_detail::replaceMetadataElement;
using libvirt_detail::toDomainState;
using libvirt_detail::translateEvent;
using libvirt_detail::validateSpec;
using libvirt_detail::xmlEscape;
using libvirt_detail::xmlUnescape;

// ------------------------------------------------------------- metadata -----

// Our metadata of a domain; nullopt when the domain has none (not ours).
// Reads the persistent definition (what define() wrote last), or the live one
// of a transient domain.
Result<std::optional<DomainMeta>> readMeta(virDomainPtr dom) {
  const char* name = virDomainGetName(dom);
  const std::string domain_name = name != nullptr ? name : "";
  const std::string context = "reading metadata of domain " + singleQuoted(domain_name);
  CString xml(virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, kMetadataNamespace,
                                   VIR_DOMAIN_AFFECT_CONFIG));
  if (!xml) {
    LibvirtError e = takeLastError();
    if (e.code == VIR_ERR_NO_DOMAIN_METADATA) return std::optional<DomainMeta>();
    if (e.code != VIR_ERR_OPERATION_INVALID) return toStatus(e, context);
    // Transient: it has no persistent config.
    xml.reset(virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, kMetadataNamespace,
                                   VIR_DOMAIN_AFFECT_CURRENT));
    if (!xml) {
      e = takeLastError();
      if (e.code == VIR_ERR_NO_DOMAIN_METADATA) return std::optional<DomainMeta>();
      return toStatus(e, context);
    }
  }
  Result<DomainMeta> meta = parseMeta(xml.get(), domain_name);
  if (!meta.isOk()) return meta.status();
  return std::optional<DomainMeta>(std::move(meta).value());
}

// Whether an event's domain is ours. By metadata; when the domain is gone
// already (undefined, migrated away) by its UUID, which only we derive so.
bool isManagedForEvent(virDomainPtr dom, const std::string& name) {
  CString xml(virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, kMetadataNamespace, 0));
  if (xml) return true;
  LibvirtError e = takeLastError();
  if (e.code == VIR_ERR_NO_DOMAIN_METADATA) return false;
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(dom, uuid) < 0) {
    takeLastError();
    return false;
  }
  return uuid == uuidForVm(name);
}

// --------------------------------------------------------------- events -----

// What the event thread reaches. libvirt holds a reference (freed by its free
// callback), so a callback still running while the hypervisor goes away never
// touches freed memory; the hypervisor clears the handler when it goes.
struct EventSink {
  std::mutex mu;
  DomainEventHandler handler;  // guarded by mu
};
using SinkRef = std::shared_ptr<EventSink>;

void freeSinkRef(void* opaque) { delete static_cast<SinkRef*>(opaque); }

int onLifecycleEvent(virConnectPtr /*conn*/, virDomainPtr dom, int event, int detail,
                     void* opaque) {
  auto translated = translateEvent(event, detail);
  if (!translated) return 0;
  const char* name = virDomainGetName(dom);
  if (name == nullptr || !isManagedForEvent(dom, name)) return 0;
  DomainEvent ev{name, translated->first, translated->second};
  EventSink& sink = **static_cast<SinkRef*>(opaque);
  std::lock_guard<std::mutex> lock(sink.mu);
  if (!sink.handler) return 0;
  try {  // an exception must not unwind through libvirt's C frames
    sink.handler(ev);
  } catch (const std::exception& ex) {
    log::error("domain event handler failed on vm '{}': {}", ev.vm, ex.what());
  } catch (...) {
    log::error("domain event handler failed on vm '{}'", ev.vm);
  }
  return 0;
}

// Set by libvirt's close callback (event thread) when the connection dies.
struct CloseFlag {
  std::atomic<bool> closed{false};
  std::string uri;
};

const char* closeReasonName(int reason) {
  switch (reason) {
    case VIR_CONNECT_CLOSE_REASON_ERROR: return "i/o error";
    case VIR_CONNECT_CLOSE_REASON_EOF: return "end of file from the daemon";
    case VIR_CONNECT_CLOSE_REASON_KEEPALIVE: return "keepalive timeout";
    case VIR_CONNECT_CLOSE_REASON_CLIENT: return "closed by the client";
    default: return "unknown reason";
  }
}

void onConnectionClosed(virConnectPtr /*conn*/, int reason, void* opaque) {
  auto* flag = static_cast<CloseFlag*>(opaque);
  flag->closed.store(true);
  log::warn("libvirt connection to '{}' closed: {}", flag->uri, closeReasonName(reason));
}

// ---------------------------------------------------------- start batches ---

// The starts of one beginStarts(): shared by the caller and the worker
// threads, which own a copy each, so that a worker stuck in libvirt after the
// caller let go (and after the LibvirtHypervisor is gone) touches nothing freed.
class StartBatch final : public Hypervisor::StartCalls {
 public:
  StartBatch(std::string uri, std::vector<std::string> vms)
      : uri_(std::move(uri)), vms_(std::move(vms)), results_(vms_.size()),
        cancelled_(vms_.size(), false) {}

  std::optional<Status> result(size_t i) override {
    std::lock_guard<std::mutex> lock(mu_);
    return i < results_.size() ? results_[i] : internalError("no such start");
  }
  void cancel(size_t i) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (i < cancelled_.size()) cancelled_[i] = true;
  }

  const std::string& uri() const { return uri_; }
  const std::string& vm(size_t i) const { return vms_[i]; }
  size_t size() const { return vms_.size(); }

  // The next start for a worker to run (npos: none left). A cancelled one
  // is skipped, answered "cancelled".
  size_t claim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (; next_ < vms_.size(); ++next_) {
      if (!cancelled_[next_]) return next_++;
      results_[next_] = unavailable("starting vm " + singleQuoted(vms_[next_]) +
                                  ": given up before it began");
    }
    return std::string::npos;
  }
  void finish(size_t i, Status st) {
    bool late;
    {
      std::lock_guard<std::mutex> lock(mu_);
      late = cancelled_[i];
      results_[i] = st;
    }
    // Nobody collects it any more: the log is where it shows.
    if (late) {
      log::warn("the start of vm '{}' that was given up returned at last: {}", vms_[i],
                st.toString());
    }
  }

 private:
  const std::string uri_;
  const std::vector<std::string> vms_;
  std::mutex mu_;  // guards what follows
  std::vector<std::optional<Status>> results_;
  std::vector<bool> cancelled_;
  size_t next_ = 0;
};

// ------------------------------------------------------ LibvirtHypervisor ---

class LibvirtHypervisor final : public Hypervisor {
 public:
  explicit LibvirtHypervisor(std::string uri) : uri_(std::move(uri)) { close_flag_.uri = uri_; }
  LibvirtHypervisor(const LibvirtHypervisor&) = delete;
  LibvirtHypervisor& operator=(const LibvirtHypervisor&) = delete;

  ~LibvirtHypervisor() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      disconnectLocked();
    }
    std::lock_guard<std::mutex> lock(sink_->mu);
    sink_->handler = nullptr;
  }

  // The first connection.
  Status open() {
    std::lock_guard<std::mutex> lock(mu_);
    return connectLocked();
  }

  Status ping() override {
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    unsigned long version = 0;  // NOLINT(google-runtime-int): libvirt's type
    if (virConnectGetLibVersion(conn_.get(), &version) < 0) {
      return lastError("pinging libvirt at " + singleQuoted(uri_));
    }
    return Status::ok();
  }

  Result<Capacity> capacity() override {
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    virNodeInfo info{};
    if (virNodeGetInfo(conn_.get(), &info) < 0) {
      return lastError("reading node info of " + singleQuoted(uri_));
    }
    return Capacity{static_cast<int>(info.cpus), static_cast<int64_t>(info.memory / 1024)};
  }

  Status define(const DomainSpec& spec) override {
    TW_RETURN_IF_ERROR(validateSpec(spec));
    const std::string& vm = spec.meta.vm;
    const std::string context = "defining vm " + singleQuoted(vm);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    {
      DomainPtr existing(virDomainLookupByName(conn_.get(), vm.c_str()));
      if (!existing) {
        LibvirtError e = takeLastError();
        if (e.code != VIR_ERR_NO_DOMAIN) return toStatus(e, context);
      } else {
        auto meta = readMeta(existing.get());
        if (!meta.isOk()) return meta.status().withContext(context);
        if (!meta.value()) return unmanaged(context, vm);
      }
    }
    const std::string type = spec.domain_type.empty() ? default_type_ : spec.domain_type;
    const std::string xml = buildDomainXml(spec, type);
    log::debug("defining vm '{}' on '{}':\n{}", vm, uri_, xml);
    // Replaces an existing definition of that name (same UUID) in place.
    DomainPtr dom(virDomainDefineXML(conn_.get(), xml.c_str()));
    if (!dom) return lastError(context);
    return Status::ok();
  }

  Status start(const std::string& vm) override {
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    return startOn(conn_.get(), vm);
  }

  // One connection runs one call at a time, while libvirtd starts domains in
  // parallel: up to kParallelStarts workers, the first on this connection,
  // every other on a short-lived connection of its own.
  std::vector<Status> startAll(const std::vector<std::string>& vms) override {
    // In-process test driver connections (`test:///FILE`) each see a host of
    // their own: one connection for all. (Through a daemon they share one.)
    if (vms.size() < 2 || uri_.rfind("test://", 0) == 0) return Hypervisor::startAll(vms);
    std::vector<Status> out(vms.size());
    std::atomic<size_t> next{0};
    const auto work = [&](bool own_connection) {
      ConnectPtr conn;
      if (own_connection) conn.reset(virConnectOpen(uri_.c_str()));
      for (size_t i = next++; i < vms.size(); i = next++) {
        if (conn) {
          out[i] = startOn(conn.get(), vms[i]);
        } else {
          out[i] = start(vms[i]);  // this connection (or no other could be opened)
        }
      }
      if (own_connection && !conn) virResetLastError();
    };
    std::vector<std::thread> workers;
    const size_t n = std::min(vms.size(), kParallelStarts);
    for (size_t w = 1; w < n; ++w) workers.emplace_back(work, /*own_connection=*/true);
    work(/*own_connection=*/false);
    for (std::thread& t : workers) t.join();
    return out;
  }

  // Starts that may hang (issue: a virDomainCreate that never returned
  // stalled the agent's loop and, on the shared connection under mu_, every
  // later call): up to kParallelStarts detached workers, each on a connection
  // of its own, sharing the batch. The test driver keeps the default (its
  // `test:///FILE` connections each see a host of their own; it never hangs).
  std::shared_ptr<StartCalls> beginStarts(const std::vector<std::string>& vms) override {
    if (vms.empty() || uri_.rfind("test://", 0) == 0) return Hypervisor::beginStarts(vms);
    auto batch = std::make_shared<StartBatch>(uri_, vms);
    const size_t n = std::min(vms.size(), kParallelStarts);
    size_t running = 0;
    for (size_t w = 0; w < n; ++w) {
      try {
        std::thread(runStarts, batch).detach();
        ++running;
      } catch (const std::system_error& ex) {
        log::error("no thread for starting vms on '{}': {}", uri_, ex.what());
      }
    }
    if (running == 0) {
      for (size_t i = batch->claim(); i != std::string::npos; i = batch->claim()) {
        batch->finish(i, unavailable("starting vm " + singleQuoted(vms[i]) + ": no thread"));
      }
    }
    return batch;
  }

  Status destroy(const std::string& vm) override {
    const std::string context = "destroying vm " + singleQuoted(vm);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    auto found = lookupManagedLocked(vm, context);
    if (!found.isOk()) {
      return found.status().code() == Code::kNotFound ? Status::ok() : found.status();
    }
    virDomainPtr dom = found->dom.get();
    auto active = isRunning(dom, context);
    if (!active.isOk()) {
      return active.status().code() == Code::kNotFound ? Status::ok() : active.status();
    }
    if (!*active) return Status::ok();
    if (virDomainDestroy(dom) < 0) {
      LibvirtError e = takeLastError();
      // Stopped (or gone) between our look and the destroy: what we wanted.
      if (e.code == VIR_ERR_OPERATION_INVALID || e.code == VIR_ERR_NO_DOMAIN) {
        return Status::ok();
      }
      return toStatus(e, context);
    }
    return Status::ok();
  }

  Status undefine(const std::string& vm) override {
    const std::string context = "undefining vm " + singleQuoted(vm);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    auto found = lookupManagedLocked(vm, context);
    if (!found.isOk()) {
      return found.status().code() == Code::kNotFound ? Status::ok() : found.status();
    }
    virDomainPtr dom = found->dom.get();
    auto active = isRunning(dom, context);
    if (!active.isOk()) {
      return active.status().code() == Code::kNotFound ? Status::ok() : active.status();
    }
    if (*active) {
      return failedPrecondition(context + ": it is running; destroy it first");
    }
    // Drivers refuse flags they do not know (the test driver knows no NVRAM):
    // fall back to fewer flags, then to the plain call.
    const unsigned int attempts[] = {
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
            VIR_DOMAIN_UNDEFINE_NVRAM,
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA};
    for (unsigned int flags : attempts) {
      if (virDomainUndefineFlags(dom, flags) == 0) return Status::ok();
      LibvirtError e = takeLastError();
      if (e.code == VIR_ERR_NO_DOMAIN) return Status::ok();
      if (!isUnsupported(e)) return toStatus(e, context);
    }
    if (virDomainUndefine(dom) < 0) {
      LibvirtError e = takeLastError();
      if (e.code == VIR_ERR_NO_DOMAIN) return Status::ok();
      return toStatus(e, context);
    }
    return Status::ok();
  }

  Result<std::vector<DomainStatus>> listManaged() override {
    const std::string context = "listing domains on " + singleQuoted(uri_);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    virDomainPtr* raw = nullptr;
    int n = virConnectListAllDomains(
        conn_.get(), &raw, VIR_CONNECT_LIST_DOMAINS_ACTIVE | VIR_CONNECT_LIST_DOMAINS_INACTIVE);
    if (n < 0) return lastError(context);
    std::vector<DomainPtr> doms;
    doms.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) doms.emplace_back(raw[i]);
    std::free(raw);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's array

    std::vector<DomainStatus> out;
    for (const DomainPtr& dom : doms) {
      auto meta = readMeta(dom.get());
      if (!meta.isOk()) {
        if (meta.status().code() == Code::kNotFound) continue;  // undefined meanwhile
        if (meta.status().code() == Code::kFailedPrecondition) {
          log::warn("{}: {}", context, meta.status().message());  // broken metadata
          continue;
        }
        return meta.status().withContext(context);
      }
      if (!meta.value()) continue;  // not ours
      auto state = stateOf(dom.get(), context);
      if (!state.isOk()) {
        if (state.status().code() == Code::kNotFound) continue;
        return state.status();
      }
      out.push_back(DomainStatus{std::move(*meta.value()), *state});
    }
    std::sort(out.begin(), out.end(),
              [](const DomainStatus& a, const DomainStatus& b) { return a.meta.vm < b.meta.vm; });
    return out;
  }

  Result<DomainStatus> domainState(const std::string& vm) override {
    const std::string context = "reading state of vm " + singleQuoted(vm);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    auto found = lookupManagedLocked(vm, context);
    if (!found.isOk()) return found.status();
    auto state = stateOf(found->dom.get(), context);
    if (!state.isOk()) return state.status();
    return DomainStatus{found->meta, *state};
  }

  Status subscribe(DomainEventHandler handler) override {
    std::lock_guard<std::mutex> lock(sink_->mu);
    sink_->handler = std::move(handler);
    return Status::ok();
  }

  Status migrate(const std::string& vm, const std::string& dest_uri,
                 const MigrateOptions& options) override {
    const std::string context = "migrating vm " + singleQuoted(vm) + " to " + singleQuoted(dest_uri);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    auto found = lookupManagedLocked(vm, context);
    if (!found.isOk()) return found.status();
    unsigned int flags =
        VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE;
    if (options.live) flags |= VIR_MIGRATE_LIVE;
    if (options.unsafe) flags |= VIR_MIGRATE_UNSAFE;
    if (options.copy_storage) flags |= VIR_MIGRATE_NON_SHARED_INC;
    TypedParams params;
    if (!options.migrate_uri.empty() &&
        !params.addString(VIR_MIGRATE_PARAM_URI, options.migrate_uri)) {
      return lastError(context);
    }
    if (options.dest_meta.epoch > 0) {
      TW_RETURN_IF_ERROR(
          addDestXmlLocked(found->dom.get(), vm, options.dest_meta, params, context));
    }
    if (virDomainMigrateToURI3(found->dom.get(), dest_uri.c_str(), params.get(),
                               static_cast<unsigned int>(params.count()), flags) < 0) {
      return lastError(context);
    }
    return Status::ok();
  }

  Status addPortForward(const std::string& vm, const PortForward& forward) override {
    const std::string rule = "tcp:" + forward.address + ":" + std::to_string(forward.host_port) +
                             "-:" + std::to_string(forward.guest_port);
    const std::string context = "forwarding " + rule + " to vm " + singleQuoted(vm);
    if (hasForbiddenChars(forward.address) ||
        forward.address.find_first_of(" :,") != std::string::npos || forward.host_port < 1 ||
        forward.host_port > 65535 || forward.guest_port < 1 || forward.guest_port > 65535) {
      return invalidArgument(context + ": bad address or port");
    }
    Result<std::string> out = monitorCommand(vm, "hostfwd_add " + std::string(kUserNetdev) + " " + rule,
                                             context);
    if (!out.isOk()) return out.status();
    // HMP answers an empty string on success, a message on failure ("could not
    // set up host forwarding rule ...").
    std::string text = trimmed(*out);
    if (!text.empty()) return failedPrecondition(context + ": " + text);
    return Status::ok();
  }

  Result<std::vector<PortForward>> portForwards(const std::string& vm) override {
    const std::string context = "listing the port forwards of vm " + singleQuoted(vm);
    Result<std::string> out = monitorCommand(vm, "info usernet", context);
    if (!out.isOk()) return out.status();
    return parseUsernetForwards(*out);
  }

  Result<std::string> storagePoolDir(const std::string& pool) override {
    const std::string context = "storage pool " + singleQuoted(pool) + " on " + singleQuoted(uri_);
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    std::unique_ptr<virStoragePool, StoragePoolFreer> p(
        virStoragePoolLookupByName(conn_.get(), pool.c_str()));
    if (p == nullptr) {
      LibvirtError e = takeLastError();
      if (e.code == VIR_ERR_NO_STORAGE_POOL)
        return notFound(context + ": no such pool (define it on every host: virsh pool-define)");
      return toStatus(e, context);
    }
    const int active = virStoragePoolIsActive(p.get());
    if (active < 0) return lastError(context);
    if (active == 0) return failedPrecondition(context + ": the pool is not active (virsh pool-start)");
    std::unique_ptr<char, FreeDeleter> xml(virStoragePoolGetXMLDesc(p.get(), 0));
    if (xml == nullptr) return lastError(context);
    return poolTargetDir(xml.get(), context);
  }

  // The backup API waits for QEMU's job by polling job info every 50 ms: the
  // one place where this file sleeps (a job-completed event would need the
  // event thread to hand it over; a backup blocks its caller anyway, like
  // migrate()). REQUIRES: called off the agent's loop (it holds mu_ for the copy).
  Result<DiskBackup> backupDisk(const std::string& vm, const std::string& target_path,
                                bool snapshot_commit_only) override {
    const std::string context = "backing up vm " + singleQuoted(vm) + " to " + singleQuoted(target_path);
    if (target_path.empty() || target_path[0] != '/' || hasForbiddenChars(target_path))
      return invalidArgument(context + ": the target must be an absolute path");
    struct stat st{};
    if (::stat(target_path.c_str(), &st) == 0) return failedPrecondition(context + ": target exists");
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    auto found = lookupManagedLocked(vm, context);
    if (!found.isOk()) return found.status();
    virDomainPtr dom = found->dom.get();
    const int active = virDomainIsActive(dom);
    if (active < 0) return lastError(context);
    if (active == 0) return failedPrecondition(context + ": domain is not running");
    std::unique_ptr<char, FreeDeleter> xml(virDomainGetXMLDesc(dom, 0));
    if (!xml) return lastError(context + ": reading the domain XML");
    Result<std::pair<std::string, std::string>> disk = firstDisk(xml.get(), context);
    if (!disk.isOk()) return disk.status();
    const auto& [dev, source] = *disk;
    DiskBackup out;
    Status done = Status::ok();
    if (!snapshot_commit_only) {
      out.method = "backup-api";
      done = pushBackupLocked(dom, dev, target_path, context);
      if (done.code() == Code::kUnimplemented) {
        log::warn("{}: the backup API is refused ({}); using a snapshot and a block commit",
                  context, done.message());
        snapshot_commit_only = true;
      }
    }
    if (snapshot_commit_only) {
      out.method = "snapshot-commit";
      done = snapshotCommitLocked(dom, dev, source, target_path, context);
    }
    if (!done.isOk()) {
      ::unlink(target_path.c_str());
      return done;
    }
    if (::stat(target_path.c_str(), &st) != 0)
      return internalError(context + ": the job ended without writing the target");
    out.bytes = static_cast<int64_t>(st.st_size);
    return out;
  }

 private:
  static constexpr int kJobPollMs = 50;
  static constexpr int kJobTimeoutMs = 6 * 3600 * 1000;

  // The target dev and source file of the domain's first file disk.
  static Result<std::pair<std::string, std::string>> firstDisk(const std::string& xml,
                                                               const std::string& context) {
    const size_t at = xml.find("<disk type='file' device='disk'");
    const size_t end = at == std::string::npos ? at : xml.find("</disk>", at);
    if (end == std::string::npos) return failedPrecondition(context + ": the domain has no file disk");
    const std::string d = xml.substr(at, end - at);
    auto attr = [&d](const std::string& element, const std::string& name) -> std::string {
      const size_t e = d.find("<" + element + " ");
      if (e == std::string::npos) return "";
      const size_t a = d.find(name + "='", e);
      const size_t close = d.find('>', e);
      if (a == std::string::npos || a > close) return "";
      const size_t q = d.find('\'', a + name.size() + 2);
      return xmlUnescape(d.substr(a + name.size() + 2, q - a - name.size() - 2));
    };
    std::string dev = attr("target", "dev");
    std::string source = attr("source", "file");
    if (dev.empty() || source.empty())
      return failedPrecondition(context + ": the domain's disk has no target dev or source file");
    return std::make_pair(dev, source);
  }

  static bool isBackupRefused(const LibvirtError& e) {
    return e.code == VIR_ERR_NO_SUPPORT || e.code == VIR_ERR_OPERATION_UNSUPPORTED;
  }

  // virDomainBackupBegin in push mode, then waits for the job's end and reads
  // its completed stats. kUnimplemented when libvirt or QEMU refuse the API.
  static Status pushBackupLocked(virDomainPtr dom, const std::string& dev, const std::string& target,
                                 const std::string& context) {
    const std::string backup_xml =
        "<domainbackup mode='push'><disks><disk name='" + xmlEscape(dev) +
        "' backup='yes' type='file'><driver type='qcow2'/><target file='" + xmlEscape(target) +
        "'/></disk></disks></domainbackup>";
    if (virDomainBackupBegin(dom, backup_xml.c_str(), nullptr, 0) < 0) {
      LibvirtError e = takeLastError();
      if (isBackupRefused(e)) return unimplemented(context + ": " + e.message);
      return toStatus(e, context);
    }
    for (int waited = 0;; waited += kJobPollMs) {
      virDomainJobInfo info{};
      if (virDomainGetJobInfo(dom, &info) < 0) return lastError(context + ": waiting for the job");
      if (info.type == VIR_DOMAIN_JOB_NONE) break;
      if (waited > kJobTimeoutMs) {
        virDomainAbortJob(dom);
        return unavailable(context + ": the backup job did not end in time (aborted)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kJobPollMs));
    }
    int type = VIR_DOMAIN_JOB_NONE;
    virTypedParameterPtr params = nullptr;
    int nparams = 0;
    if (virDomainGetJobStats(dom, &type, &params, &nparams, VIR_DOMAIN_JOB_STATS_COMPLETED) < 0)
      return lastError(context + ": reading the job's result");
    virTypedParamsFree(params, nparams);
    if (type != VIR_DOMAIN_JOB_COMPLETED)
      return internalError(context + ": the backup job ended with type " + std::to_string(type) +
                           " (failed or cancelled)");
    return Status::ok();
  }

  // The fallback: an external disk-only snapshot makes `source` quiet (QEMU
  // writes to a new overlay), qemu-img copies it, and a shallow active block
  // commit merges the overlay back and pivots to `source` again.
  static Status snapshotCommitLocked(virDomainPtr dom, const std::string& dev,
                                     const std::string& source, const std::string& target,
                                     const std::string& context) {
    const std::string overlay = source + ".tw-backup-overlay";
    ::unlink(overlay.c_str());
    const std::string snap_xml = "<domainsnapshot><disks><disk name='" + xmlEscape(dev) +
                                 "' snapshot='external'><source file='" + xmlEscape(overlay) +
                                 "'/></disk></disks></domainsnapshot>";
    std::unique_ptr<virDomainSnapshot, decltype(&virDomainSnapshotFree)> snap(
        virDomainSnapshotCreateXML(dom, snap_xml.c_str(),
                                   VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY |
                                       VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA |
                                       VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC),
        &virDomainSnapshotFree);
    if (!snap) return lastError(context + ": external snapshot");
    Status copied = runQemuImg({"qemu-img", "convert", "-U", "-O", "qcow2", source, target});
    Status committed = commitBackLocked(dom, dev, context);
    if (committed.isOk()) ::unlink(overlay.c_str());
    if (!copied.isOk()) return copied.withContext(context);
    return committed;
  }

  static Status commitBackLocked(virDomainPtr dom, const std::string& dev,
                                 const std::string& context) {
    if (virDomainBlockCommit(dom, dev.c_str(), nullptr, nullptr, 0,
                             VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | VIR_DOMAIN_BLOCK_COMMIT_SHALLOW) < 0)
      return lastError(context + ": block commit (the VM keeps writing to the overlay)");
    for (int waited = 0;; waited += kJobPollMs) {
      virDomainBlockJobInfo info{};
      const int r = virDomainGetBlockJobInfo(dom, dev.c_str(), &info, 0);
      if (r < 0) return lastError(context + ": waiting for the block commit");
      if (r == 0) return internalError(context + ": the block commit ended before its pivot");
      if (info.end > 0 && info.cur == info.end) break;
      if (waited > kJobTimeoutMs) return unavailable(context + ": the block commit did not get ready");
      std::this_thread::sleep_for(std::chrono::milliseconds(kJobPollMs));
    }
    if (virDomainBlockJobAbort(dom, dev.c_str(), VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) < 0)
      return lastError(context + ": pivot after the block commit");
    return Status::ok();
  }

  // Runs qemu-img (no shell) and waits for it.
  static Status runQemuImg(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0)
      return internalError("running qemu-img: cannot start it");
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return internalError("qemu-img convert failed (status " + std::to_string(status) + ")");
    return Status::ok();
  }

  // The netdev of the first <interface type='user'> (see buildDomainXml).
  static constexpr const char* kUserNetdev = "hostnet0";

  static std::string trimmed(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
  }

  // An HMP command on a running managed domain: its text answer.
  Result<std::string> monitorCommand(const std::string& vm, const std::string& command,
                                     const std::string& context) {
    std::lock_guard<std::mutex> lock(mu_);
    TW_RETURN_IF_ERROR(ensureConnectedLocked());
    if (default_type_ == "test") {
      return unimplemented(context + ": the test driver has no QEMU monitor");
    }
    auto found = lookupManagedLocked(vm, context);
    if (!found.isOk()) return found.status();
    auto running = isRunning(found->dom.get(), context);
    if (!running.isOk()) return running.status();
    if (!*running) return failedPrecondition(context + ": domain is not running");
    char* raw = nullptr;
    if (virDomainQemuMonitorCommand(found->dom.get(), command.c_str(), &raw,
                                    VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP) < 0) {
      return lastError(context);
    }
    CString answer(raw);
    return std::string(answer ? answer.get() : "");
  }

  struct Managed {
    DomainPtr dom;
    DomainMeta meta;
  };

  // The domain arrives with `meta` (a migrated VM carries its new epoch):
  // VIR_MIGRATE_PARAM_DEST_XML is its live XML with our metadata replaced, and,
  // for a persistent domain, VIR_MIGRATE_PARAM_PERSIST_XML its persistent XML
  // likewise (without it PERSIST_DEST copies the source's definition, old
  // epoch included, and readMeta() reads the persistent definition).
  static Status addDestXmlLocked(virDomainPtr dom, const std::string& vm, DomainMeta meta,
                                 TypedParams& params, const std::string& context) {
    if (meta.vm.empty()) meta.vm = vm;
    if (meta.vm != vm) {
      return invalidArgument(context + ": the destination metadata names vm " + singleQuoted(meta.vm));
    }
    for (const std::string* field : {&meta.vm, &meta.tier, &meta.spec_digest}) {
      if (hasForbiddenChars(*field)) {
        return invalidArgument(context +
                               ": a destination metadata value holds a control character");
      }
    }
    const auto rewritten = [&](unsigned int flags, const char* param) -> Status {
      CString xml(virDomainGetXMLDesc(dom, flags));
      if (!xml) return lastError(context + ": reading the domain XML");
      Result<std::string> replaced = replaceMetadataElement(xml.get(), meta);
      if (!replaced.isOk()) return replaced.status().withContext(context);
      if (!params.addString(param, *replaced)) return lastError(context);
      return Status::ok();
    };
    TW_RETURN_IF_ERROR(rewritten(VIR_DOMAIN_XML_MIGRATABLE, VIR_MIGRATE_PARAM_DEST_XML));
    const int persistent = virDomainIsPersistent(dom);
    if (persistent < 0) return lastError(context);
    if (persistent == 1) {
      TW_RETURN_IF_ERROR(rewritten(VIR_DOMAIN_XML_MIGRATABLE | VIR_DOMAIN_XML_INACTIVE,
                                   VIR_MIGRATE_PARAM_PERSIST_XML));
    }
    return Status::ok();
  }

  static Status unmanaged(const std::string& context, const std::string& vm) {
    return failedPrecondition(context + ": domain " + singleQuoted(vm) +
                              " exists and is not managed by tierwarden");
  }

  static bool isUnsupported(const LibvirtError& e) {
    return e.code == VIR_ERR_INVALID_ARG || e.code == VIR_ERR_NO_SUPPORT ||
           e.code == VIR_ERR_ARGUMENT_UNSUPPORTED;
  }

  // Starts the managed domain `vm` through `conn`; ok when it runs already.
  static Status startOn(virConnectPtr conn, const std::string& vm) {
    const std::string context = "starting vm " + singleQuoted(vm);
    auto found = lookupManaged(conn, vm, context);
    if (!found.isOk()) return found.status();
    virDomainPtr dom = found->dom.get();
    auto active = isRunning(dom, context);
    if (!active.isOk()) return active.status();
    if (*active) return Status::ok();  // idempotent: it runs already
    if (virDomainCreate(dom) < 0) return lastError(context);
    return Status::ok();
  }

  // A beginStarts() worker: its own connection, then the batch's starts
  // until none is left. Touches only the batch (never `this`).
  static void runStarts(const std::shared_ptr<StartBatch>& batch) {
    ConnectPtr conn(virConnectOpen(batch->uri().c_str()));
    Status open_failed;
    if (!conn) {
      open_failed = lastError("opening a connection of its own to " + singleQuoted(batch->uri()));
    }
    for (size_t i = batch->claim(); i != std::string::npos; i = batch->claim()) {
      batch->finish(i, conn ? startOn(conn.get(), batch->vm(i))
                            : open_failed.withContext("starting vm " + singleQuoted(batch->vm(i))));
    }
  }

  // Whether libvirt runs a process for the domain (also a crashed domain
  // kept for inspection, which our state calls crashed but destroy must kill).
  static Result<bool> isRunning(virDomainPtr dom, const std::string& context) {
    int active = virDomainIsActive(dom);
    if (active < 0) return lastError(context);
    return active == 1;
  }

  static Result<DomainState> stateOf(virDomainPtr dom, const std::string& context) {
    int state = 0;
    int reason = 0;
    if (virDomainGetState(dom, &state, &reason, 0) < 0) return lastError(context);
    return toDomainState(state, reason);
  }

  // The managed domain of that name: kNotFound when absent,
  // kFailedPrecondition when it is not ours. REQUIRES: mu_ held, connected.
  Result<Managed> lookupManagedLocked(const std::string& vm, const std::string& context) {
    return lookupManaged(conn_.get(), vm, context);
  }

  static Result<Managed> lookupManaged(virConnectPtr conn, const std::string& vm,
                                       const std::string& context) {
    DomainPtr dom(virDomainLookupByName(conn, vm.c_str()));
    if (!dom) return lastError(context);
    auto meta = readMeta(dom.get());
    if (!meta.isOk()) return meta.status().withContext(context);
    if (!meta.value()) return unmanaged(context, vm);
    return Managed{std::move(dom), std::move(*meta.value())};
  }

  // Ok when the connection is usable; a dead one is reopened once (events
  // registered again). REQUIRES: mu_ held.
  Status ensureConnectedLocked() {
    if (conn_ && !close_flag_.closed.load() && virConnectIsAlive(conn_.get()) == 1) {
      return Status::ok();
    }
    if (conn_) log::warn("libvirt connection to '{}' lost; reconnecting", uri_);
    disconnectLocked();
    Status s = connectLocked();
    if (!s.isOk()) return unavailable(s.message());
    log::info("reconnected to libvirt at '{}'", uri_);
    return Status::ok();
  }

  // REQUIRES: mu_ held, not connected.
  Status connectLocked() {
    const std::string context = "connecting to libvirt at " + singleQuoted(uri_);
    ConnectPtr conn(virConnectOpen(uri_.c_str()));
    if (!conn) {
      LibvirtError e = takeLastError();
      Code code = codeFor(e);
      if (code != Code::kInvalidArgument && code != Code::kPermissionDenied) {
        code = Code::kUnavailable;
      }
      return Status(code, context + ": " + e.message);
    }
    if (virConnectSetKeepAlive(conn.get(), 1, 2) < 0) {
      // The test driver has no keepalive; a local driver needs none.
      log::debug("{}: no keepalive: {}", context, takeLastError().message);
    }
    const char* type = virConnectGetType(conn.get());
    if (type == nullptr) return lastError(context);
    std::string lower(type);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    default_type_ = lower == "test" ? "test" : "qemu";

    auto* sink_ref = new SinkRef(sink_);  // owned by libvirt from here: freeSinkRef
    int id = virConnectDomainEventRegisterAny(conn.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                              lifecycleCallback(), sink_ref, freeSinkRef);
    if (id < 0) {
      // Not freed here: whether libvirt already called freeSinkRef on this
      // path is not documented; a small leak beats a double free.
      return lastError(context + ": registering lifecycle events");
    }
    close_flag_.closed.store(false);
    if (virConnectRegisterCloseCallback(conn.get(), onConnectionClosed, &close_flag_, nullptr) <
        0) {
      log::debug("{}: no close callback: {}", context, takeLastError().message);
    } else {
      close_registered_ = true;
    }
    lifecycle_callback_ = id;
    conn_ = std::move(conn);
    return Status::ok();
  }

  // REQUIRES: mu_ held.
  void disconnectLocked() {
    if (!conn_) return;
    if (lifecycle_callback_ >= 0 &&
        virConnectDomainEventDeregisterAny(conn_.get(), lifecycle_callback_) < 0) {
      log::debug("deregistering events on '{}': {}", uri_, takeLastError().message);
    }
    // After this returns, no close callback runs with &close_flag_.
    if (close_registered_ &&
        virConnectUnregisterCloseCallback(conn_.get(), onConnectionClosed) < 0) {
      log::debug("unregistering close callback on '{}': {}", uri_, takeLastError().message);
    }
    lifecycle_callback_ = -1;
    close_registered_ = false;
    conn_.reset();
    virResetLastError();
  }

  static virConnectDomainEventGenericCallback lifecycleCallback() {
    // libvirt's documented VIR_DOMAIN_EVENT_CALLBACK cast, through void(*)()
    // so that -Wcast-function-type accepts it.
    return reinterpret_cast<virConnectDomainEventGenericCallback>(
        reinterpret_cast<void (*)()>(&onLifecycleEvent));
  }

  static constexpr size_t kParallelStarts = 4;

  const std::string uri_;
  const SinkRef sink_ = std::make_shared<EventSink>();
  CloseFlag close_flag_;  // outlives every close callback registration

  std::mutex mu_;  // one call at a time on the connection; guards what follows
  ConnectPtr conn_;
  int lifecycle_callback_ = -1;
  bool close_registered_ = false;
  std::string default_type_ = "qemu";  // domain type when the spec names none
};

}  // namespace

Result<std::unique_ptr<Hypervisor>> connectLibvirt(const std::string& uri) {
  TW_RETURN_IF_ERROR(initLibvirtOnce());
  auto hv = std::make_unique<LibvirtHypervisor>(uri);
  TW_RETURN_IF_ERROR(hv->open());
  log::info("connected to libvirt at '{}'", uri);
  return std::unique_ptr<Hypervisor>(std::move(hv));
}

}  // namespace tw
