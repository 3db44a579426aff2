#include "controller/fence_agents.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

namespace tw {

namespace {

constexpr const char* kPlaceholders = "{host}, {uri}";

bool isNameChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

// [a-z][a-z0-9-]{0,62}, as names in policies.
bool isValidName(const std::string& s) {
  if (s.empty() || s.size() > 63 || s[0] < 'a' || s[0] > 'z') return false;
  for (char c : s)
    if (!isNameChar(c)) return false;
  return true;
}

bool isBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// A placeholder at word[i] ('{'): its name when "{[a-z_]+}" starts there.
std::optional<std::string> placeholderAt(const std::string& word, size_t i) {
  size_t j = i + 1;
  while (j < word.size() && ((word[j] >= 'a' && word[j] <= 'z') || word[j] == '_')) ++j;
  if (j == i + 1 || j >= word.size() || word[j] != '}') return std::nullopt;
  return word.substr(i + 1, j - i - 1);
}

class LineParser {
 public:
  LineParser(const std::string& file, int line_no, const std::string& line)
      : file_(file), line_no_(line_no), line_(line) {}

  // `name = template` → agent.
  Status parse(FenceAgent* agent) {
    size_t eq = line_.find('=');
    size_t name_begin = line_.find_first_not_of(" \t");
    if (eq == std::string::npos) return fail(name_begin, "expected 'name = command', got no '='");
    size_t name_end = eq;
    while (name_end > name_begin && isBlank(line_[name_end - 1])) --name_end;
    std::string name = line_.substr(name_begin, name_end - name_begin);
    if (!isValidName(name))
      return fail(name_begin,
                  "expected a fence agent name before '=' (a lowercase letter, then up "
                  "to 62 lowercase letters, digits or '-'), got '" +
                      name + "'");
    agent->name = name;
    agent->where = SourceLocation{file_, line_no_, static_cast<int>(name_begin) + 1};
    TW_RETURN_IF_ERROR(split(eq + 1, &agent->argv));
    if (agent->argv.empty()) return fail(eq, "fence agent '" + name + "' has no command after '='");
    if (agent->argv[0].empty())
      return fail(eq, "fence agent '" + name + "': the program name is empty");
    return Status::ok();
  }

  bool usesUri() const { return uses_uri_; }

 private:
  Status fail(size_t index, std::string message) const {
    return Status(Code::kInvalidArgument, std::move(message),
                  SourceLocation{file_, line_no_, static_cast<int>(index) + 1});
  }

  static Status shellRefused(const LineParser& p, size_t i, bool in_double) {
    std::string c(1, p.line_[i]);
    if (in_double)
      return p.fail(i, "'" + c +
                           "' inside \"...\": a fence agent runs without a shell, nothing "
                           "expands it; write it inside '...' to pass it as it is");
    return p.fail(i,
                  "'" + c +
                      "' outside quotes: a fence agent runs without a shell (no pipes, "
                      "lists, redirections, variables or substitutions); quote it to pass it as an "
                      "argument, or put the shell logic into a script and name the script");
  }

  // Shell-like word splitting of line_[from..] (see fence_agents.h).
  Status split(size_t from, std::vector<std::string>* words) {
    std::string word;
    bool in_word = false;
    // Where each word starts and where each of its characters came from, to
    // point at a bad placeholder.
    std::vector<size_t> origin;
    size_t i = from;
    auto finish = [&]() -> Status {
      TW_RETURN_IF_ERROR(checkPlaceholders(word, origin));
      words->push_back(word);
      word.clear();
      origin.clear();
      in_word = false;
      return Status::ok();
    };
    while (i < line_.size()) {
      char c = line_[i];
      if (isBlank(c)) {
        if (in_word) TW_RETURN_IF_ERROR(finish());
        ++i;
      } else if (c == '\'') {
        in_word = true;
        size_t close = line_.find('\'', i + 1);
        if (close == std::string::npos) return fail(i, "this ' is never closed");
        for (size_t k = i + 1; k < close; ++k) {
          word += line_[k];
          origin.push_back(k);
        }
        i = close + 1;
      } else if (c == '"') {
        in_word = true;
        size_t open = i++;
        for (;;) {
          if (i >= line_.size()) return fail(open, "this \" is never closed");
          char d = line_[i];
          if (d == '"') break;
          if (d == '$' || d == '`') return shellRefused(*this, i, true);
          if (d == '\\' && i + 1 < line_.size() && (line_[i + 1] == '"' || line_[i + 1] == '\\'))
            ++i;
          word += line_[i];
          origin.push_back(i);
          ++i;
        }
        ++i;
      } else if (c == '\\') {
        if (i + 1 >= line_.size())
          return fail(i, "the line ends with '\\' (one fence agent a line; no continuation lines)");
        in_word = true;
        word += line_[i + 1];
        origin.push_back(i + 1);
        i += 2;
      } else if (std::strchr("|&;<>()$`", c) != nullptr) {
        return shellRefused(*this, i, false);
      } else if (c == '#' && !in_word) {
        return fail(i,
                    "'#' starts a comment only at the start of a line; quote it to pass it as "
                    "an argument");
      } else {
        in_word = true;
        word += c;
        origin.push_back(i);
        ++i;
      }
    }
    if (in_word) TW_RETURN_IF_ERROR(finish());
    return Status::ok();
  }

  Status checkPlaceholders(const std::string& word, const std::vector<size_t>& origin) {
    for (size_t k = 0; k < word.size(); ++k) {
      if (word[k] != '{') continue;
      auto name = placeholderAt(word, k);
      if (!name) continue;  // a literal brace ('{"a": 1}')
      if (*name == "uri") {
        uses_uri_ = true;
      } else if (*name != "host") {
        return fail(origin[k], "unknown placeholder '{" + *name +
                                   "}' (known: " + std::string(kPlaceholders) + ")");
      }
    }
    return Status::ok();
  }

  const std::string& file_;
  int line_no_;
  const std::string& line_;
  bool uses_uri_ = false;
};

// As execvp looks a program up: a name with '/' as it is, else along PATH.
bool findExecutable(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  for (;;) {
    size_t end = path.find(':', begin);
    std::string dir =
        path.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return true;
    if (end == std::string::npos) return false;
    begin = end + 1;
  }
}

std::string octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

Result<FenceAgents> parseFenceAgents(const std::string& text, const std::string& file) {
  FenceAgents agents;
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') {
      if (end == text.size()) break;
      continue;
    }
    LineParser parser(file, line_no, line);
    FenceAgent agent;
    TW_RETURN_IF_ERROR(parser.parse(&agent));
    agent.uses_uri = parser.usesUri();
    auto [prev, inserted] = agents.emplace(agent.name, agent);
    if (!inserted)
      return Status(Code::kInvalidArgument,
                    "fence agent '" + agent.name + "' is defined twice (first at line " +
                        std::to_string(prev->second.where.line) + ")",
                    agent.where);
    if (end == text.size()) break;
  }
  return agents;
}

Result<FenceAgents> loadFenceAgents(const std::string& path) {
  // Checked on the open file itself, so that what is checked is what is read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return notFound("fence agents file " + path + " does not exist");
    return Status(Code::kPermissionDenied,
                  "cannot open fence agents file " + path + ": " + std::strerror(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return permissionDenied("cannot stat fence agents file " + path);
  const std::string why =
      ": it defines commands that the controller runs as its own user, so only that user "
      "(or root) may change it";
  if (!S_ISREG(st.st_mode))
    return invalidArgument("fence agents file " + path + " is not a regular file");
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return permissionDenied("fence agents file " + path +
                            " is writable by its group or by others (mode " + octal(st.st_mode) +
                            ")" + why + " (chmod go-w " + path + ")");
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    return permissionDenied(
        "fence agents file " + path + " is owned by uid " + std::to_string(st.st_uid) +
        ", neither root nor the controller's user (uid " + std::to_string(::geteuid()) + ")" + why);
  std::error_code ec;
  std::filesystem::path dir =
      std::filesystem::absolute(std::filesystem::path(path), ec).parent_path();
  struct stat dst {};
  if (!ec && ::stat(dir.c_str(), &dst) == 0 && (dst.st_mode & (S_IWGRP | S_IWOTH)) &&
      !(dst.st_mode & S_ISVTX))
    return permissionDenied("fence agents file " + path + " is in directory " + dir.string() +
                            ", which its group or others may write to (mode " + octal(dst.st_mode) +
                            "), so they could replace the file" + why);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return permissionDenied("cannot read fence agents file " + path + ": " +
                              std::strerror(errno));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > 1024 * 1024)
      return invalidArgument("fence agents file " + path + " is larger than 1 MiB");
  }
  auto agents = parseFenceAgents(text, path);
  if (!agents.isOk()) return agents.status();
  // A misspelt program is found now, not when a host has died.
  for (const auto& [name, agent] : *agents) {
    const std::string& program = agent.argv[0];
    if (program.find('{') == std::string::npos && !findExecutable(program))
      return Status(
          Code::kInvalidArgument,
          "fence agent '" + name + "': cannot find the program '" + program + "' (" +
              (program.find('/') == std::string::npos ? "not in PATH" : "not an executable file") +
              ")",
          agent.where);
  }
  return agents;
}

Result<std::vector<std::string>> fenceArgv(const FenceAgent& agent, const FenceTarget& target) {
  if (agent.uses_uri) {
    // A scheme first ("qemu+ssh://..."): the value cannot pass for an option.
    const std::string& u = target.uri;
    size_t scheme_end = u.find("://");
    bool scheme_ok =
        scheme_end != std::string::npos && scheme_end > 0 && u[0] >= 'a' && u[0] <= 'z';
    for (size_t k = 0; scheme_ok && k < scheme_end; ++k) {
      char c = u[k];
      scheme_ok =
          (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
    }
    if (u.empty())
      return invalidArgument("fence agent '" + agent.name + "' uses {uri}, but host '" +
                             target.host + "' has no uri");
    if (!scheme_ok)
      return invalidArgument("fence agent '" + agent.name + "' uses {uri}, but the uri of host '" +
                             target.host + "' does not start with a scheme like qemu+ssh://");
  }
  std::vector<std::string> argv;
  argv.reserve(agent.argv.size());
  for (const std::string& word : agent.argv) {
    std::string out;
    for (size_t k = 0; k < word.size(); ++k) {
      auto name = word[k] == '{' ? placeholderAt(word, k) : std::nullopt;
      if (!name) {
        out += word[k];
        continue;
      }
      out += *name == "host" ? target.host : target.uri;
      k += name->size() + 1;
    }
    argv.push_back(std::move(out));
  }
  return argv;
}

std::string fenceAgentNames(const FenceAgents& agents) {
  std::string out;
  for (const auto& [name, _] : agents) out += (out.empty() ? "'" : ", '") + name + "'";
  return out.empty() ? "none" : out;
}

}  // namespace tw
