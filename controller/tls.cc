#include "controller/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace tw {

namespace {

// OpenSSL's error queue as one line (and emptied), for a message.
std::string sslErrors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out;
}

}  // namespace

Result<std::shared_ptr<ServerTls>> ServerTls::load(const ServerTlsFiles& files) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return internalError("SSL_CTX_new: " + sslErrors());
  std::shared_ptr<ServerTls> tls(new ServerTls(ctx, !files.client_ca.empty()));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Partial non-blocking writes from a buffer that may move between retries
  // (the EventStreamer appends to a stream's pending bytes).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert.c_str()) != 1) {
    return invalidArgument("cannot load the TLS certificate " + files.cert + ": " + sslErrors() +
                           " (tierwarden-controller init makes it)");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return invalidArgument("cannot load the TLS key " + files.key + ", or it is not the key of " + files.cert +
                           ": " + sslErrors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return invalidArgument("the TLS key " + files.key + " is not the key of " + files.cert + ": " +
                           sslErrors());
  }
  if (!files.client_ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, files.client_ca.c_str(), nullptr) != 1) {
      return invalidArgument("cannot load the client CA " + files.client_ca + ": " + sslErrors());
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.client_ca.c_str());
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    SSL_CTX_set_verify_depth(ctx, 2);
    // Sessions are not resumed across connections: each one shows its certificate.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  }
  return tls;
}

ServerTls::~ServerTls() { SSL_CTX_free(ctx_); }

Transport::~Transport() {
  if (ssl_) {
    if (graceful_) (void)SSL_shutdown(ssl_);
    SSL_free(ssl_);
  }
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
  }
}

Status Transport::handshake(const ServerTls& tls) {
  ERR_clear_error();
  ssl_ = SSL_new(tls.context());
  if (!ssl_) return internalError("SSL_new: " + sslErrors());
  SSL_set_fd(ssl_, fd_);
  int r = SSL_accept(ssl_);
  if (r == 1) return Status::ok();
  int err = SSL_get_error(ssl_, r);
  std::string why = sslErrors();
  if (why.empty()) {
    why = err == SSL_ERROR_SYSCALL || err == SSL_ERROR_WANT_READ
              ? "the client sent no complete handshake in time, or closed"
              : "error " + std::to_string(err);
  }
  // No close_notify after a failed handshake.
  SSL_free(ssl_);
  ssl_ = nullptr;
  return unavailable("TLS handshake failed: " + why);
}

ssize_t Transport::io(int op, void* buf, size_t n) {
  int len = static_cast<int>(std::min<size_t>(n, 1 << 30));
  int r = op == 0 ? SSL_read(ssl_, buf, len) : op == 1 ? SSL_peek(ssl_, buf, len)
                                                       : SSL_write(ssl_, buf, len);
  if (r > 0) return r;
  int err = SSL_get_error(ssl_, r);
  ERR_clear_error();
  switch (err) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:
      return 0;
    case SSL_ERROR_SYSCALL:
      if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
      if (errno == 0) errno = ECONNRESET;
      return -1;
    default:
      errno = EPROTO;
      return -1;
  }
}

ssize_t Transport::read(void* buf, size_t n) {
  if (!ssl_) return ::recv(fd_, buf, n, 0);
  return io(0, buf, n);
}

ssize_t Transport::peek(void* buf, size_t n) {
  if (!ssl_) return ::recv(fd_, buf, n, MSG_PEEK);
  return io(1, buf, n);
}

ssize_t Transport::write(const void* buf, size_t n) {
  if (!ssl_) return ::send(fd_, buf, n, MSG_NOSIGNAL);
  return io(2, const_cast<void*>(buf), n);
}

bool Transport::pending() const { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }

}  // namespace tw
