#include "agent/peer_answer.h"

#include "tw/json.h"
#include "tw/text.h"

namespace tw {

namespace {

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace

std::string compactPeerAnswer(const std::string& self, bool sees_you) {
  return dump(Json{{"host", self}, {"sees_you", sees_you}});
}

std::string fullPeerAnswer(const std::string& self, const std::vector<std::string>& sees) {
  return dump(Json{{"host", self}, {"sees", sees}});
}

PeerStatusAnswer answerPeerStatus(const PeerStatusRequest& request, const std::string& token,
                                  const std::string& self,
                                  const std::function<bool(const std::string&)>& hears,
                                  const std::function<std::vector<std::string>()>& heard) {
  // One header, whole: two (a proxy's and the caller's) or a value cut at a
  // NUL could let a wrong one pass.
  if (request.authorization.size() != 1 ||
      !tokenMatches(bearerToken(request.authorization.front()), token)) {
    return {401, R"({"error":"invalid or missing token"})"};
  }
  if (request.from.has_value() && request.compact) {
    return {200, compactPeerAnswer(self, hears(*request.from))};
  }
  return {200, fullPeerAnswer(self, heard())};
}

Result<bool> parsePeerAnswer(const std::string& body, const std::string& asked,
                             const std::string& self) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalidArgument("peer answer is not a JSON object");
  auto host = j.find("host");
  if (host == j.end() || !host->is_string() || host->get<std::string>() != asked) {
    return invalidArgument("peer answer is not from '" + asked + "'");
  }
  if (auto sees_you = j.find("sees_you"); sees_you != j.end()) {
    if (!sees_you->is_boolean()) return invalidArgument("peer answer's 'sees_you' is not a boolean");
    return sees_you->get<bool>();
  }
  auto sees = j.find("sees");
  if (sees == j.end() || !sees->is_array()) {
    return invalidArgument("peer answer has neither 'sees_you' nor a 'sees' list");
  }
  bool mutual = false;
  for (const auto& s : *sees) {
    // Old parse: a non-string element was skipped, not an error; kept so.
    mutual |= s.is_string() && s.get_ref<const std::string&>() == self;
  }
  return mutual;
}

}  // namespace tw
