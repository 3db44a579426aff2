// libFuzzer target: raw bytes on an HTTP connection to the real controller,
// in this process — request → GuardedHttpServer → httplib → handler →
// Controller (real SQLite, ":memory:") → answer. Built with clang
// -fsanitize=fuzzer,address,undefined (cmake -DTW_FUZZ=ON, tests/fuzz/).
//
// Aborts (a finding) when an answer is not well-formed HTTP, when a JSON
// answer is not valid JSON (e.g. invalid UTF-8 in an error message), when the
// controller answers a 5xx other than 503 (docs/api.md: a 500 never answers
// bad input; 503 is "try again", e.g. a connection limit), or when no answer
// comes within 8 s. A crash, an uncaught exception, a leak and undefined
// behaviour are reported by the sanitizers.
//
// The input goes to the agents' listener when its first line names
// /api/v1/agents/, else to the public one, over loopback TCP. The brief
// asked for httplib's process_and_close_socket on a socketpair; the server
// now sits behind GuardedHttpServer (admission, read deadline, hand-off of
// event streams to EventStreamer), whose entry point is private, so a real
// connection is the way to reach the whole chain without test hooks.
//
// The tokens are fixed (kToken, kAgentToken below), so that seeds reach authenticated
// routes. Long polls and event waits return at once (releaseWaiters()); the
// loop ticks once a second (its own work is not what this target is about);
// the whole stack is rebuilt every kRebuildEvery inputs so that state
// (applied policies, events) stays small. How the end of an input is told
// to the server without losing its answer: exchange() below.
//
// Run: scripts/fuzz [SECONDS] (ctest label `fuzz`: 60 s from the seeds in
// tests/fuzz/corpus/http, which include the requests of the bad-input
// report: DELETE /%ce, GET /x%ff.html, ?since=%ff, a body of 0xFF, 1e400).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "controller/api_server.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/clock.h"
#include "tw/json.h"
#include "tw/log.h"
#include "tw/store.h"

namespace {

constexpr const char* kToken = "fuzz-token-0123456789abcdef0123";        // the operator's
constexpr const char* kAgentToken = "fuzz-agent-h1-0123456789abcdef0";   // host h1's agent
constexpr int kRebuildEvery = 500;
constexpr int kAnswerTimeoutMs = 8000;
constexpr int kCompleteWaitMs = 500;

[[noreturn]] void finding(const std::string& what, std::string_view input, std::string_view answer) {
  std::fprintf(stderr, "http_fuzz: %s\n--- input (%zu bytes) ---\n%.*s\n--- answer (%zu bytes) ---\n%.*s\n",
               what.c_str(), input.size(), static_cast<int>(std::min<size_t>(input.size(), 4096)),
               input.data(), answer.size(), static_cast<int>(std::min<size_t>(answer.size(), 4096)),
               answer.data());
  std::abort();
}

class Stack {
 public:
  Stack() {
    namespace fs = std::filesystem;
    web_dir_ = fs::temp_directory_path() / ("tw-fuzz-web-" + std::to_string(::getpid()));
    fs::create_directories(web_dir_ / "css");
    std::ofstream(web_dir_ / "index.html") << "<!doctype html><title>tierwarden</title>";
    std::ofstream(web_dir_ / "css" / "app.css") << "body{}";
    auto store = tw::Store::open(":memory:");
    if (!store.isOk()) finding("cannot open the store: " + store.status().toString(), "", "");
    store_ = std::move(store).value();
    controller_ = std::make_unique<tw::Controller>(*store_, tw::SystemClock::instance());
    tw::Status s = controller_->recover();
    if (!s.isOk()) finding("recover failed: " + s.toString(), "", "");
    // A slow tick: the loop's own work (placing a policy's VMs, which a
    // mutated "replicas:" makes thousands of) would otherwise hold up every
    // request; the HTTP path is what this target is about.
    service_ = std::make_unique<tw::ControllerService>(*controller_, 1000);
    tw::ApiServerOptions options{"127.0.0.1", 0, kToken, web_dir_.string()};
    tw::CredentialSet credentials;
    credentials.add(tw::Principal{tw::Role::kOperator, ""}, kToken);
    credentials.add(tw::Principal{tw::Role::kAgent, "h1"}, kAgentToken);
    options.auth = std::make_shared<tw::StaticAuthenticator>(std::move(credentials));
    options.public_read = true;  // the read seeds carry no token: reach their handlers
    // The same limits as the daemon's, with fewer threads (one connection at a time here).
    options.public_limits.threads = 8;
    options.public_limits.total = std::min(options.public_limits.total, 8);
    options.agent_limits.threads = 8;
    options.agent_limits.total = std::min(options.agent_limits.total, 8);
    server_ = std::make_unique<tw::ApiServer>(*service_, options);
    s = server_->bind();
    if (!s.isOk()) finding("bind failed: " + s.toString(), "", "");
    service_->start();
    service_->releaseWaiters();  // long polls and event waits return at once
    thread_ = std::thread([this] { server_->serve(); });
  }

  ~Stack() {
    service_->releaseWaiters();
    server_->stop();
    thread_.join();
    service_->stop();
    server_.reset();
    service_.reset();
    controller_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(web_dir_, ec);
  }

  int port() const { return server_->port(); }
  int agentPort() const { return server_->agentPort(); }

 private:
  std::filesystem::path web_dir_;
  std::unique_ptr<tw::Store> store_;
  std::unique_ptr<tw::Controller> controller_;
  std::unique_ptr<tw::ControllerService> service_;
  std::unique_ptr<tw::ApiServer> server_;
  std::thread thread_;
};

int connectTo(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  // close() resets: no TIME_WAIT left on our side, whose ports would run out
  // after some ten thousand inputs (and slow every connect() before that).
  linger no_linger{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof(no_linger));
  return fd;
}

// Finds "\r\n\r\n" from `from`; npos when absent.
size_t headEnd(const std::string& s, size_t from) {
  size_t p = s.find("\r\n\r\n", from);
  return p == std::string::npos ? p : p + 4;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Head {
  int status = 0;
  std::string content_type;
  long long content_length = -1;
  bool chunked = false;
};

// Parses a response head (status line + headers); false when malformed.
bool parseHead(std::string_view head, Head& out) {
  if (head.size() < 12 || head.substr(0, 9) != "HTTP/1.1 ") return false;
  for (int i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9') return false;
  }
  out.status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
  size_t line_end = head.find("\r\n");
  size_t pos = line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) return false;
    if (end == pos) break;  // the blank line
    std::string_view line = head.substr(pos, end - pos);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    std::string name = lower(std::string(line.substr(0, colon)));
    std::string value(line.substr(colon + 1));
    value.erase(0, value.find_first_not_of(' '));
    if (name == "content-type") out.content_type = value;
    if (name == "content-length") {
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) return false;
      out.content_length = std::stoll(value);
    }
    if (name == "transfer-encoding" && lower(value) == "chunked") out.chunked = true;
    pos = end + 2;
  }
  return true;
}

// True when the input's first request looks complete (head, and the body its
// Content-Length or chunked framing announces): the server should answer
// it without more bytes. Approximate; a wrong guess costs time, not a check.
bool looksComplete(std::string_view input) {
  size_t end = input.find("\r\n\r\n");
  if (end == std::string_view::npos) return false;
  std::string head = lower(std::string(input.substr(0, end + 2)));
  std::string_view rest = input.substr(end + 4);
  if (head.find("\r\ntransfer-encoding:") != std::string::npos) {
    // Walks the chunks: "<hex size>\r\n<data>\r\n" ... "0\r\n\r\n".
    size_t pos = 0;
    for (;;) {
      size_t eol = rest.find("\r\n", pos);
      if (eol == std::string_view::npos || eol == pos) return false;
      size_t size = 0;
      for (size_t i = pos; i < eol; ++i) {
        if (!std::isxdigit(static_cast<unsigned char>(rest[i])) || size > (1u << 24)) return false;
        size = size * 16 + static_cast<size_t>(std::stoi(std::string(1, rest[i]), nullptr, 16));
      }
      if (size == 0) return rest.size() >= eol + 4 && rest.substr(eol + 2, 2) == "\r\n";
      pos = eol + 2 + size;
      if (rest.size() < pos + 2 || rest.substr(pos, 2) != "\r\n") return false;
      pos += 2;
    }
  }
  size_t cl = head.find("\r\ncontent-length:");
  // httplib drops a header without a value.
  if (cl != std::string::npos) {
    size_t value = head.find_first_not_of(' ', cl + 17);
    if (value == std::string::npos || head.compare(value, 2, "\r\n") == 0) cl = std::string::npos;
  }
  if (cl == std::string::npos) {
    // httplib reads the body of these methods until EOF when no length is given.
    std::string_view method = input.substr(0, input.find(' '));
    return !(method == "POST" || method == "PUT" || method == "PATCH" || method == "PRI" ||
             method == "DELETE");
  }
  size_t v = head.find_first_not_of(' ', cl + 17);
  size_t n = 0;
  for (size_t i = v; i < head.size() && n < 1000000000 && std::isdigit(static_cast<unsigned char>(head[i])); ++i)
    n = n * 10 + static_cast<size_t>(head[i] - '0');
  return rest.size() >= n;
}

// True when `answer` holds a whole first answer (or an event stream's head,
// or the head that answers HEAD).
bool answerComplete(std::string_view input, const std::string& answer) {
  size_t end = headEnd(answer, 0);
  if (end == std::string::npos) return false;
  if (input.substr(0, 5) == "HEAD ") return true;
  std::string head = lower(answer.substr(0, end));
  if (head.find("text/event-stream") != std::string::npos) return true;
  size_t cl = head.find("\r\ncontent-length:");
  if (cl == std::string::npos) return true;
  return answer.size() - end >= static_cast<size_t>(std::atoll(head.c_str() + cl + 17));
}

// Sends the input and reads the answer until EOF (or, for an event stream,
// until its head: a stream does not end by itself).
//
// The end of the input is told by a half-close (shutdown SHUT_WR), but not
// before the answer came: httplib 0.11.4 does not write to a connection whose
// client has half-closed (its is_socket_alive() takes the pending EOF for a
// dead peer), so a half-close sent with the request loses the answer. Hence:
// a request that looks complete gets up to kCompleteWaitMs for its answer,
// then the half-close; one that does not is half-closed at once.
//
// `cut`: the answer may lawfully end early, because we half-closed before it
// was complete (httplib then stops writing, see above), or because the
// connection was reset (httplib closes a connection without reading what the
// client sent after a request it refused; the kernel then resets it, and may
// drop the end of the answer on our side).
std::string exchange(int fd, std::string_view input, bool& cut) {
  using Clock = std::chrono::steady_clock;
  cut = false;
  std::string answer;
  size_t sent = 0;
  bool sending = true;
  bool write_open = true;
  const bool complete = looksComplete(input);
  const auto start = Clock::now();
  Clock::time_point half_close_at = Clock::time_point::max();
  for (;;) {
    auto now = Clock::now();
    if (sending && sent == input.size()) {
      sending = false;
      half_close_at = complete ? now + std::chrono::milliseconds(kCompleteWaitMs) : now;
    }
    if (write_open && (now >= half_close_at || answerComplete(input, answer))) {
      if (!answerComplete(input, answer)) cut = true;
      ::shutdown(fd, SHUT_WR);
      write_open = false;
    }
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
    if (elapsed >= kAnswerTimeoutMs) {
      finding("no answer within " + std::to_string(kAnswerTimeoutMs) + " ms", input, answer);
    }
    int wait = static_cast<int>(kAnswerTimeoutMs - elapsed);
    if (write_open && !sending) {
      auto until = std::chrono::duration_cast<std::chrono::milliseconds>(half_close_at - now).count();
      wait = static_cast<int>(std::clamp<int64_t>(until, 0, wait));
    }
    pollfd p{fd, static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, wait) <= 0) continue;
    if (p.revents & POLLOUT) {
      ssize_t w = ::send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (w > 0) {
        sent += static_cast<size_t>(w);
      } else if (!(w < 0 && errno == EINTR)) {  // libFuzzer's -timeout alarm interrupts
        sending = false;  // the server closed: read what it said
        write_open = false;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[65536];
      ssize_t r = ::recv(fd, buf, sizeof(buf), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) cut = true;
      if (r <= 0) break;
      answer.append(buf, static_cast<size_t>(r));
      size_t end = headEnd(answer, 0);
      if (end != std::string::npos && lower(answer.substr(0, end)).find("text/event-stream") !=
                                          std::string::npos) {
        break;
      }
    }
  }
  return answer;
}

// Checks every answer on the connection.
void checkAnswers(std::string_view input, const std::string& answer, bool cut) {
  size_t pos = 0;
  while (pos < answer.size()) {
    size_t end = headEnd(answer, pos);
    if (end == std::string::npos) {
      if (cut) return;
      finding("answer head not terminated", input, answer);
    }
    Head head;
    if (!parseHead(std::string_view(answer).substr(pos, end - pos), head)) {
      finding("malformed answer head", input, answer);
    }
    if (head.status >= 500 && head.status != 503) {
      finding("answered " + std::to_string(head.status), input, answer);
    }
    if (head.content_type.find("text/event-stream") != std::string::npos) return;  // a stream
    if (head.chunked) return;  // not ours to frame; the status was checked
    if (head.content_length < 0) head.content_length = 0;  // 100 Continue, 204
    // An answer to HEAD has a Content-Length but no body.
    bool head_request = input.find("HEAD") != std::string_view::npos;
    if (head_request && answer.compare(end, 9, "HTTP/1.1 ") == 0) {
      pos = end;  // a body-less answer to HEAD, and the next answer follows: nothing to parse
      continue;
    }
    if (answer.size() - end < static_cast<size_t>(head.content_length)) {
      if ((head_request && end == answer.size()) || cut) return;
      finding("answer body shorter than its Content-Length", input, answer);
    }
    std::string body = answer.substr(end, static_cast<size_t>(head.content_length));
    if (head.content_type.rfind("application/json", 0) == 0) {
      auto j = tw::parseJson(body);  // strict: invalid UTF-8 is refused
      if (!j.isOk()) finding("JSON answer is not JSON: " + j.status().message(), input, answer);
      if (head.status >= 400 && !(j->is_object() && j->contains("error"))) {
        finding("error answer without \"error\"", input, answer);
      }
    }
    pos = end + static_cast<size_t>(head.content_length);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tw::log::init("fuzz", "off");
  std::signal(SIGPIPE, SIG_IGN);  // as the controller's main(): httplib writes with send(2) flags 0
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<Stack> stack;
  static int runs = 0;
  if (!stack || ++runs % kRebuildEvery == 0) {
    stack.reset();
    stack = std::make_unique<Stack>();
  }
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view first_line = input.substr(0, input.find('\n'));
  bool agent = first_line.find("/api/v1/agents/") != std::string_view::npos;
  int fd = connectTo(agent ? stack->agentPort() : stack->port());
  if (fd < 0) finding("cannot connect", input, "");
  bool cut = false;
  std::string answer = exchange(fd, input, cut);
  ::close(fd);
  checkAnswers(input, answer, cut);
  return 0;
}
