#include "config.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "tw/http_client.h"

namespace tw::cli {

namespace {

constexpr char kConfigWhitespace[] = " \t\r\n";

std::string trimmed(const std::string& s) {
  size_t begin = s.find_first_not_of(kConfigWhitespace);
  if (begin == std::string::npos) return "";
  size_t end = s.find_last_not_of(kConfigWhitespace);
  return s.substr(begin, end - begin + 1);
}

std::string expandPath(const std::string& value, const std::string& config_path,
                       const std::optional<std::string>& home) {
  if (value.rfind("~/", 0) == 0 && home) return *home + value.substr(1);
  if (!value.empty() && value.front() == '/') return value;
  size_t slash = config_path.rfind('/');
  if (slash == std::string::npos) return value;
  return config_path.substr(0, slash + 1) + value;
}

Result<std::string> readWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return notFound(std::string(std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return invalidArgument("read error");
  return text.str();
}

}  // namespace

EnvLookup processEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

Result<ConnectionValues> parseConfig(const std::string& text, const std::string& path,
                                     const std::optional<std::string>& home) {
  ConnectionValues out;
  out.source = path;
  std::istringstream lines(text);
  std::string raw;
  int line_no = 0;
  while (std::getline(lines, raw)) {
    ++line_no;
    auto fail = [&](const std::string& why) {
      return Status(Code::kInvalidArgument, why, SourceLocation{path, line_no, 0});
    };
    std::string line = trimmed(raw);
    if (line.empty() || line.front() == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) return fail("expected 'key = value', got '" + line + "'");
    std::string key = trimmed(line.substr(0, eq));
    std::string value = trimmed(line.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    std::optional<std::string>* slot = nullptr;
    if (key == "controller") {
      slot = &out.controller;
    } else if (key == "token") {
      slot = &out.token;
    } else if (key == "token_file") {
      slot = &out.token_file;
    } else if (key == "ca") {
      slot = &out.ca;
    } else {
      return fail("unknown key '" + key + "' (expected controller, token, token_file or ca)");
    }
    if (slot->has_value()) return fail("'" + key + "' is set twice");
    if (value.empty()) return fail("'" + key + "' has an empty value");
    if (key == "token_file" || key == "ca") value = expandPath(value, path, home);
    *slot = value;
  }
  return out;
}

Result<ConnectionValues> loadConfigFile(const EnvLookup& env) {
  std::optional<std::string> explicit_path = env("TW_CONFIG");
  if (explicit_path && explicit_path->empty()) explicit_path.reset();
  std::optional<std::string> home = env("HOME");
  if (home && home->empty()) home.reset();
  std::string path;
  if (explicit_path) {
    path = *explicit_path;
  } else if (home) {
    path = *home + "/.config/tierwarden/twctl.conf";
  } else {
    return ConnectionValues{"no config file", {}, {}, {}, {}};
  }
  Result<std::string> text = readWholeFile(path);
  if (!text.isOk()) {
    if (!explicit_path && text.status().code() == Code::kNotFound) {
      return ConnectionValues{path + " (absent)", {}, {}, {}, {}};
    }
    return Status(text.status().code(), "cannot read config file " + path +
                                            (explicit_path ? " (named by TW_CONFIG)" : "") + ": " +
                                            text.status().message());
  }
  return parseConfig(*text, path, home);
}

ConnectionValues envValues(const EnvLookup& env) {
  auto get = [&env](const char* name) -> std::optional<std::string> {
    std::optional<std::string> v = env(name);
    if (v && v->empty()) return std::nullopt;
    return v;
  };
  ConnectionValues out;
  out.source = "environment";
  out.controller = get("TW_CONTROLLER");
  out.token = get("TW_TOKEN");
  out.token_file = get("TW_TOKEN_FILE");
  out.ca = get("TW_CA");
  return out;
}

Result<std::string> readTokenFile(const std::string& path) {
  Result<std::string> text = readWholeFile(path);
  if (!text.isOk()) {
    return invalidArgument("cannot read token file " + path + ": " + text.status().message());
  }
  std::string token = trimmed(*text);
  if (token.empty()) return invalidArgument("token file " + path + " is empty");
  return token;
}

Result<ConnectionSettings> resolveSettings(const ConnectionValues& flags,
                                           const ConnectionValues& env,
                                           const ConnectionValues& file) {
  ConnectionSettings out;
  out.controller = kDefaultControllerUrl;
  std::string controller_source = "default";
  bool token_done = false;
  for (const ConnectionValues* layer : {&flags, &env, &file}) {
    if (layer->ca && out.ca_file.empty()) out.ca_file = *layer->ca;
    if (layer->controller && controller_source == "default") {
      out.controller = *layer->controller;
      controller_source = layer->source;
    }
    if (token_done || (!layer->token && !layer->token_file)) continue;
    if (layer->token && layer->token_file) {
      return invalidArgument("both a token and a token file are given (" + layer->source +
                             "); give one");
    }
    if (layer->token) {
      out.token = *layer->token;
    } else {
      Result<std::string> token = readTokenFile(*layer->token_file);
      if (!token.isOk()) return token.status().withContext(layer->source);
      out.token = *token;
    }
    token_done = true;
  }
  Status url = checkBaseUrl(out.controller);
  if (!url.isOk()) return url.withContext(controller_source);
  return out;
}

}  // namespace tw::cli
