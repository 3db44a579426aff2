// A free loopback port for a test's child process (a controller, etcd) to
// listen on: every integration test binary draws its ports here.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace tw::testing_ports {

// A loopback port free now, and reserved for this test process: tests run
// in parallel (ctest -j) and each one draws ports here before its children
// bind them, so two draws of the same port (one process's, then another's,
// before either binds) were possible; then a controller failed to bind, or
// before tw/listen_socket.h shared the port with another test's controller.
// A draw takes an flock on /tmp/tw-test-ports/<port>, held until this
// process exits; a port whose lock another process holds is drawn again.
// (A port that some test binds with port 0 in between is still possible:
// the controller then fails at bind, loudly.)
inline int freeLoopbackPort() {
  static const std::string dir = [] {
    const std::string d = "/tmp/tw-test-ports";
    ::mkdir(d.c_str(), 01777);
    return d;
  }();
  for (int attempt = 0; attempt < 64; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    const int port = ntohs(a.sin_port);
    ::close(fd);
    const int lock = ::open((dir + "/" + std::to_string(port)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (lock < 0) return port;  // no registry (read-only /tmp): as before
    if (::flock(lock, LOCK_EX | LOCK_NB) == 0) return port;  // the descriptor stays open: the reservation
    ::close(lock);
  }
  return 0;
}

}  // namespace tw::testing_ports
