// A listening port belongs to one process (tw/listen_socket.h): our
// listeners must fail to bind a port that another socket listens on, even
// one that allows sharing (SO_REUSEPORT, as cpp-httplib's own default sets).
// Before, a second controller bound such a port and the kernel split the
// connections between the two.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/peer_monitor.h"
#include "controller/http_guard.h"
#include "tw/clock.h"

namespace tw {
namespace {

// A socket listening on a free loopback port with SO_REUSEPORT set: what
// another cpp-httplib server (or a controller built before this fix) holds.
class SharedListener {
 public:
  SharedListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 4) != 0) return;
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~SharedListener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Pins: the controller's listeners (public, agents, guests) do not bind a
// taken port; ApiServer::bind() then fails with "address in use".
TEST(PortOwnershipTest, ControllerListenerRefusesATakenPort) {
  SharedListener taken;
  ASSERT_GT(taken.port(), 0);
  GuardedHttpServer server("test", ListenerLimits{});
  EXPECT_FALSE(server.bind_to_port("127.0.0.1", taken.port()));
  // A free port still binds.
  GuardedHttpServer other("test", ListenerLimits{});
  const int port = other.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  other.stop();
}

// Pins: an agent's peer listener does not bind a taken port either: a stale
// agent on the same host must not answer half of the peer checks.
TEST(PortOwnershipTest, PeerListenerRefusesATakenPort) {
  SharedListener taken;
  ASSERT_GT(taken.port(), 0);
  HttpPeerMonitor monitor("h1", "secret-token-0123456789", SystemClock::instance());
  Status st = monitor.listen("127.0.0.1:" + std::to_string(taken.port()));
  EXPECT_FALSE(st.isOk());
}

}  // namespace
}  // namespace tw
