// The policy language: what parsePolicy accepts, the defaults it fills in,
// and for every refusal the exact file:line:column and the message.
#include "tw/policy.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tw/json.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {
namespace {

Result<Policy> parseOne(const std::string& yaml, const std::string& name = "p.yaml") {
  return parsePolicy({PolicyFile{name, yaml}});
}

// Asserts a refusal with kInvalidArgument at file:line:column whose message
// contains `message_part` (the whole message when `exact`).
void expectRefused(const Result<Policy>& r, const std::string& file, int line, int column,
                   const std::string& message_part, bool exact = false) {
  ASSERT_FALSE(r.isOk()) << "expected a refusal mentioning: " << message_part;
  const Status s = r.status();
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.toString();
  ASSERT_TRUE(s.where().has_value()) << s.toString();
  EXPECT_EQ(s.where()->file, file) << s.toString();
  EXPECT_EQ(s.where()->line, line) << s.toString();
  EXPECT_EQ(s.where()->column, column) << s.toString();
  if (exact) {
    EXPECT_EQ(s.message(), message_part);
  } else {
    EXPECT_NE(s.message().find(message_part), std::string::npos) << s.toString();
  }
}

void expectRefused(const std::string& yaml, int line, int column, const std::string& part,
                   bool exact = false) {
  expectRefused(parseOne(yaml), "p.yaml", line, column, part, exact);
}

// A temp directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw-policy-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ + "/" + name) << content;
  }

 private:
  std::string path_;
};

// ---------------------------------------------------------------- accepted ---

// Pins: the defaults of the language are the defaults of model.h, and a host
// without uri is not fenced while one with a uri is fenced through libvirt.
TEST(PolicyParse, MinimalPolicyGetsDefaults) {
  auto r = parseOne(R"(hosts:
  - name: h1
  - name: h2
    uri: qemu+ssh://h2/system
tiers:
  - name: web
    image: tiny-web
)");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  const Policy& p = *r;
  const ClusterSettings& c = p.settings;
  EXPECT_EQ(c.heartbeat_interval_ms, 1000);
  EXPECT_EQ(c.suspect_after_missed, 1);
  EXPECT_EQ(c.dead_after_ms, 3000);
  EXPECT_EQ(c.lease_ms, 5000);
  EXPECT_EQ(c.fence_margin_ms, 1000);
  EXPECT_EQ(c.tier_order_timeout_ms, 60000);
  EXPECT_EQ(c.n_plus_one, NPlusOneMode::kWarn);
  EXPECT_EQ(c.event_retention_ms, 7 * 24 * 3600 * 1000LL);  // issue #16 defaults
  EXPECT_EQ(c.event_retention_rows, 1000000);

  ASSERT_EQ(p.hosts.size(), 2u);
  EXPECT_EQ(p.hosts[0].role, HostRole::kActive);
  EXPECT_EQ(p.hosts[0].fence, FenceMethod::kNone);
  EXPECT_EQ(p.hosts[0].cpus, 0);
  EXPECT_EQ(p.hosts[0].memory_mib, 0);
  EXPECT_EQ(p.hosts[1].fence, FenceMethod::kLibvirt);
  EXPECT_EQ(p.hosts[1].uri, "qemu+ssh://h2/system");

  ASSERT_EQ(p.tiers.size(), 1u);
  const TierSpec& t = p.tiers[0];
  EXPECT_EQ(t.name, "web");
  EXPECT_EQ(t.image, "tiny-web");
  EXPECT_EQ(t.replicas, 1);
  EXPECT_EQ(t.vcpus, 1);
  EXPECT_EQ(t.memory_mib, 128);
  EXPECT_TRUE(t.after.empty());
  EXPECT_EQ(t.priority, 0);
  EXPECT_EQ(t.min_healthy, 0);
  EXPECT_EQ(t.placement.spread, SpreadMode::kPreferred);
  EXPECT_EQ(t.restart.restarts, 3);
  EXPECT_EQ(t.restart.window_ms, 600000);
  EXPECT_EQ(t.restart.relocations, 2);
  EXPECT_EQ(t.restart.backoff_initial_ms, 0);
  EXPECT_EQ(t.restart.backoff_max_ms, 30000);
  EXPECT_EQ(t.health.kind, HealthKind::kNone);
  EXPECT_EQ(t.health.path, "/health");
  EXPECT_EQ(t.health.expect_status, 200);
  EXPECT_EQ(t.health.expect, "");
  EXPECT_EQ(t.health.interval_ms, 2000);
  EXPECT_EQ(t.health.timeout_ms, 1000);
  EXPECT_EQ(t.health.failures, 3);
  EXPECT_EQ(t.health.grace_ms, 10000);
  EXPECT_TRUE(t.ports.empty());
  EXPECT_EQ(t.storage.kind, StorageKind::kEphemeral);
}

// Pins: every field of the language lands in its struct member.
TEST(PolicyParse, EveryFieldIsRead) {
  auto r = parseOne(R"(cluster:
  heartbeat_interval: 500ms
  suspect_after_missed: 2
  dead_after: 4s
  lease: 6s
  fence_margin: 2s
  tier_order_timeout: 2m
  n_plus_one: refuse
  event_retention: 30d
  event_retention_rows: 50000
hosts:
  - name: h1
    uri: test:///default
    role: active
    capacity: { cpus: 8, memory: 16GiB }
  - name: h2
    role: spare
    fence: { agent: ipmi }
tiers:
  - name: db
    image: tiny-db
    replicas: 2
    vcpus: 2
    memory: 1GiB
    priority: 5
    min_healthy: 1
    placement: { spread: required, preferred_hosts: [h1], required_hosts: [h1, h2] }
    restart: { restarts: 5, window: 1h, relocations: 1, backoff: 1s, backoff_max: 1m }
    health: { type: http, port: 8080, path: /ok, expect_status: 204, interval: 5s,
              timeout: 5s, failures: 2, grace: 0s }
    ports: [ { name: mysql, port: 3306 }, { name: dns, port: 53, protocol: udp } ]
    storage: { type: shared, path: /srv/tw/db }
  - name: web
    image: tiny-web_2.0
    replicas: 0
    after: [db]
)");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  const Policy& p = *r;
  EXPECT_EQ(p.settings.heartbeat_interval_ms, 500);
  EXPECT_EQ(p.settings.suspect_after_missed, 2);
  EXPECT_EQ(p.settings.dead_after_ms, 4000);
  EXPECT_EQ(p.settings.lease_ms, 6000);
  EXPECT_EQ(p.settings.fence_margin_ms, 2000);
  EXPECT_EQ(p.settings.tier_order_timeout_ms, 120000);
  EXPECT_EQ(p.settings.n_plus_one, NPlusOneMode::kRefuse);
  EXPECT_EQ(p.settings.event_retention_ms, 30 * 86400000LL);
  EXPECT_EQ(p.settings.event_retention_rows, 50000);

  ASSERT_EQ(p.hosts.size(), 2u);
  EXPECT_EQ(p.hosts[0].cpus, 8);
  EXPECT_EQ(p.hosts[0].memory_mib, 16384);
  EXPECT_EQ(p.hosts[0].fence, FenceMethod::kLibvirt);
  EXPECT_EQ(p.hosts[1].role, HostRole::kSpare);
  EXPECT_EQ(p.hosts[1].fence, FenceMethod::kAgent);
  EXPECT_EQ(p.hosts[1].fence_agent, "ipmi");
  EXPECT_EQ(p.hosts[1].fence_agent_at.str(), "p.yaml:18:21");

  ASSERT_EQ(p.tiers.size(), 2u);
  const TierSpec& db = p.tiers[0];
  EXPECT_EQ(db.replicas, 2);
  EXPECT_EQ(db.vcpus, 2);
  EXPECT_EQ(db.memory_mib, 1024);
  EXPECT_EQ(db.priority, 5);
  EXPECT_EQ(db.min_healthy, 1);
  EXPECT_EQ(db.placement.spread, SpreadMode::kRequired);
  EXPECT_EQ(db.placement.preferred_hosts, std::vector<std::string>{"h1"});
  EXPECT_EQ(db.placement.required_hosts, (std::vector<std::string>{"h1", "h2"}));
  EXPECT_EQ(db.restart.restarts, 5);
  EXPECT_EQ(db.restart.window_ms, 3600000);
  EXPECT_EQ(db.restart.relocations, 1);
  EXPECT_EQ(db.restart.backoff_initial_ms, 1000);
  EXPECT_EQ(db.restart.backoff_max_ms, 60000);
  EXPECT_EQ(db.health.kind, HealthKind::kHttp);
  EXPECT_EQ(db.health.port, 8080);
  EXPECT_EQ(db.health.path, "/ok");
  EXPECT_EQ(db.health.expect_status, 204);
  EXPECT_EQ(db.health.interval_ms, 5000);
  EXPECT_EQ(db.health.timeout_ms, 5000);
  EXPECT_EQ(db.health.failures, 2);
  EXPECT_EQ(db.health.grace_ms, 0);
  ASSERT_EQ(db.ports.size(), 2u);
  EXPECT_EQ(db.ports[0].name, "mysql");
  EXPECT_EQ(db.ports[0].port, 3306);
  EXPECT_EQ(db.ports[0].protocol, "tcp");
  EXPECT_EQ(db.ports[1].protocol, "udp");
  EXPECT_EQ(db.storage.kind, StorageKind::kShared);
  EXPECT_EQ(db.storage.path, "/srv/tw/db");
  EXPECT_EQ(p.tiers[1].image, "tiny-web_2.0");
  EXPECT_EQ(p.tiers[1].replicas, 0);
  EXPECT_EQ(p.tiers[1].after, std::vector<std::string>{"db"});
}

// Pins: a tcp check reads `expect` as bytes (YAML escapes included) up to
// 256 of them.
TEST(PolicyParse, TcpCheckExpectsAGreeting) {
  auto r = parseOne(R"(tiers:
  - name: db
    image: tiny-db
    health: { type: tcp, port: 3306, expect: "TIERWARDEN-DB" }
  - name: full
    image: full-db
    health: { type: tcp, port: 3306, expect: "\0MariaDB\r\n" }
  - name: long
    image: x
    health: { type: tcp, port: 1, expect: )" +
                    std::string(256, 'a') + "}\n");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->tiers[0].health.kind, HealthKind::kTcp);
  EXPECT_EQ(r->tiers[0].health.expect, "TIERWARDEN-DB");
  EXPECT_EQ(r->tiers[1].health.expect, std::string("\0MariaDB\r\n", 10));
  EXPECT_EQ(r->tiers[2].health.expect, std::string(256, 'a'));
}

// Pins: TierSpec::where and HostSpec::where are the 1-based position of the
// item's mapping, with the file's name.
TEST(PolicyParse, ItemsRememberWhereTheyWereDeclared) {
  auto r = parseOne(R"(hosts:
  - name: h1
tiers:
  - image: tiny-db
    name: db
)",
                    "site.yaml");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->hosts[0].where.str(), "site.yaml:2:5");
  EXPECT_EQ(r->tiers[0].where.str(), "site.yaml:4:5");
}

// Pins: an empty file, a comments-only file and empty sections are a valid
// (empty) policy.
TEST(PolicyParse, EmptyInputsAreFine) {
  for (const char* yaml : {"", "# nothing yet\n", "---\n", "hosts:\ntiers:\ncluster:\n"}) {
    auto r = parseOne(yaml);
    ASSERT_TRUE(r.isOk()) << yaml << ": " << r.status().toString();
    EXPECT_TRUE(r->tiers.empty());
    EXPECT_TRUE(r->hosts.empty());
  }
}

// Pins: the duration syntax (integer or decimal + ms|s|m|h) and its refusals.
TEST(PolicyParse, Durations) {
  struct Case {
    const char* text;
    Millis ms;
  };
  for (Case c : {Case{"1500ms", 1500}, Case{"3s", 3000}, Case{"2m", 120000}, Case{"1h", 3600000},
                 Case{"1.5s", 1500}, Case{"0.25m", 15000}, Case{"0s", 0}, Case{"007s", 7000}}) {
    auto r = parseOne(std::string("tiers:\n  - name: a\n    image: i\n    restart: { backoff: ") +
                      c.text + ", backoff_max: 2h }\n");
    ASSERT_TRUE(r.isOk()) << c.text << ": " << r.status().toString();
    EXPECT_EQ(r->tiers[0].restart.backoff_initial_ms, c.ms) << c.text;
  }
  expectRefused("cluster:\n  lease: 5\n", 2, 10,
                "expected a duration like 1500ms, 3s, 2m or 1h for 'lease', got '5'", true);
  expectRefused("cluster:\n  lease: 3x\n", 2, 10, "got '3x'");
  expectRefused("cluster:\n  lease: 1.0005s\n", 2, 10,
                "'lease' must be a whole number of milliseconds");
  expectRefused("cluster:\n  fence_margin: -1s\n", 2, 17, "'fence_margin' must not be negative");
  expectRefused("cluster:\n  heartbeat_interval: 0s\n", 2, 23,
                "'heartbeat_interval' must be longer than zero");
  expectRefused("cluster:\n  lease: [5s]\n", 2, 10, "got a list");
}

// Pins: the size syntax (MiB/GiB/TiB, decimals, a bare integer = MiB).
TEST(PolicyParse, Sizes) {
  struct Case {
    const char* text;
    int mib;
  };
  for (Case c : {Case{"512MiB", 512}, Case{"4GiB", 4096}, Case{"1.5GiB", 1536}, Case{"2048", 2048},
                 Case{"64MiB", 64}}) {
    auto r =
        parseOne(std::string("tiers:\n  - name: a\n    image: i\n    memory: ") + c.text + "\n");
    ASSERT_TRUE(r.isOk()) << c.text << ": " << r.status().toString();
    EXPECT_EQ(r->tiers[0].memory_mib, c.mib) << c.text;
  }
  const std::string head = "tiers:\n  - name: a\n    image: i\n    memory: ";
  expectRefused(head + "512MB\n", 4, 13,
                "expected a size like 512MiB or 4GiB (or an integer number of MiB) for 'memory', "
                "got '512MB'",
                true);
  expectRefused(head + "32MiB\n", 4, 13, "'memory' must be at least 64MiB, got '32MiB'", true);
  expectRefused(head + "0.5MiB\n", 4, 13, "'memory' must be a whole number of MiB");
  expectRefused(head + "-1GiB\n", 4, 13, "'memory' must not be negative");
  expectRefused(head + "5TiB\n", 4, 13, "'memory' must be at most 4TiB");
}

// Pins: tiers and hosts keep declaration order across files, in the order the
// files are given, and each item names its own file.
TEST(PolicyParse, MultipleFilesKeepDeclarationOrder) {
  auto r = parsePolicy({
      PolicyFile{"b.yaml", "tiers:\n  - name: web\n    image: w\n    after: [db]\n"},
      PolicyFile{"a.yaml", "hosts:\n  - name: h1\ntiers:\n  - name: db\n    image: d\n"},
      PolicyFile{"c.yaml", "cluster:\n  n_plus_one: off\n"},
  });
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  ASSERT_EQ(r->tiers.size(), 2u);
  EXPECT_EQ(r->tiers[0].name, "web");
  EXPECT_EQ(r->tiers[0].where.file, "b.yaml");
  EXPECT_EQ(r->tiers[1].name, "db");
  EXPECT_EQ(r->tiers[1].where.str(), "a.yaml:4:5");
  EXPECT_EQ(r->settings.n_plus_one, NPlusOneMode::kOff);
}

// Pins: tiersInOrder on a parsed policy puts `after:` first, then higher
// priority, then declaration order.
TEST(PolicyParse, TiersInOrderFollowsAfterAndPriority) {
  auto r = parseOne(R"(tiers:
  - { name: balancer, image: b, after: [apache] }
  - { name: apache, image: a, after: [mysql, cache] }
  - { name: cache, image: c }
  - { name: mysql, image: m, priority: 10 }
  - { name: logs, image: l }
)");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  std::vector<std::string> order;
  for (const TierSpec* t : r->tiersInOrder()) order.push_back(t->name);
  EXPECT_EQ(order, (std::vector<std::string>{"mysql", "cache", "apache", "balancer", "logs"}));
}

// Pins: the shipped demo policy parses and declares what the demo scripts expect.
TEST(PolicyFilesOnDisk, DemoPolicyParses) {
  auto files = readPolicyFiles(TW_SOURCE_DIR "/policies/demo.yaml");
  ASSERT_TRUE(files.isOk()) << files.status().toString();
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].name, "demo.yaml");
  auto r = parsePolicy(*files);
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  ASSERT_EQ(r->hosts.size(), 3u);
  EXPECT_EQ(r->hosts[2].name, "h3");
  EXPECT_EQ(r->hosts[2].role, HostRole::kSpare);
  std::vector<std::string> order;
  for (const TierSpec* t : r->tiersInOrder()) order.push_back(t->name);
  EXPECT_EQ(order, (std::vector<std::string>{"mysql", "apache", "balancer"}));
  const TierSpec* mysql = r->findTier("mysql");
  ASSERT_NE(mysql, nullptr);
  EXPECT_EQ(mysql->replicas, 2);
  EXPECT_EQ(mysql->image, "tiny-db");
  EXPECT_EQ(mysql->health.kind, HealthKind::kTcp);
  EXPECT_EQ(mysql->health.port, 3306);
  EXPECT_EQ(mysql->health.expect, "TIERWARDEN-DB");  // what images/init/db-conn greets with
  const TierSpec* apache = r->findTier("apache");
  ASSERT_NE(apache, nullptr);
  EXPECT_EQ(apache->health.kind, HealthKind::kHttp);
  EXPECT_EQ(apache->health.path, "/health");
  EXPECT_EQ(r->settings.n_plus_one, NPlusOneMode::kWarn);
}

// Pins: every example policy parses on its own.
TEST(PolicyFilesOnDisk, EveryExampleParses) {
  auto files = readPolicyFiles(TW_SOURCE_DIR "/policies/examples");
  ASSERT_TRUE(files.isOk()) << files.status().toString();
  EXPECT_GE(files->size(), 2u);
  for (const auto& f : *files) {
    auto r = parsePolicy({f});
    EXPECT_TRUE(r.isOk()) << f.name << ": " << r.status().toString();
    if (r.isOk()) {
      EXPECT_FALSE(r->tiers.empty()) << f.name;
    }
  }
}

// ---------------------------------------------------------------- refused ---

// Pins: the whole refusal text for an unknown key lists what was expected.
TEST(PolicyRefused, UnknownTierKey) {
  expectRefused(R"(tiers:
  - name: web
    image: tiny-web
    replica: 2
)",
                4, 5,
                "unknown key 'replica' in tier 'web' (expected one of: name, image, replicas, "
                "vcpus, memory, after, priority, min_healthy, placement, restart, health, "
                "ports, storage, backup, address)",
                true);
}

// Pins: unknown keys are refused at every level, naming their place.
TEST(PolicyRefused, UnknownKeysEverywhere) {
  expectRefused("tier:\n  - name: web\n", 1, 1, "unknown key 'tier' in the top level");
  expectRefused("cluster:\n  heartbeat: 1s\n", 2, 3, "unknown key 'heartbeat' in cluster");
  expectRefused("hosts:\n  - name: h1\n    cpus: 4\n", 3, 5, "unknown key 'cpus' in host 'h1'");
  expectRefused("hosts:\n  - name: h1\n    capacity: { cpu: 4 }\n", 3, 17,
                "unknown key 'cpu' in capacity of host 'h1'");
  expectRefused("tiers:\n  - image: x\n    nme: web\n", 3, 5, "unknown key 'nme' in tier #1");
  expectRefused("tiers:\n  - name: web\n    image: x\n    health: { kind: tcp }\n", 4, 15,
                "unknown key 'kind' in health of tier 'web'");
  expectRefused("tiers:\n  - name: web\n    image: x\n    ports: [ { nam: http } ]\n", 4, 16,
                "unknown key 'nam' in a port of tier 'web'");
}

// Pins: a key given twice in one mapping is refused at the second one.
TEST(PolicyRefused, DuplicateYamlKey) {
  expectRefused("tiers:\n  - name: web\n    image: x\n    replicas: 1\n    replicas: 2\n", 5, 5,
                "duplicate key 'replicas' in tier 'web' (first at line 4)", true);
}

// Pins: a wrong scalar type names the field and what was given.
TEST(PolicyRefused, WrongTypes) {
  const std::string head = "tiers:\n  - name: web\n    image: x\n";
  expectRefused(head + "    replicas: two\n", 4, 15,
                "expected an integer for 'replicas', got 'two'", true);
  expectRefused(head + "    replicas: 1.5\n", 4, 15, "got '1.5'");
  // Long values are shortened in messages.
  expectRefused(head + "    replicas: " + std::string(100, '7') + "x\n", 4, 15,
                "expected an integer for 'replicas', got '" + std::string(57, '7') + "...'", true);
  expectRefused(head + "    replicas:\n", 4, 5, "expected an integer for 'replicas', got nothing",
                true);
  expectRefused(head + "    vcpus: [1]\n", 4, 12, "expected an integer for 'vcpus', got a list",
                true);
  expectRefused(head + "    after: db\n", 4, 12, "expected a list for 'after', got 'db'", true);
  expectRefused(head + "    health:\n      - tcp\n", 5, 7,
                "expected a mapping for 'health', got a list", true);
  expectRefused(head + "    health: { type: tpc, port: 1 }\n", 4, 21,
                "expected one of none, tcp, http for 'health.type', got 'tpc'", true);
  expectRefused("hosts:\n  - name: h1\n    role: standby\n", 3, 11,
                "expected one of active, spare for 'role', got 'standby'", true);
  expectRefused("hosts:\n  - name: h1\n    uri: h1.example\n", 3, 10, "expected a libvirt URI");
}

// Pins: the top level must be a mapping; hosts and tiers must be lists of
// mappings.
TEST(PolicyRefused, WrongShapes) {
  expectRefused("- name: web\n", 1, 1,
                "expected a mapping with cluster, hosts or tiers at the top level, got a list",
                true);
  expectRefused("just text\n", 1, 1, "at the top level, got 'just text'");
  expectRefused("tiers:\n  name: web\n", 2, 3, "expected a list for 'tiers', got a mapping", true);
  expectRefused("hosts: h1\n", 1, 8, "expected a list for 'hosts', got 'h1'", true);
  expectRefused("tiers:\n  - web\n", 2, 5, "expected a mapping for tier #1");
  expectRefused("cluster: [1s]\n", 1, 10, "expected a mapping for 'cluster', got a list", true);
}

// Pins: YAML syntax errors carry the parser's position, made 1-based.
TEST(PolicyRefused, YamlSyntaxError) {
  expectRefused("tiers:\n  - name: web\n    image: [tiny\n", 4, 1, "YAML syntax error: ");
  expectRefused("a: 1\n b: 2\n", 2, 3, "YAML syntax error: illegal map value", true);
}

// Pins: a stray top-level ',' is refused at once; yaml-cpp 0.7's LoadAll
// would loop forever on it (jbeder/yaml-cpp#1040), and before the guard this
// test hung and ate memory.
TEST(PolicyRefused, StrayCommaDoesNotHang) {
  expectRefused(",\n", 1, 1, "YAML syntax error: unexpected ','", true);
  expectRefused("tiers: []\n---\n# next\n  , hosts: []\n", 4, 3,
                "YAML syntax error: unexpected ','", true);
  expectRefused("&anchor ,\n", 1, 9, "YAML syntax error: unexpected ','", true);
}

// Pins: several YAML documents in one file are read as one policy fragment.
TEST(PolicyParse, SeveralDocumentsInOneFile) {
  auto r = parseOne("hosts: [{ name: h1 }]\n---\ntiers: [{ name: web, image: w }]\n...\n");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->hosts.size(), 1u);
  EXPECT_EQ(r->tiers.size(), 1u);
}

// Pins: names, images and required keys.
TEST(PolicyRefused, NamesAndRequiredKeys) {
  expectRefused("tiers:\n  - image: x\n", 2, 5, "tier #1 has no 'name'", true);
  expectRefused("tiers:\n  - name: web\n", 2, 5, "tier 'web' has no 'image'", true);
  expectRefused("hosts:\n  - uri: test:///default\n", 2, 5, "host #1 has no 'name'", true);
  expectRefused("tiers:\n  - name: Web\n    image: x\n", 2, 11,
                "expected a name for 'name' (a lowercase letter, then up to 62 lowercase "
                "letters, digits or '-'), got 'Web'",
                true);
  expectRefused("tiers:\n  - name: 1web\n    image: x\n", 2, 11, "got '1web'");
  expectRefused("tiers:\n  - name: " + std::string(64, 'a') + "\n    image: x\n", 2, 11,
                "expected a name for 'name'");
  expectRefused("tiers:\n  - name: web\n    image: Tiny/Web\n", 3, 12,
                "expected an image name for 'image'");
  expectRefused("tiers:\n  - name: web\n    image: x\n    after: [Db]\n", 4, 13,
                "expected a name for an item of 'after'");
}

// Pins: impossible numbers are refused with the allowed range.
TEST(PolicyRefused, ImpossibleValues) {
  const std::string head = "tiers:\n  - name: web\n    image: x\n";
  expectRefused(head + "    replicas: -1\n", 4, 15, "'replicas' must be between 0 and 1000, got -1",
                true);
  expectRefused(head + "    vcpus: 0\n", 4, 12, "'vcpus' must be between 1 and 64, got 0", true);
  expectRefused(head + "    vcpus: 65\n", 4, 12, "'vcpus' must be between 1 and 64, got 65");
  expectRefused(head + "    restart: { window: 0s }\n", 4, 24,
                "'restart.window' must be longer than zero");
  expectRefused(head + "    restart: { restarts: -1 }\n", 4, 26, "'restart.restarts' must be");
  expectRefused(head + "    health: { type: tcp, port: 1, failures: 0 }\n", 4, 45,
                "'health.failures' must be between 1 and 1000, got 0");
  expectRefused(head + "    health: { type: http, port: 80, expect_status: 999 }\n", 4, 52,
                "'health.expect_status' must be between 100 and 599");
  expectRefused("cluster:\n  suspect_after_missed: 0\n", 2, 25,
                "'suspect_after_missed' must be between 1 and 1000, got 0");
  expectRefused("hosts:\n  - name: h1\n    capacity: { cpus: 0 }\n", 3, 23,
                "'capacity.cpus' must be between 1 and 4096, got 0");
}

// Pins: min_healthy may not exceed replicas.
TEST(PolicyRefused, MinHealthyAboveReplicas) {
  expectRefused("tiers:\n  - name: web\n    image: x\n    replicas: 2\n    min_healthy: 3\n", 5, 18,
                "'min_healthy' (3) of tier 'web' must not exceed 'replicas' (2)", true);
}

// Pins: a health check that probes needs a port in 1..65535; http-only keys
// are refused for tcp; the timeout may not exceed the interval.
TEST(PolicyRefused, HealthChecks) {
  const std::string head = "tiers:\n  - name: db\n    image: x\n";
  expectRefused(head + "    health: { type: tcp }\n", 4, 21,
                "health type tcp of tier 'db' needs a port", true);
  expectRefused(head + "    health:\n      type: http\n      path: /h\n", 5, 13,
                "health type http of tier 'db' needs a port", true);
  expectRefused(head + "    health: { type: tcp, port: 0 }\n", 4, 32,
                "'health.port' must be between 1 and 65535, got 0", true);
  expectRefused(head + "    health: { type: tcp, port: 70000 }\n", 4, 32, "got 70000");
  expectRefused(head + "    health: { type: tcp, port: 1, path: /x }\n", 4, 41,
                "'health.path' of tier 'db' is only used with type http (type is tcp)", true);
  expectRefused(head + "    health: { port: 80 }\n", 4, 21,
                "'health.port' of tier 'db' is only used with type tcp or http");
  expectRefused(head + "    health: { type: http, port: 80, path: health }\n", 4, 43,
                "'health.path' must start with '/'");
  expectRefused(head + "    health: { type: tcp, port: 1, interval: 1s, timeout: 2s }\n", 4, 58,
                "'health.timeout' (2s) of tier 'db' must not exceed 'health.interval' (1s)", true);
  // Only the interval was written: the refusal points at it.
  expectRefused(head + "    health: { type: tcp, port: 1, interval: 500ms }\n", 4, 45,
                "'health.timeout' (1s) of tier 'db' must not exceed 'health.interval' (500ms)");
}

// Pins: `expect` is tcp only, a non-empty string of at most 256 bytes.
TEST(PolicyRefused, HealthExpect) {
  const std::string head = "tiers:\n  - name: db\n    image: x\n";
  expectRefused(head + "    health: { type: http, port: 80, expect: MariaDB }\n", 4, 45,
                "'health.expect' of tier 'db' is only used with type tcp (type is http)", true);
  expectRefused(head + "    health: { expect: MariaDB }\n", 4, 23,
                "'health.expect' of tier 'db' is only used with type tcp (type is none)", true);
  expectRefused(head + "    health: { type: tcp, port: 1, expect: \"\" }\n", 4, 43,
                "'health.expect' must not be empty (leave it out to accept any open connection)",
                true);
  expectRefused(head + "    health: { type: tcp, port: 1, expect: [MariaDB] }\n", 4, 43,
                "expected a string for 'health.expect', got a list", true);
  expectRefused(head + "    health: { type: tcp, port: 1, expect: { a: b } }\n", 4, 43,
                "expected a string for 'health.expect', got a mapping", true);
  expectRefused(head + "    health:\n      type: tcp\n      port: 1\n      expect:\n", 7, 7,
                "expected a string for 'health.expect', got nothing", true);
  expectRefused(
      head + "    health: { type: tcp, port: 1, expect: " + std::string(257, 'a') + " }\n", 4, 43,
      "'health.expect' must be at most 256 bytes, got 257", true);
}

// Pins: service ports are in range and unique per tier (by port/protocol and by name).
TEST(PolicyRefused, ServicePorts) {
  const std::string head = "tiers:\n  - name: db\n    image: x\n    ports:\n";
  expectRefused(head + "      - { name: a, port: 65536 }\n", 5, 26,
                "'ports.port' must be between 1 and 65535, got 65536", true);
  expectRefused(head + "      - { name: a, port: 3306 }\n      - { name: b, port: 3306 }\n", 6, 26,
                "duplicate port 3306/tcp in tier 'db' (first at p.yaml:5:26)", true);
  expectRefused(head + "      - { name: a, port: 53 }\n      - { name: a, port: 54 }\n", 6, 17,
                "duplicate port name 'a' in tier 'db'");
  expectRefused(head + "      - { name: a }\n", 5, 9, "port 'a' of tier 'db' has no 'port'", true);
  expectRefused(head + "      - { name: a, port: 1, protocol: sctp }\n", 5, 39,
                "expected one of tcp, udp for 'ports.protocol', got 'sctp'", true);
  // The same number over udp and tcp is two ports.
  EXPECT_TRUE(parseOne(head + "      - { name: a, port: 53 }\n"
                              "      - { name: b, port: 53, protocol: udp }\n")
                  .isOk());
}

// Pins: shared storage needs an absolute path; ephemeral storage takes none.
TEST(PolicyRefused, Storage) {
  const std::string head = "tiers:\n  - name: db\n    image: x\n";
  expectRefused(head + "    storage: { type: shared }\n", 4, 14,
                "shared storage of tier 'db' needs an absolute 'path'");
  expectRefused(head + "    storage: { type: shared, path: srv/db }\n", 4, 36,
                "shared storage of tier 'db' needs an absolute 'path' (a directory every host "
                "sees) or a 'pool', got 'srv/db'",
                true);
  expectRefused(head + "    storage: { path: /srv/db }\n", 4, 22,
                "'storage.path' of tier 'db' is only used with type: shared", true);
  expectRefused(head + "    storage: { pool: nfs-db }\n", 4, 22,
                "'storage.pool' of tier 'db' is only used with type: shared", true);
  expectRefused(head + "    storage: { type: shared, path: /srv/db, pool: nfs-db }\n", 4, 51,
                "shared storage of tier 'db' takes a 'path' or a 'pool', not both", true);
  expectRefused(head + "    storage: { type: shared, pool: \"../x\" }\n", 4, 36,
                "'storage.pool' of tier 'db' must be a libvirt pool name (letters, digits, '_', "
                "'.', '-'; at most 64), got '../x'",
                true);
}

// Pins: a shared tier's backup spec is read (keep defaults to 24, a trailing
// '/' of `to` goes) and crosses the wire in the assignment and the stored tier.
TEST(PolicyTest, Backup) {
  const std::string yaml =
      "tiers:\n  - name: db\n    image: x\n    storage: { type: shared, path: /srv/db }\n"
      "    backup: { every: 1h, to: /srv/backups/ }\n";
  Result<Policy> p = parseOne(yaml);
  ASSERT_TRUE(p.isOk()) << p.status().toString();
  const BackupSpec& b = p->tiers[0].backup;
  EXPECT_TRUE(b.enabled());
  EXPECT_EQ(b.every_ms, 3600000);
  EXPECT_EQ(b.keep, 24);
  EXPECT_EQ(b.to, "/srv/backups");
  Json j = p->tiers[0];
  EXPECT_EQ(j["backup"]["every_ms"], 3600000);
  Assignment a;
  a.vm = "db-1";
  a.backup = b;
  a.backup_request = 3;
  Assignment back = Json(a).get<Assignment>();
  EXPECT_EQ(back.backup, b);
  EXPECT_EQ(back.backup_request, 3);
  Json no_backup = TierSpec{};
  EXPECT_FALSE(no_backup.contains("backup"));
}

// Pins: every backup refusal, with file, line and column.
TEST(PolicyRefused, Backup) {
  const std::string head = "tiers:\n  - name: db\n    image: x\n";
  const std::string shared = head + "    storage: { type: shared, path: /srv/db }\n";
  expectRefused(shared + "    backup: { every: soon, to: /b }\n", 5, 22,
                "expected a duration like 1500ms, 3s, 2m or 1h for 'backup.every', got 'soon'");
  expectRefused(shared + "    backup: { every: 10s, to: /b }\n", 5, 22,
                "'backup.every' of tier 'db' must be at least 1m, got '10s'", true);
  expectRefused(shared + "    backup: { every: 1h, keep: 0, to: /b }\n", 5, 32,
                "'backup.keep' must be between 1 and 10000, got 0", true);
  expectRefused(shared + "    backup: { every: 1h, to: backups }\n", 5, 30,
                "'backup.to' of tier 'db' must be an absolute directory path (a DR place every "
                "host sees), got 'backups'",
                true);
  expectRefused(shared + "    backup: { every: 1h, to: /srv/../etc }\n", 5, 30,
                "'backup.to' of tier 'db' must be an absolute directory path");
  expectRefused(shared + "    backup: { to: /b }\n", 5, 13, "'backup' of tier 'db' has no 'every'",
                true);
  expectRefused(shared + "    backup: { every: 1h }\n", 5, 13, "'backup' of tier 'db' has no 'to'",
                true);
  expectRefused(shared + "    backup: { every: 1h, to: /b, when: now }\n", 5, 34,
                "unknown key 'when' in backup of tier 'db'");
  expectRefused(head + "    backup: { every: 1h, to: /b }\n", 4, 13,
                "'backup' of tier 'db' needs shared storage (storage: { type: shared, ... }): an "
                "ephemeral disk is rebuilt from the image and holds nothing to back up",
                true);
}

// Pins: a shared tier may name a libvirt storage pool instead of a path; the
// pool crosses the wire in the assignment's storage.
TEST(PolicyTest, SharedStorageInAPool) {
  const std::string yaml = "tiers:\n  - name: db\n    image: x\n    storage: { type: shared, pool: nfs-db }\n";
  Result<Policy> p = parseOne(yaml);
  ASSERT_TRUE(p.isOk()) << p.status().toString();
  EXPECT_EQ(p->tiers[0].storage.kind, StorageKind::kShared);
  EXPECT_EQ(p->tiers[0].storage.pool, "nfs-db");
  EXPECT_TRUE(p->tiers[0].storage.path.empty());
  Json j = p->tiers[0].storage;
  EXPECT_EQ(j["pool"], "nfs-db");
  StorageSpec back = j.get<StorageSpec>();
  EXPECT_EQ(back.pool, "nfs-db");
  Json path_only = StorageSpec{StorageKind::kShared, "/srv/db", ""};
  EXPECT_FALSE(path_only.contains("pool"));
}

// Pins: fencing settings are consistent with the host's uri; a fence agent
// is named by a name, in a mapping with `agent` only.
TEST(PolicyRefused, Fencing) {
  expectRefused("hosts:\n  - name: h1\n    fence: libvirt\n", 3, 12,
                "fence: libvirt needs a 'uri' for host 'h1'", true);
  expectRefused("hosts:\n  - name: h1\n    fence: ipmi\n", 3, 12,
                "expected none, libvirt or { agent: NAME } for 'fence', got 'ipmi'", true);
  expectRefused("hosts:\n  - name: h1\n    fence: { agent: IPMI }\n", 3, 21,
                "expected a name for 'fence.agent'");
  expectRefused("hosts:\n  - name: h1\n    fence: { agent: \"ipmi; reboot\" }\n", 3, 21,
                "expected a name for 'fence.agent'");
  expectRefused("hosts:\n  - name: h1\n    fence: { command: ipmitool }\n", 3, 14,
                "unknown key 'command' in fence of host 'h1' (expected one of: agent)", true);
  expectRefused("hosts:\n  - name: h1\n    fence: {}\n", 3, 12,
                "fence of host 'h1' names no agent: write fence: { agent: NAME }", true);
}

// Pins (the security fix): a policy cannot carry a fence command any more.
// The old syntax is refused where it is written, saying what to do instead.
TEST(PolicyRefused, FenceCommandIsGone) {
  const std::string instead =
      "is no longer supported: a policy cannot carry commands. Define the command as a fence "
      "agent in the controller's configuration (--fence-agents FILE, see docs/policy.md) and "
      "name it here with fence: { agent: NAME }";
  expectRefused("hosts:\n  - name: h1\n    fence: command\n", 3, 12,
                "fence: command (of host 'h1') " + instead, true);
  expectRefused("hosts:\n  - name: h1\n    fence: command\n    fence_command: \"ipmitool -P x\"\n",
                4, 5, "'fence_command' (of host 'h1') " + instead, true);
  expectRefused("hosts:\n  - name: h1\n    uri: test:///default\n    fence_command: \"off\"\n", 4,
                5, "'fence_command' (of host 'h1') " + instead, true);
}

// Pins: only for a policy stored before fence agents (the controller's
// recover), the old syntax is read as the default fence with the command
// dropped.
TEST(PolicyParse, LegacyFenceCommandWhenAsked) {
  auto r = parsePolicy({{"p.yaml",
                         "hosts:\n  - { name: h1, fence: command, fence_command: \"x -P s\" }\n"
                         "  - { name: h2, uri: \"qemu+tcp://h2/system\", fence: command, "
                         "fence_command: \"y\" }\n  - { name: h3, fence: none }\n"}},
                       PolicyParseOptions{.legacy_fence_command = true});
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->hosts[0].fence, FenceMethod::kNone);
  EXPECT_TRUE(r->hosts[0].fence_legacy_command);
  EXPECT_EQ(r->hosts[1].fence, FenceMethod::kLibvirt);
  EXPECT_TRUE(r->hosts[1].fence_legacy_command);
  EXPECT_FALSE(r->hosts[2].fence_legacy_command);
}

// Pins: dead_after and lease must be longer than the heartbeat interval, and
// the refusal points at what the operator wrote.
TEST(PolicyRefused, ClusterTimings) {
  expectRefused("cluster:\n  heartbeat_interval: 1s\n  dead_after: 1s\n", 3, 15,
                "'dead_after' (1s) must be longer than 'heartbeat_interval' (1s)", true);
  expectRefused("cluster:\n  heartbeat_interval: 10s\n", 2, 23,
                "'dead_after' (3s) must be longer than 'heartbeat_interval' (10s)", true);
  expectRefused("cluster:\n  heartbeat_interval: 5s\n  dead_after: 6s\n", 2, 23,
                "'lease' (5s) must be longer than 'heartbeat_interval' (5s)", true);
  expectRefused("cluster:\n  n_plus_one: maybe\n", 2, 15,
                "expected one of refuse, warn, off for 'n_plus_one', got 'maybe'", true);
}

// Pins: restart back-off cap may not be below the first back-off.
TEST(PolicyRefused, BackoffMaxBelowBackoff) {
  expectRefused("tiers:\n  - name: db\n    image: x\n    restart: { backoff: 1m }\n", 4, 25,
                "'restart.backoff_max' (30s) must not be shorter than 'restart.backoff' (1m)",
                true);
}

// Pins: duplicate tier names, in one file and across files, point at both.
TEST(PolicyRefused, DuplicateTierNames) {
  expectRefused("tiers:\n  - name: web\n    image: x\n  - name: web\n    image: y\n", 4, 11,
                "duplicate tier name 'web' (first declared at p.yaml:2:5)", true);
  auto r = parsePolicy({PolicyFile{"a.yaml", "\n\ntiers:\n  - name: web\n    image: x\n"},
                        PolicyFile{"b.yaml", "tiers:\n  - name: web\n    image: y\n"}});
  expectRefused(r, "b.yaml", 2, 11, "duplicate tier name 'web' (first declared at a.yaml:4:5)",
                true);
}

// Pins: duplicate host names across files.
TEST(PolicyRefused, DuplicateHostNames) {
  auto r = parsePolicy({PolicyFile{"a.yaml", "hosts:\n  - name: h1\n"},
                        PolicyFile{"b.yaml", "hosts:\n  - { name: h2 }\n  - { name: h1 }\n"}});
  expectRefused(r, "b.yaml", 3, 13, "duplicate host name 'h1' (first declared at a.yaml:2:5)",
                true);
}

// Pins: `cluster:` may be declared in one file only.
TEST(PolicyRefused, ClusterInTwoFiles) {
  auto r = parsePolicy({PolicyFile{"a.yaml", "cluster:\n  lease: 6s\n"},
                        PolicyFile{"b.yaml", "tiers: []\ncluster: {}\n"}});
  expectRefused(r, "b.yaml", 2, 1, "'cluster' may be declared only once (first at a.yaml:1:1)",
                true);
}

// Pins: the same file name twice in one parse is refused.
TEST(PolicyRefused, SameFileTwice) {
  auto r = parsePolicy({PolicyFile{"a.yaml", ""}, PolicyFile{"a.yaml", ""}});
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().where()->file, "a.yaml");
}

// Pins: `after:` must name declared tiers, each once, possibly in another file.
TEST(PolicyRefused, AfterReferences) {
  expectRefused(
      "tiers:\n  - name: db\n    image: x\n  - name: web\n    image: y\n"
      "    after: [db, dbb]\n",
      6, 17, "tier 'web' lists unknown tier 'dbb' in after", true);
  expectRefused(
      "tiers:\n  - name: db\n    image: x\n  - name: web\n    image: y\n"
      "    after: [db, db]\n",
      6, 17, "'db' is listed twice in 'after'", true);
  auto ok = parsePolicy({PolicyFile{"a.yaml", "tiers:\n  - { name: web, image: w, after: [db] }\n"},
                         PolicyFile{"b.yaml", "tiers:\n  - { name: db, image: d }\n"}});
  EXPECT_TRUE(ok.isOk()) << ok.status().toString();
}

// Pins: cycles in `after:` are refused with the path, at the edge closing it.
TEST(PolicyRefused, AfterCycles) {
  expectRefused(R"(tiers:
  - name: db
    image: x
    after: [web]
  - name: web
    image: y
    after: [db]
)",
                7, 13, "cycle in after: db -> web -> db", true);
  expectRefused("tiers:\n  - { name: a, image: x, after: [a] }\n", 2, 34, "cycle in after: a -> a",
                true);
  // A longer cycle reached from a tier outside it: only the cycle is named.
  auto r = parsePolicy({PolicyFile{"a.yaml", R"(tiers:
  - { name: top, image: x, after: [b] }
  - { name: b, image: x, after: [c] }
)"},
                        PolicyFile{"b.yaml", "tiers:\n  - { name: c, image: x, after: [b] }\n"}});
  expectRefused(r, "b.yaml", 2, 34, "cycle in after: b -> c -> b", true);
}

// Pins: hosts named in placement must be declared; preferred hosts must be
// among the required ones when those are given.
TEST(PolicyRefused, PlacementHosts) {
  const std::string hosts =
      "hosts:\n  - name: h1\n  - name: h2\ntiers:\n  - name: web\n    image: x\n";
  expectRefused(hosts + "    placement: { required_hosts: [h1, h9] }\n", 7, 39,
                "host 'h9' in required_hosts is not declared", true);
  expectRefused(hosts + "    placement:\n      preferred_hosts:\n        - h3\n", 9, 11,
                "host 'h3' in preferred_hosts is not declared", true);
  expectRefused(hosts + "    placement: { preferred_hosts: [h2], required_hosts: [h1] }\n", 7, 36,
                "host 'h2' in preferred_hosts of tier 'web' is not in its required_hosts", true);
  expectRefused(hosts + "    placement: { spread: everywhere }\n", 7, 26,
                "expected one of required, preferred, none for 'placement.spread'");
}

// Pins: `spread: required` refuses more replicas than allowed hosts.
TEST(PolicyRefused, SpreadRequiredNeedsEnoughHosts) {
  const std::string hosts = "hosts:\n  - name: h1\n  - name: h2\n  - name: h3\n";
  expectRefused(hosts +
                    "tiers:\n  - name: web\n    image: x\n    replicas: 3\n"
                    "    placement: { spread: required, required_hosts: [h1, h2] }\n",
                9, 26,
                "tier 'web' needs 3 distinct hosts (spread: required) but only 2 hosts are "
                "allowed",
                true);
  expectRefused(hosts +
                    "tiers:\n  - name: web\n    image: x\n    replicas: 4\n"
                    "    placement: { spread: required }\n",
                9, 26, "needs 4 distinct hosts (spread: required) but only 3 hosts are allowed");
  // Preferred spread and exactly enough hosts are fine.
  EXPECT_TRUE(parseOne(hosts + "tiers:\n  - name: web\n    image: x\n    replicas: 3\n"
                               "    placement: { spread: required }\n")
                  .isOk());
  EXPECT_TRUE(parseOne(hosts + "tiers:\n  - name: web\n    image: x\n    replicas: 9\n").isOk());
}

// ------------------------------------------------------------ file sets ---

// Pins: merging replaces files by name, adds new ones, keeps the rest, sorted.
TEST(PolicyFiles, MergeReplacesByName) {
  std::vector<PolicyFile> current = {{"b.yaml", "old b"}, {"a.yaml", "old a"}};
  std::vector<PolicyFile> incoming = {{"c.yaml", "new c"}, {"b.yaml", "new b"}};
  auto merged = mergePolicyFiles(current, incoming);
  ASSERT_EQ(merged.size(), 3u);
  EXPECT_EQ(merged[0].name, "a.yaml");
  EXPECT_EQ(merged[0].content, "old a");
  EXPECT_EQ(merged[1].name, "b.yaml");
  EXPECT_EQ(merged[1].content, "new b");
  EXPECT_EQ(merged[2].name, "c.yaml");
  EXPECT_EQ(merged[2].content, "new c");
}

// Pins: after a merge, a tier moved from one file to another is not a
// duplicate (the old file's version is gone), and the merged set parses.
TEST(PolicyFiles, MergedSetParsesAsOne) {
  std::vector<PolicyFile> current = {
      {"hosts.yaml", "hosts:\n  - name: h1\n"},
      {"web.yaml", "tiers:\n  - { name: web, image: w }\n  - { name: db, image: d }\n"}};
  std::vector<PolicyFile> incoming = {
      {"web.yaml", "tiers:\n  - { name: web, image: w2, after: [db] }\n"},
      {"db.yaml", "tiers:\n  - { name: db, image: d }\n"}};
  auto r = parsePolicy(mergePolicyFiles(current, incoming));
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  ASSERT_EQ(r->tiers.size(), 2u);
  EXPECT_EQ(r->tiers[0].name, "db");  // db.yaml sorts before web.yaml
  EXPECT_EQ(r->findTier("web")->image, "w2");
}

// Pins: the digest is stable, ignores file order, and changes with any name
// or content change (also when bytes move between name and content).
TEST(PolicyFiles, Digest) {
  std::vector<PolicyFile> a = {{"a.yaml", "x: 1"}, {"b.yaml", "y: 2"}};
  std::vector<PolicyFile> reversed = {{"b.yaml", "y: 2"}, {"a.yaml", "x: 1"}};
  std::string d = digestOf(a);
  EXPECT_EQ(d.size(), 32u);
  EXPECT_EQ(d.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(d, digestOf(a));
  EXPECT_EQ(d, digestOf(reversed));
  EXPECT_NE(d, digestOf({{"a.yaml", "x: 1"}, {"b.yaml", "y: 3"}}));
  EXPECT_NE(d, digestOf({{"a.yaml", "x: 1"}, {"c.yaml", "y: 2"}}));
  EXPECT_NE(digestOf({{"ab", "c"}}), digestOf({{"a", "bc"}}));
  EXPECT_NE(digestOf({}), digestOf({{"", ""}}));
}

// Pins: a directory yields its *.yaml and *.yml files sorted by base name,
// skipping other and hidden files; a single file yields its base name.
TEST(PolicyFiles, ReadDirectoryAndFile) {
  TempDir dir;
  dir.write("b.yaml", "tiers: []\n");
  dir.write("a.yml", "hosts: []\n");
  dir.write("notes.txt", "not policy");
  dir.write(".b.yaml.swp.yaml", "junk: [");
  auto files = readPolicyFiles(dir.path());
  ASSERT_TRUE(files.isOk()) << files.status().toString();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].name, "a.yml");
  EXPECT_EQ((*files)[0].content, "hosts: []\n");
  EXPECT_EQ((*files)[1].name, "b.yaml");

  auto one = readPolicyFiles(dir.path() + "/b.yaml");
  ASSERT_TRUE(one.isOk()) << one.status().toString();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].name, "b.yaml");
  EXPECT_EQ((*one)[0].content, "tiers: []\n");
}

// Pins: a missing path is kNotFound naming the path; something that cannot be
// read as a file is kInvalidArgument; an empty directory is kNotFound.
TEST(PolicyFiles, ReadErrors) {
  TempDir dir;
  auto missing = readPolicyFiles(dir.path() + "/nope.yaml");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find(dir.path() + "/nope.yaml"), std::string::npos);

  auto empty = readPolicyFiles(dir.path());
  ASSERT_FALSE(empty.isOk());
  EXPECT_EQ(empty.status().code(), Code::kNotFound);

  std::string fifo = dir.path() + "/pipe.yaml";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto unreadable = readPolicyFiles(fifo);
  ASSERT_FALSE(unreadable.isOk());
  EXPECT_EQ(unreadable.status().code(), Code::kInvalidArgument);
  EXPECT_NE(unreadable.status().message().find(fifo), std::string::npos);
}

// ------------------------------------------------------------------- wire ---

// Pins: a health check crosses the wire whole, `expect` included (binary bytes
// too); JSON without "expect" (from a controller that predates it) decodes to
// a check without one, and unknown keys are ignored, which is what lets an
// agent that predates "expect" read the new JSON.
TEST(HealthCheckJson, RoundTripsWithAndWithoutExpect) {
  HealthCheckSpec with;
  with.kind = HealthKind::kTcp;
  with.port = 3306;
  with.expect = std::string("\0MariaDB\r\n", 10);
  with.grace_ms = 30000;
  Json j = with;
  EXPECT_EQ(j["expect"], with.expect);
  Result<HealthCheckSpec> back = decode<HealthCheckSpec>(Json::parse(j.dump()));
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(*back, with);

  HealthCheckSpec without = with;
  without.expect.clear();
  back = decode<HealthCheckSpec>(Json(without));
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(*back, without);

  Json older = j;
  older.erase("expect");
  back = decode<HealthCheckSpec>(older);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(*back, without);

  Json newer = j;
  newer["expect_later"] = Json{{"any", 1}};
  back = decode<HealthCheckSpec>(newer);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(*back, with);
}

}  // namespace
}  // namespace tw

namespace tw {
namespace {

// Pins: a tier's floating address, written as "A/N" or as { ip, interface },
// is kept in canonical form; IPv6 works; several replicas are fine.
TEST(PolicyAddress, ParsesBothForms) {
  auto r = parseOne(
      "tiers:\n"
      "  - { name: lb, image: x, replicas: 2, ports: [{ name: http, port: 80 }],\n"
      "      address: 10.213.0.100/24 }\n"
      "  - name: web\n    image: x\n    ports: [{ name: http, port: 80 }]\n"
      "    address: { ip: \"fd00:0::64/64\", interface: tw-br0 }\n");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->tiers[0].address.cidr, "10.213.0.100/24");
  EXPECT_EQ(r->tiers[0].address.interface, "");
  EXPECT_EQ(r->tiers[1].address.cidr, "fd00::64/64");
  EXPECT_EQ(r->tiers[1].address.interface, "tw-br0");
  EXPECT_FALSE(r->tiers[0].address_at.str().empty());
}

// Pins: every refusal of a floating address names file, line and column.
TEST(PolicyRefused, Address) {
  const std::string head = "tiers:\n  - name: lb\n    image: x\n    ports: [{ name: http, port: 80 }]\n";
  expectRefused(head + "    address: 10.213.0.100\n", 5, 14,
                "expected an IPv4 or IPv6 address with a prefix length for the address of tier "
                "'lb' (like 10.213.0.100/24 or fd00::100/64), got '10.213.0.100'",
                true);
  expectRefused(head + "    address: 10.213.0.300/24\n", 5, 14, "got '10.213.0.300/24'");
  expectRefused(head + "    address: 10.213.0.1/33\n", 5, 14, "got '10.213.0.1/33'");
  expectRefused(head + "    address: lb.example.org/24\n", 5, 14, "got 'lb.example.org/24'");
  expectRefused(head + "    address: 10.213.0.0/24\n", 5, 14,
                "the address of tier 'lb' must be a unicast host address");
  expectRefused(head + "    address: 10.213.0.255/24\n", 5, 14, "must be a unicast host address");
  expectRefused(head + "    address: 127.0.0.5/8\n", 5, 14, "must be a unicast host address");
  expectRefused(head + "    address: ff02::1/64\n", 5, 14, "must be a unicast host address");
  expectRefused(head + "    address: { interface: br0 }\n", 5, 14,
                "the address of tier 'lb' has no 'ip'", true);
  expectRefused(head + "    address: { ip: 10.0.0.5/24, interface: \"a/b\" }\n", 5, 44,
                "expected a network interface name for 'address.interface' of tier 'lb'");
  expectRefused(head + "    address: { ip: 10.0.0.5/24, mac: x }\n", 5, 33, "mac");
  expectRefused("tiers:\n  - name: lb\n    image: x\n    address: 10.0.0.5/24\n", 4, 14,
                "tier 'lb' has an 'address' but no 'ports' to forward on it", true);
  // Two tiers, one address (even with another prefix length): refused at the second.
  expectRefused(head + "    address: 10.0.0.5/24\n  - name: lb2\n    image: x\n"
                       "    ports: [{ name: http, port: 80 }]\n    address: 10.0.0.5/16\n",
                9, 14, "address 10.0.0.5 of tier 'lb2' is the address of tier 'lb' too (at p.yaml:5:14)",
                true);
}

}  // namespace
}  // namespace tw
