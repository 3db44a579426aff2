#include "tw/status.h"

namespace tw {

const char* codeName(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kNotFound: return "not_found";
    case Code::kAlreadyExists: return "already_exists";
    case Code::kFailedPrecondition: return "failed_precondition";
    case Code::kPermissionDenied: return "permission_denied";
    case Code::kForbidden: return "forbidden";
    case Code::kUnavailable: return "unavailable";
    case Code::kInternal: return "internal";
    case Code::kUnimplemented: return "unimplemented";
  }
  return "unknown";
}

std::string SourceLocation::str() const {
  if (!known()) return file;
  std::string s = file + ":" + std::to_string(line);
  if (column > 0) s += ":" + std::to_string(column);
  return s;
}

Status Status::withContext(const std::string& context) const {
  if (isOk()) return *this;
  Status s = *this;
  s.message_ = context + ": " + message_;
  return s;
}

std::string Status::toString() const {
  if (isOk()) return "ok";
  if (where_ && (!where_->file.empty() || where_->known())) return where_->str() + ": " + message_;
  return message_;
}

}  // namespace tw
