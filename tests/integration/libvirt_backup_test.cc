// LibvirtHypervisor::backupDisk.
//  - On the test driver (always): the backup API is refused there; with no
//    file disk the call fails with a clear status and leaves no file.
//  - On a real libvirtd + QEMU (TCG) with the tiny db image, when
//    TW_BACKUP_TEST_URI names a lab host's qemu URI (tests/integration/
//    backup_realvm_test.sh starts one under the real-VM lock): a running VM's
//    disk is backed up with the backup API and with the snapshot + block
//    commit fallback; each copy is a self-contained qcow2 that passes
//    `qemu-img check` and holds the value the VM wrote before; the VM keeps
//    running on its own disk and keeps writing after each.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tw/hypervisor.h"
#include "tw/json.h"

namespace tw {
namespace {

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// Sends `lines` to the tiny db at 127.0.0.1:port, returns all it answered
// ("" when it does not answer).
std::string dbAsk(int port, const std::string& lines) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string msg = lines + "QUIT\n";
    if (write(fd, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size())) {
      char buf[1024];
      ssize_t n = 0;
      while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

// Pins: on the test driver a domain without a file disk cannot be backed up
// (a clear error), a target that exists is refused, and no file is left.
TEST(LibvirtBackupTest, TestDriverRefusesCleanly) {
  auto hv = connectLibvirt("test:///default");
  ASSERT_TRUE(hv.isOk()) << hv.status().toString();
  DomainSpec spec;
  spec.meta.vm = "bk-1";
  spec.meta.tier = "db";
  spec.meta.epoch = 1;
  ASSERT_TRUE((*hv)->define(spec).isOk());
  const std::string target = "/tmp/tw-backup-test-" + std::to_string(getpid()) + ".qcow2";
  Result<DiskBackup> b = (*hv)->backupDisk("bk-1", target);
  EXPECT_EQ(b.status().code(), Code::kFailedPrecondition) << b.status().toString();  // not running
  ASSERT_TRUE((*hv)->start("bk-1").isOk());
  b = (*hv)->backupDisk("bk-1", target);
  EXPECT_FALSE(b.isOk());
  EXPECT_NE(b.status().message().find("backing up vm 'bk-1'"), std::string::npos)
      << b.status().toString();
  EXPECT_FALSE(std::filesystem::exists(target));
  { std::ofstream(target) << "x"; }
  EXPECT_EQ((*hv)->backupDisk("bk-1", target).status().code(), Code::kFailedPrecondition);
  std::filesystem::remove(target);
  EXPECT_EQ((*hv)->backupDisk("ghost", target).status().code(), Code::kNotFound);
  EXPECT_EQ((*hv)->backupDisk("bk-1", "relative.qcow2").status().code(), Code::kInvalidArgument);
  (*hv)->destroy("bk-1");
  (*hv)->undefine("bk-1");
}

// Pins: see the file comment (real VM). Skipped without TW_BACKUP_TEST_URI.
TEST(LibvirtBackupTest, RealVmBackupHoldsTheData) {
  const char* uri = getenv("TW_BACKUP_TEST_URI");
  const char* images = getenv("TW_BACKUP_TEST_IMAGES");
  const char* port_env = getenv("TW_BACKUP_TEST_PORT");
  if (uri == nullptr || images == nullptr || port_env == nullptr)
    GTEST_SKIP() << "set TW_BACKUP_TEST_URI, TW_BACKUP_TEST_IMAGES and TW_BACKUP_TEST_PORT "
                    "(tests/integration/backup_realvm_test.sh)";
  const std::string dir = std::string(images);
  const int port = std::atoi(port_env);
  Json meta = Json::parse(std::ifstream(dir + "/tiny-db.json"));
  char tmpl[] = "/tmp/tw-backup-real.XXXXXX";
  const std::string work = mkdtemp(tmpl);
  const std::string disk = work + "/bkdb-1.qcow2";
  ASSERT_EQ(system(("qemu-img create -q -f qcow2 -b " + dir + "/" +
                    meta["disk"].get<std::string>() + " -F qcow2 " + disk)
                       .c_str()),
            0);
  auto hv = connectLibvirt(uri);
  ASSERT_TRUE(hv.isOk()) << hv.status().toString();
  DomainSpec spec;
  spec.meta.vm = "bkdb-1";
  spec.meta.tier = "db";
  spec.meta.epoch = 1;
  spec.kernel = dir + "/" + meta["kernel"].get<std::string>();
  spec.initrd = dir + "/" + meta["initrd"].get<std::string>();
  spec.cmdline = meta["cmdline"].get<std::string>() + " tw.vm=bkdb-1 tw.tier=db";
  spec.disk_path = disk;
  spec.user_network = true;
  spec.console_path = work + "/console.log";
  ASSERT_TRUE((*hv)->define(spec).isOk());
  ASSERT_TRUE((*hv)->start("bkdb-1").isOk());
  ASSERT_TRUE((*hv)->addPortForward("bkdb-1", PortForward{"127.0.0.1", port, 3306}).isOk());
  std::string answer;
  for (int i = 0; i < 150 && answer.find("TIERWARDEN-DB") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    answer = dbAsk(port, "");
  }
  ASSERT_NE(answer.find("TIERWARDEN-DB"), std::string::npos) << "the db did not answer";
  const std::string value = "v" + std::to_string(getpid()) + "x" + std::to_string(time(nullptr));
  answer = dbAsk(port, "PUT backupkey " + value + "\n");
  ASSERT_NE(answer.find("OK"), std::string::npos) << answer;

  auto check = [&](const std::string& target, const std::string& method) {
    auto t0 = std::chrono::steady_clock::now();
    Result<DiskBackup> b = (*hv)->backupDisk("bkdb-1", target, method == "snapshot-commit");
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - t0)
                        .count();
    ASSERT_TRUE(b.isOk()) << b.status().toString();
    EXPECT_EQ(b->method, method);
    EXPECT_GT(b->bytes, 0);
    std::printf("backup (%s): %lld bytes in %lld ms\n", method.c_str(),
                static_cast<long long>(b->bytes), static_cast<long long>(ms));
    EXPECT_NE(run("qemu-img check " + target + " 2>&1").find("No errors were found"),
              std::string::npos);
    const std::string info = run("qemu-img info --output=json " + target);
    EXPECT_NE(info.find("\"format\": \"qcow2\""), std::string::npos) << info;
    EXPECT_EQ(info.find("backing-filename"), std::string::npos) << "not self-contained: " << info;
    ASSERT_EQ(system(("qemu-img convert -O raw " + target + " " + target + ".raw").c_str()), 0);
    EXPECT_NE(run("grep -ac '" + value + "' " + target + ".raw"), "0\n") << "value not in the copy";
    std::filesystem::remove(target + ".raw");
    // The VM runs on, on its own disk, and keeps writing.
    auto st = (*hv)->domainState("bkdb-1");
    ASSERT_TRUE(st.isOk());
    EXPECT_EQ(st->state, DomainState::kRunning);
    EXPECT_NE(run("virsh -c '" + std::string(uri) + "' domblklist bkdb-1").find(disk),
              std::string::npos);
    EXPECT_NE(dbAsk(port, "INCR after\n").find("OK "), std::string::npos);
  };
  check(work + "/api.qcow2", "backup-api");
  check(work + "/fallback.qcow2", "snapshot-commit");
  EXPECT_FALSE(std::filesystem::exists(disk + ".tw-backup-overlay"));
  (*hv)->destroy("bkdb-1");
  (*hv)->undefine("bkdb-1");
  std::filesystem::remove_all(work);
}

}  // namespace
}  // namespace tw
