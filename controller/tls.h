// TLS on the controller's listeners (docs/auth.md, "TLS"): the OpenSSL server
// context of a listener, and one connection's bytes, plain or TLS, for the
// code that serves sockets itself (GuardedHttpServer's TLS path, the
// EventStreamer). OpenSSL's C API is used here, in pki.cc and in auth.cc only.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "tw/status.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace tw {

struct ServerTlsFiles {
  std::string cert;  // PEM: the listener's certificate
  std::string key;   // PEM: its private key
  // Non-empty: every client must present a certificate signed by this CA
  // (mTLS); the handshake fails without one.
  std::string client_ca;
};

// One listener's SSL_CTX: TLS 1.2 or newer, the certificate and key, and the
// client CA when given. Immutable after load(); shared by the connections.
class ServerTls {
 public:
  // Errors: kInvalidArgument naming the file that cannot be read or does not
  // match (a key that is not the certificate's).
  static Result<std::shared_ptr<ServerTls>> load(const ServerTlsFiles& files);
  ~ServerTls();
  ServerTls(const ServerTls&) = delete;
  ServerTls& operator=(const ServerTls&) = delete;

  SSL_CTX* context() const { return ctx_; }
  bool verifiesClients() const { return verifies_clients_; }

 private:
  ServerTls(SSL_CTX* ctx, bool verifies_clients) : ctx_(ctx), verifies_clients_(verifies_clients) {}
  SSL_CTX* ctx_;
  bool verifies_clients_;
};

// A connected socket, owned (closed by the destructor), with TLS on top once
// handshake() succeeded. read/peek/write behave like recv/send: > 0 bytes,
// 0 when the peer closed, -1 on an error; on a non-blocking socket -1 with
// errno EAGAIN when nothing can be done now (TLS: WANT_READ / WANT_WRITE).
class Transport {
 public:
  explicit Transport(int fd) : fd_(fd) {}
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // The server side of the TLS handshake on a blocking socket; bounded by the
  // socket's SO_RCVTIMEO/SO_SNDTIMEO (and GuardedHttpServer's watchdog, which
  // shuts the socket down at the request deadline). Errors: kUnavailable with
  // OpenSSL's reason (no certificate, unknown CA, a timeout, a plain-HTTP client).
  Status handshake(const ServerTls& tls);

  ssize_t read(void* buf, size_t n);
  ssize_t peek(void* buf, size_t n);
  ssize_t write(const void* buf, size_t n);
  // Decrypted bytes wait in the TLS buffer (poll() on the socket would not see them).
  bool pending() const;
  int fd() const { return fd_; }
  const SSL* ssl() const { return ssl_; }
  bool tls() const { return ssl_ != nullptr; }
  // Sends TLS close_notify (best effort) before the socket is closed.
  void closeGracefully() { graceful_ = true; }

 private:
  ssize_t io(int op, void* buf, size_t n);
  int fd_;
  SSL* ssl_ = nullptr;
  bool graceful_ = false;
};

}  // namespace tw
