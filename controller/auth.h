// Who may call what on the controller's API (docs/api.md, "Auth"; rotation:
// docs/auth.md): the three roles, the decision for a request, and the
// credentials — held as SHA-256 hashes, compared in constant time, kept in the
// state dir and reread when a file there changes.
//
// Roles:
//   operator  <state-dir>/token          every read and every change
//   viewer    <state-dir>/viewer-token   reads and the event stream only
//   agent     <state-dir>/host-tokens    one token per host ("NAME SHA256-HEX"
//                                        lines, written by `issue-host NAME`):
//                                        the agent protocol of that host only
// Agents check each other (peer checks, docs/fencing.md) with one more
// secret, <state-dir>/peer-token, which the controller accepts for nothing.
#pragma once

#include <sys/stat.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tw/status.h"

namespace tw {

enum class Role { kOperator, kViewer, kAgent };
const char* roleName(Role role);

// Whom a token authenticates.
struct Principal {
  Role role = Role::kViewer;
  std::string host;  // kAgent: the one host it speaks for
};

// What a route needs.
enum class Access {
  kRead,     // cluster state, events, metrics, the event stream: operator or
             // viewer; anyone when the controller runs with --public-read
  kOperate,  // every change (and POST /api/v1/auth/check): operator only
  kAgent,    // the agent protocol of one host: that host's token only
};

// The decision for one request. `presented`: a bearer token was sent; `who`:
// whom it authenticates (nullopt: nobody). `host`: for kAgent, the host the
// request speaks for (its path, its body). OK, or kPermissionDenied (401: no
// token, or an unknown one) or kForbidden (403: a valid token of the wrong
// role or host). A token that was sent but matches nothing is a 401 even
// under public_read: a wrong credential is never silently ignored.
Status authorize(const std::optional<Principal>& who, bool presented, Access need,
                 std::string_view host, bool public_read);

// SHA-256 of `data` as 64 lower-case hex digits.
std::string sha256Hex(std::string_view data);
// 32 bytes of the OS's random generator as 64 hex digits. Errors: kUnavailable.
Result<std::string> newToken();
// A host name as policies declare it: [a-z][a-z0-9-]{0,62}.
bool validHostName(std::string_view name);

// Checks presented tokens. Thread-safe.
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // Whom `token` authenticates; nullopt for nobody (always for ""). Every
  // credential is compared (hash against hash, constant time), whatever
  // matches first.
  virtual std::optional<Principal> authenticate(std::string_view token) = 0;
};

// Credentials in memory, as hashes.
class CredentialSet {
 public:
  void add(const Principal& who, std::string_view token) { addHash(who, sha256Hex(token)); }
  void addHash(const Principal& who, std::string hash_hex);
  std::optional<Principal> find(std::string_view token) const {
    return token.empty() ? std::nullopt : findHash(sha256Hex(token));
  }
  // By the token's SHA-256 (sha256Hex): one hash for several sets.
  std::optional<Principal> findHash(const std::string& presented) const;
  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<std::string, Principal>> entries_;  // hash hex, whom
  // hash hex -> the first entry with it: one lookup per request, not one
  // comparison per host (1,000 hosts made it 8 % of the controller's CPU).
  std::unordered_map<std::string, size_t> by_hash_;
};

// A fixed CredentialSet (tests, and a controller given --token-file only).
class StaticAuthenticator final : public Authenticator {
 public:
  explicit StaticAuthenticator(CredentialSet set) : set_(std::move(set)) {}
  std::optional<Principal> authenticate(std::string_view token) override { return set_.find(token); }

 private:
  const CredentialSet set_;
};

// Where the credential files are (auth.h's header comment).
struct CredentialPaths {
  explicit CredentialPaths(const std::string& state_dir, std::string operator_token_file = "");
  std::string dir;
  std::string operator_token;  // --token-file, default <dir>/token
  std::string viewer_token;    // <dir>/viewer-token
  std::string peer_token;      // <dir>/peer-token
  std::string host_tokens;     // <dir>/host-tokens
  std::string host_tokens_lock;  // <dir>/host-tokens.lock (issue-host, revoke-host)
  std::string bundles;         // <dir>/hosts: issue-host's default output
};

// The credentials of a state dir. Each file is reread when it changes (its
// inode, size or mtime): `rotate-token` and `issue-host` take effect in a
// running controller at the next request. A file that has become unreadable
// or malformed keeps the credentials it held before (logged once).
//
// Whether a file changed is asked of inotify (the directories of the three
// files, for entries created, renamed, deleted, closed after writing or with
// new attributes): a request reads the inotify descriptor (one non-blocking
// read) and stats the files only when it names one of them, when events were
// lost, or when a second has passed since the last look. The kernel queues
// the event before the writer's rename() or close() returns, so a rotated or
// revoked token is still refused at the very next request. Stating the three
// files on every request was ~5 % of the controller's CPU at 1,000 hosts
// (issue #16). Without inotify (no descriptor left) every request stats them.
class FileCredentials final : public Authenticator {
 public:
  explicit FileCredentials(CredentialPaths paths) : paths_(std::move(paths)) {}
  ~FileCredentials() override;
  FileCredentials(const FileCredentials&) = delete;
  FileCredentials& operator=(const FileCredentials&) = delete;
  // Reads every file. Errors: kInvalidArgument (file:line of a bad line, a
  // token file without a usable token), kUnavailable (I/O).
  Status load();
  std::optional<Principal> authenticate(std::string_view token) override;
  // How many hosts hold a token.
  size_t hostCount();

 private:
  struct Seen {
    bool exists = false;
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{};
  };
  enum Slot { kOperatorSlot, kViewerSlot, kHostsSlot, kSlots };
  Status reload(Slot slot);  // REQUIRES: mu_ held
  void refresh();                          // REQUIRES: mu_ held
  // False when inotify says none of the files can have changed (and the
  // last look is less than a second old). REQUIRES: mu_ held.
  bool mayHaveChanged();
  void watch();  // REQUIRES: mu_ held

  const CredentialPaths paths_;
  std::mutex mu_;  // guards everything below
  Seen seen_[kSlots];
  CredentialSet sets_[kSlots];
  int inotify_fd_ = -1;
  std::string watched_names_[kSlots];  // the files' names in their directories
  int64_t last_look_ns_ = 0;  // steady clock
};

// Reads a token file: its first line, without trailing spaces or CR.
// Errors: kNotFound (no file), kInvalidArgument (fewer than 16 bytes).
Result<std::string> loadTokenFile(const std::string& path);
// The token of `path`, written with a new random token (mode 0600) when the
// file does not exist. Errors as loadTokenFile(), kUnavailable.
Result<std::string> loadOrCreateTokenFile(const std::string& path);
// Replaces the token of `path` with a new one (atomically, mode 0600) and
// returns it.
Result<std::string> rotateTokenFile(const std::string& path);

// "NAME SHA256-HEX" lines; '#' comments and blank lines skipped. Errors:
// kInvalidArgument "FILE:LINE: ..." (a bad name or hash, a name twice).
Result<std::map<std::string, std::string>> parseHostTokens(const std::string& text,
                                                           const std::string& file);

// `tierwarden-controller issue-host NAME`: a new token for host NAME (its old
// one, if any, stops working), its hash into host-tokens, and the host's
// bundle in `out_dir` (default <dir>/hosts/NAME): `token` (0600) and
// `peer-token` (0600, a copy of the cluster's peer token, created when
// missing). Runs beside a running controller (host-tokens.lock serializes
// issue-host and revoke-host). Errors: kInvalidArgument (bad name), I/O.
struct IssuedHost {
  std::string token;
  std::string out_dir;
  std::string token_file;
  std::string peer_token_file;
};
Result<IssuedHost> issueHostToken(const CredentialPaths& paths, const std::string& name,
                                  std::string out_dir);
// `tierwarden-controller revoke-host NAME`: removes the host's token.
// Errors: kNotFound when it holds none.
Status revokeHostToken(const CredentialPaths& paths, const std::string& name);

}  // namespace tw
