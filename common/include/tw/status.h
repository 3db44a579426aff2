// Errors are values: one Status and one Result<T> for the whole project
// (g++ 12 in C++20 mode has no std::expected). Library exceptions are caught in
// the one file that calls the library and turned into a Status there.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tw {

enum class Code {
  kOk = 0,
  kInvalidArgument,     // bad input: refuse and show it to the user (HTTP 400)
  kNotFound,            // unknown name (HTTP 404)
  kAlreadyExists,       // HTTP 409
  kFailedPrecondition,  // valid input, wrong state (HTTP 409)
  kPermissionDenied,    // missing or wrong token (HTTP 401)
  kUnavailable,         // transient: retry with back-off (HTTP 503)
  kInternal,            // a bug or an environment failure we cannot handle (HTTP 500)
  kUnimplemented,       // this implementation cannot do that (e.g. the test driver) (HTTP 501)
  kForbidden,           // a valid credential that may not do this (HTTP 403)
};

const char* codeName(Code code);

// Where in an input file something is; line and column are 1-based, 0 = unknown.
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
  bool known() const { return line > 0; }
  // "file:line:column" (or just "file" when the position is unknown).
  std::string str() const;
};

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  Status(Code code, std::string message, SourceLocation where)
      : code_(code), message_(std::move(message)), where_(std::move(where)) {}

  static Status ok() { return Status(); }

  bool isOk() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::optional<SourceLocation>& where() const { return where_; }

  // Prefixes the message with context: "loading policy: <message>".
  Status withContext(const std::string& context) const;
  // "file:line:column: message" or "message".
  std::string toString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  std::optional<SourceLocation> where_;
};

inline Status invalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
inline Status notFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
inline Status failedPrecondition(std::string m) { return Status(Code::kFailedPrecondition, std::move(m)); }
inline Status unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }
inline Status internalError(std::string m) { return Status(Code::kInternal, std::move(m)); }
inline Status unimplemented(std::string m) { return Status(Code::kUnimplemented, std::move(m)); }
inline Status permissionDenied(std::string m) { return Status(Code::kPermissionDenied, std::move(m)); }
inline Status forbidden(std::string m) { return Status(Code::kForbidden, std::move(m)); }

// Either a value or a non-ok Status.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).isOk() && "Result built from an ok Status");
  }

  bool isOk() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return isOk(); }

  // REQUIRES: isOk()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // Ok status when there is a value.
  Status status() const { return isOk() ? Status() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tw

// Returns early from a function returning Status or Result<T>.
#define TW_RETURN_IF_ERROR(expr)          \
  do {                                    \
    ::tw::Status tw_status_ = (expr);     \
    if (!tw_status_.isOk()) return tw_status_; \
  } while (0)
