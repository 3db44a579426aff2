// Where twctl finds its controller and token. Precedence, highest first:
// command-line flags, environment (TW_CONTROLLER, TW_TOKEN, TW_TOKEN_FILE,
// TW_CA), the config file, the default (https://127.0.0.1:7800, no token, the
// system's CAs).
//
// The config file is $TW_CONFIG, else ~/.config/tierwarden/twctl.conf. It holds
// `key = value` lines with the keys controller, token, token_file and ca (the
// controller's CA certificate); blank lines and lines starting with '#' are
// skipped; a value may be put in double quotes. A relative token_file or ca is
// relative to the config file's directory,
// and "~/" means $HOME.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "tw/status.h"

namespace tw::cli {

// One layer of settings; nullopt = not given at this layer.
struct ConnectionValues {
  std::string source;  // "command line", "environment" or the config file's path
  std::optional<std::string> controller;
  std::optional<std::string> token;
  std::optional<std::string> token_file;
  std::optional<std::string> ca;  // the controller's CA certificate (PEM)
};

// What twctl uses.
struct ConnectionSettings {
  std::string controller;
  std::string token;  // empty = no token
  std::string ca_file;  // empty = the system's trusted CAs (https:// only)
};

// Reads an environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
EnvLookup processEnv();

// Parses the text of a config file read from `path`; `home` expands "~/".
// Errors: kInvalidArgument with where() = path:line, saying what was expected
// (a line without '=', an unknown or repeated key, an empty value).
Result<ConnectionValues> parseConfig(const std::string& text, const std::string& path,
                                     const std::optional<std::string>& home);

// The config file layer. A missing default file is an empty layer; a missing
// file named by TW_CONFIG is an error (kNotFound). Errors: as parseConfig().
Result<ConnectionValues> loadConfigFile(const EnvLookup& env);

// The environment layer. Empty variables count as unset.
ConnectionValues envValues(const EnvLookup& env);

// The content of a token file without surrounding whitespace.
// Errors: kInvalidArgument when it cannot be read or is empty.
Result<std::string> readTokenFile(const std::string& path);

// Merges the layers. The token comes from the highest layer that gives token or
// token_file (token_file is read here); one layer giving both is an error. The
// controller URL is checked (tw::checkBaseUrl). Errors: kInvalidArgument naming
// the layer.
Result<ConnectionSettings> resolveSettings(const ConnectionValues& flags,
                                           const ConnectionValues& env,
                                           const ConnectionValues& file);

}  // namespace tw::cli
