// The database file's health: the WAL walked as SQLite reads it (a committed
// frame SQLite would drop is damage), quick_check / integrity_check, and
// on them inspectDatabase and rebuildIndexes.
#include "store_sqlite.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

namespace tw::sqlite {

namespace {

// ------------------------------------------------------- the WAL on disk ---
//
// SQLite reads a WAL up to the last commit frame of the longest prefix of
// frames whose salts match the header and whose cumulative checksums hold,
// and ignores the rest without a word. That is right after a crash (an
// unfinished transaction), and wrong after damage: a WAL cut short or
// overwritten in its middle loses committed transactions silently. This walks
// the WAL the way SQLite does (https://www.sqlite.org/fileformat2.html#walformat)
// and tells the two apart.

constexpr uint32_t kWalMagicLe = 0x377f0682;  // checksums over little-endian words
constexpr uint32_t kWalMagicBe = 0x377f0683;
constexpr int64_t kWalHeaderBytes = 32;
constexpr int64_t kWalFrameHeaderBytes = 24;

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t le32(const unsigned char* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | uint32_t{p[0]};
}

// SQLite's WAL checksum over `bytes` (a multiple of 8), continuing from s.
void walChecksum(bool big_endian, const unsigned char* data, size_t bytes, uint32_t s[2]) {
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    uint32_t a = big_endian ? be32(data + i) : le32(data + i);
    uint32_t b = big_endian ? be32(data + i + 4) : le32(data + i + 4);
    s[0] += a + s[1];
    s[1] += b + s[0];
  }
}

Status damaged(const std::string& path, const std::string& what) {
  return failedPrecondition("database " + inQuotes(path) + " is damaged: " + what);
}

// ok when the WAL next to `db_path` is absent, empty, or would be read
// without losing a committed frame.
Status checkWal(const std::string& db_path) {
  const std::string wal_path = db_path + "-wal";
  std::ifstream in(wal_path, std::ios::binary);
  if (!in) return Status::ok();  // no WAL: nothing to lose there
  std::string wal((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return unavailable("reading " + inQuotes(wal_path) + ": I/O error");
  if (wal.empty()) return Status::ok();
  const auto* bytes = reinterpret_cast<const unsigned char*>(wal.data());
  const auto size = static_cast<int64_t>(wal.size());
  if (size < kWalHeaderBytes) {
    return damaged(db_path, "its WAL " + inQuotes(wal_path) + " is cut off inside its header (" +
                                std::to_string(size) + " bytes)");
  }
  const uint32_t magic = be32(bytes);
  const uint32_t page_size = be32(bytes + 8);
  uint32_t s[2] = {0, 0};
  const bool big_endian = magic == kWalMagicBe;
  walChecksum(big_endian, bytes, 24, s);
  const bool header_ok = (magic == kWalMagicLe || magic == kWalMagicBe) && page_size >= 512 &&
                         page_size <= 65536 && (page_size & (page_size - 1)) == 0 &&
                         s[0] == be32(bytes + 24) && s[1] == be32(bytes + 28);
  const int64_t frame_bytes = kWalFrameHeaderBytes + (header_ok ? page_size : 0);
  if (!header_ok) {
    // SQLite would ignore the whole WAL. Only harmless when it holds no frame.
    if (size == kWalHeaderBytes) return Status::ok();
    return damaged(db_path, "the header of its WAL " + inQuotes(wal_path) +
                                " is damaged, so SQLite would ignore the " +
                                std::to_string(size) + " bytes of transactions in it");
  }
  const uint32_t salt1 = be32(bytes + 16);
  const uint32_t salt2 = be32(bytes + 20);
  const int64_t frames = (size - kWalHeaderBytes) / frame_bytes;
  const bool partial_tail = (size - kWalHeaderBytes) % frame_bytes != 0;

  // The valid prefix, as SQLite reads it.
  int64_t valid = 0;
  for (; valid < frames; ++valid) {
    const unsigned char* f = bytes + kWalHeaderBytes + valid * frame_bytes;
    if (be32(f + 8) != salt1 || be32(f + 12) != salt2 || be32(f) == 0) break;
    uint32_t next[2] = {s[0], s[1]};
    walChecksum(big_endian, f, 8, next);
    walChecksum(big_endian, f + kWalFrameHeaderBytes, page_size, next);
    if (next[0] != be32(f + 16) || next[1] != be32(f + 20)) break;
    s[0] = next[0];
    s[1] = next[1];
  }
  // After it: frames of the current WAL generation (its salts) that carry a
  // commit mark are committed transactions SQLite would drop. The first
  // broken frame may be the last, unfinished write of a killed process: it is
  // only damage when more of the current generation follows it.
  int64_t later_commits = 0;
  for (int64_t i = valid + 1; i < frames; ++i) {
    const unsigned char* f = bytes + kWalHeaderBytes + i * frame_bytes;
    if (be32(f + 8) == salt1 && be32(f + 12) == salt2 && be32(f + 4) != 0) ++later_commits;
  }
  const std::string where = "its WAL " + inQuotes(wal_path) + " ";
  if (later_commits > 0) {
    return damaged(db_path, where + "is broken at frame " + std::to_string(valid + 1) + " of " +
                                std::to_string(frames) + " and SQLite would silently drop " +
                                std::to_string(later_commits) + " committed transactions after it");
  }
  if (partial_tail && valid == frames) {
    // Every whole frame is fine but the file ends inside a frame: SQLite writes
    // whole frames, so the file was cut (or a write of a killed process was
    // torn). Without the rest we cannot know what was lost: refuse.
    return damaged(db_path, where + "ends inside a frame (" + std::to_string(size) +
                                " bytes is not a whole number of " +
                                std::to_string(frame_bytes) + "-byte frames): it was cut short");
  }
  return Status::ok();
}

struct CheckProblem {
  std::string text;         // one line, "" = ok
  bool index_only = false;  // only index entries out of step with their tables
};

// `pragma` is "quick_check" or "integrity_check" (our constants only).
Result<CheckProblem> firstCheckProblem(sqlite3* db, const std::string& pragma) {
  Result<Statement> stmt = query(db, "PRAGMA " + pragma);
  if (!stmt.isOk()) return stmt.status();
  Result<bool> row = stmt->step();
  if (!row.isOk()) return row.status();
  if (!*row) return CheckProblem{pragma + " returned nothing"};
  std::string first = stmt->textAt(0);
  if (first == "ok") return CheckProblem{};
  // Only index entries that do not match their rows: the tables are intact,
  // REINDEX rebuilds the indexes from them.
  bool index_only = true;
  while (true) {  // one row per problem (up to 100)
    Result<bool> next = stmt->step();
    if (!next.isOk() || !*next) break;
    first += "\n" + stmt->textAt(0);
  }
  {
    size_t start = 0;
    while (start < first.size()) {
      size_t end = first.find('\n', start);
      std::string line = first.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!line.empty() && line.rfind("***", 0) != 0 &&
          line.find("missing from index") == std::string::npos &&
          line.find("wrong # of entries in index") == std::string::npos) {
        index_only = false;
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  // One line: SQLite puts several problems in one row, separated by newlines,
  // after a "*** in database main ***" line. Keep the first three.
  std::string out;
  int kept = 0;
  size_t start = 0;
  while (start <= first.size() && kept < 3) {
    size_t end = first.find('\n', start);
    std::string line = first.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!line.empty() && line.rfind("***", 0) != 0) {
      out += (out.empty() ? "" : "; ") + line;
      ++kept;
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return CheckProblem{out.empty() ? pragma + " failed" : out, index_only};
}

// "<pragma>: ..." when the database is damaged, "" when it is fine.
// SQLITE_CORRUPT / SQLITE_NOTADB on the way are damage too.
Result<CheckProblem> checkDb(sqlite3* db, const std::string& pragma) {
  Result<CheckProblem> problem = firstCheckProblem(db, pragma);
  if (problem.isOk()) {
    if (!problem->text.empty()) problem->text = pragma + ": " + problem->text;
    return problem;
  }
  const std::string message = problem.status().message();
  int rc = sqlite3_errcode(db) & 0xff;
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) return CheckProblem{pragma + ": " + message};
  return problem.status();
}

}  // namespace

Result<std::string> quickCheck(sqlite3* db) {
  Result<CheckProblem> problem = checkDb(db, "quick_check");
  if (!problem.isOk()) return problem.status();
  return problem->text;
}

}  // namespace tw::sqlite

namespace tw {

using sqlite::checkDb;
using sqlite::CheckProblem;
using sqlite::checkWal;
using sqlite::damaged;
using sqlite::DbPtr;
using sqlite::execScript;
using sqlite::inQuotes;
using sqlite::openHandle;
using sqlite::query;
using sqlite::readUserVersion;
using sqlite::Statement;

Result<DatabaseFacts> inspectDatabase(const std::string& path) {
  DatabaseFacts facts;
  if (path.empty() || path == ":memory:") return invalidArgument("inspectDatabase needs a file");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return unavailable("stat of " + inQuotes(path) + ": " + std::strerror(errno));
    struct stat wal_st {};
    if (::stat((path + "-wal").c_str(), &wal_st) == 0 && wal_st.st_size > 0) {
      return damaged(path, "the file is missing but its WAL '" + path + "-wal' exists");
    }
    return facts;  // exists = false
  }
  facts.exists = true;
  facts.file_bytes = static_cast<int64_t>(st.st_size);
  struct stat wal_st {};
  if (facts.file_bytes == 0 && ::stat((path + "-wal").c_str(), &wal_st) == 0 && wal_st.st_size > 0) {
    // SQLite deletes the WAL of a 0-byte database on open (even read-only),
    // taking every transaction in it along: never open it.
    return damaged(path, "the file is 0 bytes but its WAL holds " +
                             std::to_string(wal_st.st_size) +
                             " bytes, which SQLite would delete on open");
  }
  TW_RETURN_IF_ERROR(checkWal(path));
  // Read-only, but SQLite may still need to build the -shm index of a WAL left
  // by a killed process: that changes no data.
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READONLY);
  if (!db.isOk()) return db.status();
  // integrity_check is quick_check plus the check of every index against its
  // table: quick_check alone passes an index whose entries were damaged.
  Result<CheckProblem> problem = checkDb(db->get(), "integrity_check");
  if (!problem.isOk()) return problem.status().withContext("checking " + inQuotes(path));
  if (problem->index_only) {
    facts.index_damage = problem->text;
  } else if (!problem->text.empty()) {
    return damaged(path, problem->text);
  }
  Result<int> version = readUserVersion(db->get());
  if (!version.isOk()) return damaged(path, version.status().message());
  facts.schema_version = *version;
  if (facts.schema_version >= 1) {
    for (auto [sql, out] : {std::pair{"SELECT coalesce(max(version), 0) FROM policies",
                                      &facts.policy_version},
                            std::pair{"SELECT count(*) FROM events", &facts.event_count}}) {
      Result<Statement> stmt = query(db->get(), sql);
      Result<bool> row = stmt.isOk() ? stmt->step() : Result<bool>(stmt.status());
      if (!row.isOk()) return damaged(path, row.status().message());
      if (*row) *out = stmt->int64At(0);
    }
  }
  return facts;
}

Status rebuildIndexes(const std::string& path) {
  const std::string context = "rebuilding the indexes of " + inQuotes(path);
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READWRITE);
  if (!db.isOk()) return db.status().withContext(context);
  TW_RETURN_IF_ERROR(execScript(db->get(), "REINDEX", context));
  Result<CheckProblem> problem = checkDb(db->get(), "integrity_check");
  if (!problem.isOk()) return problem.status().withContext(context);
  if (!problem->text.empty()) return damaged(path, problem->text + " (after REINDEX)");
  return Status::ok();
}

}  // namespace tw
