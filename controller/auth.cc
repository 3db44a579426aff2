#include "controller/auth.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "controller/state_guard.h"
#include "tw/log.h"
#include "tw/text.h"

namespace tw {

namespace {

constexpr size_t kMinTokenBytes = 16;

std::string hexOf(const unsigned char* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[data[i] >> 4];
    out += kHex[data[i] & 15];
  }
  return out;
}

bool isHash(std::string_view s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

Result<std::string> readWhole(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && !ec) return notFound("no file '" + path + "'");
  std::ifstream in(path, std::ios::binary);
  if (!in) return unavailable("cannot read '" + path + "': " + std::strerror(errno));
  std::stringstream data;
  data << in.rdbuf();
  return data.str();
}

// Holds an exclusive flock on a lock file until destroyed.
class FileLock {
 public:
  static Result<std::unique_ptr<FileLock>> acquire(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return unavailable("opening '" + path + "': " + std::strerror(errno));
    if (::flock(fd, LOCK_EX) != 0) {
      int err = errno;
      ::close(fd);
      return unavailable("locking '" + path + "': " + std::strerror(err));
    }
    return std::unique_ptr<FileLock>(new FileLock(fd));
  }
  ~FileLock() { ::close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

Status ensureDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return unavailable("cannot create '" + dir + "': " + ec.message());
  ::chmod(dir.c_str(), 0700);
  return Status::ok();
}

std::string hostTokensText(const std::map<std::string, std::string>& hosts) {
  std::string text =
      "# tierwarden host credentials: NAME SHA256-of-token (tierwarden-controller issue-host)\n";
  for (const auto& [name, hash] : hosts) text += name + " " + hash + "\n";
  return text;
}

Result<std::map<std::string, std::string>> readHostTokens(const std::string& path) {
  auto text = readWhole(path);
  if (!text.isOk()) {
    if (text.status().code() == Code::kNotFound) return std::map<std::string, std::string>{};
    return text.status();
  }
  return parseHostTokens(*text, path);
}

}  // namespace

const char* roleName(Role role) {
  switch (role) {
    case Role::kOperator: return "operator";
    case Role::kViewer: return "viewer";
    case Role::kAgent: return "agent";
  }
  return "unknown";
}

Status authorize(const std::optional<Principal>& who, bool presented, Access need,
                 std::string_view host, bool public_read) {
  if (!presented) {
    if (need == Access::kRead && public_read) return Status::ok();
    return permissionDenied("missing Authorization: Bearer <token>");
  }
  if (!who) return permissionDenied("invalid token");
  switch (need) {
    case Access::kRead:
      if (who->role == Role::kOperator || who->role == Role::kViewer) return Status::ok();
      return forbidden("an agent's token may not read the cluster's state (use a viewer or operator token)");
    case Access::kOperate:
      if (who->role == Role::kOperator) return Status::ok();
      return forbidden(std::string("a ") + roleName(who->role) +
                       " token may not change anything (this needs the operator token)");
    case Access::kAgent:
      if (who->role != Role::kAgent) {
        return forbidden(std::string("agent calls need the host's own token (tierwarden-controller "
                                     "issue-host), not a ") +
                         roleName(who->role) + " token");
      }
      if (who->host != host) {
        return forbidden("the token of host '" + who->host + "' may not speak for host " +
                         quoteForMessage(host));
      }
      return Status::ok();
  }
  return forbidden("not allowed");
}

std::string sha256Hex(std::string_view data) {
  // Fetched once: EVP_sha256() makes OpenSSL 3 look the implementation up
  // in its provider store (under a lock) on every digest. Kept to the end.
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &n, sha256 != nullptr ? sha256 : EVP_sha256(), nullptr) != 1) {
    // Cannot happen with OpenSSL's built-in SHA-256; never match anything.
    log::error("SHA-256 failed");
    std::abort();
  }
  return hexOf(digest, n);
}

Result<std::string> newToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return unavailable("no random bytes for a token");
  return hexOf(bytes, sizeof bytes);
}

bool validHostName(std::string_view name) {
  if (name.empty() || name.size() > 63 || name[0] < 'a' || name[0] > 'z') return false;
  return name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string_view::npos;
}

void CredentialSet::addHash(const Principal& who, std::string hash_hex) {
  by_hash_.emplace(hash_hex, entries_.size());
  entries_.emplace_back(std::move(hash_hex), who);
}

std::optional<Principal> CredentialSet::findHash(const std::string& presented) const {
  // Looked up by the token's SHA-256, then compared in constant time. The
  // lookup's timing tells at most how the hash of what was sent relates to
  // the stored hashes, and nobody can steer a hash toward a stored one
  // without the token: it leaks nothing about any token.
  auto it = by_hash_.find(presented);
  if (it == by_hash_.end()) return std::nullopt;
  const auto& [hash, who] = entries_[it->second];
  if (!tokenMatches(presented, hash)) return std::nullopt;
  return who;
}

CredentialPaths::CredentialPaths(const std::string& state_dir, std::string operator_token_file)
    : dir(state_dir),
      operator_token(operator_token_file.empty() ? state_dir + "/token" : std::move(operator_token_file)),
      viewer_token(state_dir + "/viewer-token"),
      peer_token(state_dir + "/peer-token"),
      host_tokens(state_dir + "/host-tokens"),
      host_tokens_lock(state_dir + "/host-tokens.lock"),
      bundles(state_dir + "/hosts") {}

Status FileCredentials::reload(Slot slot) {
  CredentialSet set;
  switch (slot) {
    case kOperatorSlot:
    case kViewerSlot: {
      const std::string& path = slot == kOperatorSlot ? paths_.operator_token : paths_.viewer_token;
      auto token = loadTokenFile(path);
      if (!token.isOk()) {
        // A viewer token is optional: without its file there is none.
        if (slot == kViewerSlot && token.status().code() == Code::kNotFound) break;
        return token.status();
      }
      set.add(Principal{slot == kOperatorSlot ? Role::kOperator : Role::kViewer, ""}, *token);
      break;
    }
    case kHostsSlot: {
      auto hosts = readHostTokens(paths_.host_tokens);
      if (!hosts.isOk()) return hosts.status();
      for (const auto& [name, hash] : *hosts) set.addHash(Principal{Role::kAgent, name}, hash);
      break;
    }
    case kSlots: break;
  }
  sets_[slot] = std::move(set);
  return Status::ok();
}

FileCredentials::~FileCredentials() {
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
}

void FileCredentials::watch() {
  if (inotify_fd_ >= 0) return;
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    log::warn("credentials: no inotify ({}): the credential files are stated at every request",
              std::strerror(errno));
    return;
  }
  // Not IN_MODIFY: the state dir holds the database too, written every tick.
  // A token file is written whole and closed, or renamed into place.
  constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |
                             IN_DELETE_SELF | IN_MOVE_SELF;
  const std::string* files[kSlots] = {&paths_.operator_token, &paths_.viewer_token, &paths_.host_tokens};
  for (int i = 0; i < kSlots; ++i) {
    const std::string* file = files[i];
    watched_names_[i] = std::filesystem::path(*file).filename().string();
    std::string dir = std::filesystem::path(*file).parent_path().string();
    if (dir.empty()) dir = ".";
    if (::inotify_add_watch(inotify_fd_, dir.c_str(), kMask) < 0) {
      log::warn("credentials: cannot watch {} ({}): the credential files are stated at every request", dir,
                std::strerror(errno));
      ::close(inotify_fd_);
      inotify_fd_ = -1;
      return;
    }
  }
}

bool FileCredentials::mayHaveChanged() {
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  // Without inotify, or a second after the last look: look (what is queued
  // is covered by that look).
  bool changed = inotify_fd_ < 0 || now - last_look_ns_ >= 1'000'000'000;
  alignas(inotify_event) char buf[4096];
  for (ssize_t n; inotify_fd_ >= 0 && (n = ::read(inotify_fd_, buf, sizeof buf)) > 0;) {
    for (ssize_t off = 0; off < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      if (e->mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
        changed = true;  // lost events, or a directory went: look
        continue;
      }
      const std::string_view name = e->len > 0 ? std::string_view(e->name) : std::string_view();
      for (const std::string& mine : watched_names_) changed |= name == mine;
    }
  }
  if (changed) last_look_ns_ = now;
  return changed;
}

void FileCredentials::refresh() {
  if (!mayHaveChanged()) return;
  const std::string* files[kSlots] = {&paths_.operator_token, &paths_.viewer_token, &paths_.host_tokens};
  for (int i = 0; i < kSlots; ++i) {
    struct stat st {};
    Seen now;
    if (::stat(files[i]->c_str(), &st) == 0) {
      now.exists = true;
      now.dev = st.st_dev;
      now.ino = st.st_ino;
      now.size = st.st_size;
      now.mtime = st.st_mtim;
    }
    Seen& was = seen_[i];
    if (now.exists == was.exists && now.dev == was.dev && now.ino == was.ino && now.size == was.size &&
        now.mtime.tv_sec == was.mtime.tv_sec && now.mtime.tv_nsec == was.mtime.tv_nsec) {
      continue;
    }
    was = now;
    Status s = reload(static_cast<Slot>(i));
    if (s.isOk()) {
      log::info("credentials: reread {}", *files[i]);
    } else {
      log::error("credentials: {}; keeping the credentials read before", s.toString());
    }
  }
}

Status FileCredentials::load() {
  std::lock_guard<std::mutex> lock(mu_);
  watch();  // before the first look: a change after it is an event
  const std::string* files[kSlots] = {&paths_.operator_token, &paths_.viewer_token, &paths_.host_tokens};
  for (int i = 0; i < kSlots; ++i) {
    struct stat st {};
    Seen now;
    if (::stat(files[i]->c_str(), &st) == 0) {
      now = Seen{true, st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    }
    seen_[i] = now;
    TW_RETURN_IF_ERROR(reload(static_cast<Slot>(i)));
  }
  return Status::ok();
}

std::optional<Principal> FileCredentials::authenticate(std::string_view token) {
  if (token.empty()) return std::nullopt;
  // Hashed once for every set (three hashes per request were most of the
  // cost of authenticating a heartbeat), outside the lock.
  const std::string presented = sha256Hex(token);
  std::lock_guard<std::mutex> lock(mu_);
  refresh();
  std::optional<Principal> found;
  for (const auto& set : sets_) {
    auto who = set.findHash(presented);  // every set is searched
    if (who && !found) found = who;
  }
  return found;
}

size_t FileCredentials::hostCount() {
  std::lock_guard<std::mutex> lock(mu_);
  refresh();
  return sets_[kHostsSlot].size();
}

Result<std::string> loadTokenFile(const std::string& path) {
  auto text = readWhole(path);
  if (!text.isOk()) return text.status();
  std::string token = text->substr(0, text->find('\n'));
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.size() < kMinTokenBytes) {
    return invalidArgument("token file '" + path + "' holds no usable token (at least " +
                           std::to_string(kMinTokenBytes) + " bytes on its first line)");
  }
  return token;
}

Result<std::string> loadOrCreateTokenFile(const std::string& path) {
  auto token = loadTokenFile(path);
  if (token.isOk() || token.status().code() != Code::kNotFound) return token;
  auto fresh = newToken();
  if (!fresh.isOk()) return fresh.status();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return loadTokenFile(path);  // created meanwhile
    return unavailable("cannot create token file '" + path + "': " + std::strerror(errno));
  }
  std::string line = *fresh + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return unavailable("cannot write token file '" + path + "'");
  return *fresh;
}

Result<std::string> rotateTokenFile(const std::string& path) {
  auto fresh = newToken();
  if (!fresh.isOk()) return fresh.status();
  TW_RETURN_IF_ERROR(writeFileAtomically(path, *fresh + "\n"));
  return *fresh;
}

Result<std::map<std::string, std::string>> parseHostTokens(const std::string& text,
                                                           const std::string& file) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto bad = [&](const std::string& why) {
      return Status(Code::kInvalidArgument, why, SourceLocation{file, number, 0});
    };
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    std::istringstream words(line);
    std::string name, hash, extra;
    words >> name >> hash >> extra;
    if (!validHostName(name)) return bad("bad host name " + quoteForMessage(name));
    if (!isHash(hash)) return bad("expected NAME SHA256-HEX (64 lower-case hex digits) for host '" + name + "'");
    if (!extra.empty()) return bad("unexpected " + quoteForMessage(extra) + " after the hash");
    if (!out.emplace(name, hash).second) return bad("host '" + name + "' is listed twice");
  }
  return out;
}

Result<IssuedHost> issueHostToken(const CredentialPaths& paths, const std::string& name,
                                  std::string out_dir) {
  if (!validHostName(name)) {
    return invalidArgument("bad host name " + quoteForMessage(name) +
                           ": a lowercase letter, then up to 62 lowercase letters, digits or '-'");
  }
  TW_RETURN_IF_ERROR(ensureDir(paths.dir));
  auto lock = FileLock::acquire(paths.host_tokens_lock);
  if (!lock.isOk()) return lock.status();
  auto hosts = readHostTokens(paths.host_tokens);
  if (!hosts.isOk()) return hosts.status();
  auto peer = loadOrCreateTokenFile(paths.peer_token);
  if (!peer.isOk()) return peer.status();
  IssuedHost issued;
  auto token = newToken();
  if (!token.isOk()) return token.status();
  issued.token = *token;
  issued.out_dir = out_dir.empty() ? paths.bundles + "/" + name : std::move(out_dir);
  issued.token_file = issued.out_dir + "/token";
  issued.peer_token_file = issued.out_dir + "/peer-token";
  // The bundle first: a host token that is in force is never lost.
  TW_RETURN_IF_ERROR(ensureDir(issued.out_dir));
  TW_RETURN_IF_ERROR(writeFileAtomically(issued.token_file, issued.token + "\n"));
  TW_RETURN_IF_ERROR(writeFileAtomically(issued.peer_token_file, *peer + "\n"));
  (*hosts)[name] = sha256Hex(issued.token);
  TW_RETURN_IF_ERROR(writeFileAtomically(paths.host_tokens, hostTokensText(*hosts)));
  return issued;
}

Status revokeHostToken(const CredentialPaths& paths, const std::string& name) {
  auto lock = FileLock::acquire(paths.host_tokens_lock);
  if (!lock.isOk()) return lock.status();
  auto hosts = readHostTokens(paths.host_tokens);
  if (!hosts.isOk()) return hosts.status();
  if (hosts->erase(name) == 0) {
    return notFound("host " + quoteForMessage(name) + " holds no token in '" + paths.host_tokens + "'");
  }
  return writeFileAtomically(paths.host_tokens, hostTokensText(*hosts));
}

}  // namespace tw
