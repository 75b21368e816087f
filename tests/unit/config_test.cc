// Configuration: byte sizes, modes, TOML files and the qwen3-vl preset.
#include "daemon/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "daemon/settings.h"

namespace tensord {
namespace {

TEST(Config, ParsesByteSizes) {
  EXPECT_EQ(*ParseBytes("4096"), 4096u);
  EXPECT_EQ(*ParseBytes("1GiB"), uint64_t{1} << 30);
  EXPECT_EQ(*ParseBytes("256MiB"), uint64_t{256} << 20);
  EXPECT_EQ(*ParseBytes("16M"), uint64_t{16} << 20);
  EXPECT_EQ(*ParseBytes(" 2 KiB "), 2048u);
  EXPECT_FALSE(ParseBytes("").ok());
  EXPECT_FALSE(ParseBytes("GiB").ok());
  EXPECT_FALSE(ParseBytes("12 parsecs").ok());
  EXPECT_FALSE(ParseBytes("99999999999999TiB").ok());
}

TEST(Config, ParsesModes) {
  EXPECT_EQ(*ParseMode("0600"), 0600u);
  EXPECT_EQ(*ParseMode("660"), 0660u);
  EXPECT_FALSE(ParseMode("0800").ok());
  EXPECT_FALSE(ParseMode("rw").ok());
  EXPECT_FALSE(ParseMode("17777").ok());
}

TEST(Config, Qwen3VlPresetHasTheDesignShapes) {
  HostTierConfig host;
  ASSERT_TRUE(ApplyPreset("qwen3-vl", &host).ok());
  ASSERT_EQ(host.pools.size(), 4u);
  EXPECT_EQ(host.pools[0].name, "kv_cache");
  EXPECT_EQ(host.pools[0].block_size, 1u * 32 * 2048 * 128 * 2);
  EXPECT_EQ(host.pools[1].block_size, 1u * 576 * 1152 * 2);
  EXPECT_EQ(host.pools[2].block_size, 1u * 512 * 4096 * 2);
  EXPECT_EQ(host.pools[3].block_size, 8u * 1024 * 1024 * 2);
  EXPECT_EQ(host.pools[0].compression, "lossy") << "KV blocks: lossy within 1%";
  EXPECT_EQ(host.pools[0].error_budget, 0.01);
  EXPECT_EQ(host.pools[3].compression, "lossless") << "weights: lossless";
  EXPECT_EQ(ApplyPreset("llama", &host).code(), absl::StatusCode::kInvalidArgument);
}

class ConfigFile : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { unlink(path_.c_str()); }
  // One file per test process: ctest runs tests in parallel.
  std::string path_ =
      ::testing::TempDir() + "/tensord_config_test." + std::to_string(getpid()) + ".toml";
};

TEST_F(ConfigFile, ReadsEverySection) {
  auto config = LoadConfigFile(Write(R"(
[daemon]
run_dir = "/tmp/x"
socket_mode = "0660"
log_level = "debug"
[host]
capacity = "512MiB"
zero_on_free = false
[[host.pool]]
name = "kv"
dtype = "fp16"
shape = [1, 32, 2048, 128]
count = 4
[[host.pool]]
name = "small"
block_size = "64KiB"
share = 0.1
[gpu]
mode = "off"
size = "8GiB"
[[gpu.pool]]
name = "kv"
dtype = "bf16"
shape = [1, 8, 256, 128]
share = 0.5
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run_dir, "/tmp/x");
  EXPECT_EQ(config->socket_mode, 0660u);
  EXPECT_EQ(config->host.capacity, uint64_t{512} << 20);
  EXPECT_FALSE(config->host.zero_on_free);
  ASSERT_EQ(config->host.pools.size(), 2u);
  EXPECT_EQ(config->host.pools[0].block_size, 16u << 20);
  EXPECT_EQ(config->host.pools[0].block_count, 4u);
  EXPECT_EQ(config->host.pools[1].block_size, 64u << 10);
  EXPECT_DOUBLE_EQ(config->host.pools[1].share, 0.1);
  EXPECT_EQ(config->gpu.mode, "off");
  EXPECT_EQ(config->gpu.size, uint64_t{8} << 30);
  ASSERT_EQ(config->gpu.pools.size(), 1u);
  EXPECT_EQ(config->gpu.pools[0].block_size, 512u << 10);
  EXPECT_EQ(LoadConfigFile(Write("[[gpu.pool]]\nname = \"x\"\nblok = 1\n")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ConfigFile, RejectsTyposAndBadValuesWithTheLine) {
  auto typo = LoadConfigFile(Write("[host]\ncapacty = \"1GiB\"\n"));
  EXPECT_EQ(typo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(typo.status().message().find("capacty"), absl::string_view::npos);
  EXPECT_EQ(LoadConfigFile(Write("[host]\ncapacity = \"lots\"\n")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadConfigFile(Write("[host\n")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadConfigFile("/nonexistent/tensord.toml").status().code(),
            absl::StatusCode::kNotFound);
  // A directory is no configuration (it must not load as an empty file, i.e. the defaults).
  auto dir = LoadConfigFile(::testing::TempDir());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dir.status().message().find("not a file"), absl::string_view::npos);
}

TEST(Config, TheShippedExampleIsGeneratedFromTheSettingsTable) {
  std::ifstream in(TENSORD_EXAMPLE_CONFIG);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(file, ExampleConfig())
      << "deploy/tensord.toml is stale: regenerate it with tensord --print-example-config";
  for (const Setting& s : Settings()) {
    EXPECT_NE(file.find(s.key.substr(s.key.find('.') + 1) + " = "), std::string::npos) << s.key;
    EXPECT_FALSE(s.help.empty()) << s.key;
  }
}

TEST_F(ConfigFile, PrintConfigReadsBackUnchanged) {
  DaemonConfig config;
  ASSERT_TRUE(FindSetting("host.capacity")->set(config, "3GiB").ok());
  ASSERT_TRUE(FindSetting("daemon.log_level")->set(config, "debug").ok());
  ASSERT_TRUE(FindSetting("ssd.high_watermark")->set(config, "0.8").ok());
  ASSERT_TRUE(FindSetting("daemon.socket_mode")->set(config, "0640").ok());
  ASSERT_TRUE(ApplyPreset("qwen3-vl", &config.host).ok());
  config.ssd.files = {{"/a/swap", uint64_t{8} << 30}, {"/b/swap", 1 << 20}};
  config.gpu.pools = {{"kv", 1 << 20, 0, 0.25}, {"img", 4 << 20, 8, 0.0}};
  const std::string printed = PrintConfig(config);
  auto back = LoadConfigFile(Write(printed));
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << printed;
  EXPECT_EQ(PrintConfig(*back), printed);
  EXPECT_EQ(back->host.capacity, uint64_t{3} << 30);
  EXPECT_EQ(back->host.pools.size(), 4u);
  EXPECT_EQ(back->ssd.files.size(), 2u);
  ASSERT_EQ(back->gpu.pools.size(), 2u);
  EXPECT_EQ(back->gpu.pools[1].block_count, 8u);
  EXPECT_EQ(back->host.pools[0].codecs, (std::vector<std::string>{"fp8_e4m3", "int8"}));
}

TEST_F(ConfigFile, PoolClassesCarryTheirCompression) {
  auto config = LoadConfigFile(Write(R"(
[policy]
compression = "lossless"
error_budget = 0.02
[[host.pool]]
name = "kv"
block_size = "1MiB"
share = 0.5
compression = "lossy"
error_budget = 0.005
codecs = ["int8"]
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->policy.compression, "lossless");
  EXPECT_EQ(config->host.pools[0].compression, "lossy");
  EXPECT_EQ(config->host.pools[0].error_budget, 0.005);
  EXPECT_EQ(config->host.pools[0].codecs, std::vector<std::string>{"int8"});
  for (const char* bad :
       {"compression = \"zip\"", "error_budget = 2.0", "codecs = [\"gzip\"]", "codecs = [1]"}) {
    auto c = LoadConfigFile(Write(
        absl::StrCat("[[host.pool]]\nname = \"kv\"\nblock_size = 4096\nshare = 0.1\n", bad, "\n")));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(c.status().message(), "line 5")) << c.status();
  }
  EXPECT_FALSE(LoadConfigFile(Write("[policy]\ncompression = \"maybe\"\n")).ok());
  auto remote = LoadConfigFile(Write(
      "[[host.pool]]\nname = \"kv\"\nblock_size = 4096\nshare = 0.1\nremote = \"never\"\n"));
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ(remote->host.pools[0].remote, "never");
  EXPECT_NE(PrintConfig(*remote).find("remote = \"never\""), std::string::npos);
  for (const char* bad : {"[[host.pool]]\nname = \"kv\"\nblock_size = 4096\nremote = \"maybe\"\n",
                          "[[gpu.pool]]\nname = \"kv\"\nblock_size = 4096\nremote = \"never\"\n"}) {
    EXPECT_EQ(LoadConfigFile(Write(bad)).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  for (const char* bad : {"nan", "inf", "1.5", "0", "-0.1"}) {
    auto c = LoadConfigFile(Write(
        absl::StrCat("[[host.pool]]\nname = \"kv\"\nblock_size = 4096\nshare = ", bad, "\n")));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(c.status().message(), "line 4")) << c.status();
  }
}

TEST(Config, EverySettingRejectsGarbageWithItsKey) {
  for (const Setting& s : Settings()) {
    DaemonConfig config;
    if (s.type == "string") continue;  // any text is a string
    absl::Status st = s.set(config, "garbage!");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << s.key;
    EXPECT_NE(st.message().find(s.key), absl::string_view::npos) << st.message();
    EXPECT_EQ(s.get(config), s.default_value()) << s.key << ": a bad value changes nothing";
    EXPECT_TRUE(
        s.set(config, absl::StripSuffix(absl::StripPrefix(s.default_value(), "\""), "\"")).ok())
        << s.key << " must accept its own default";
  }
  DaemonConfig config;
  EXPECT_FALSE(FindSetting("daemon.log_level")->set(config, "loud").ok());
  EXPECT_FALSE(FindSetting("daemon.metrics_port")->set(config, "70000").ok());
  EXPECT_FALSE(FindSetting("ssd.low_watermark")->set(config, "0").ok());
  EXPECT_EQ(FindSetting("no.such"), nullptr);
  EXPECT_EQ(FindSetting("host.capacity")->flag(), "--host-capacity");
  EXPECT_EQ(FindSetting("daemon.run_dir")->flag(), "--run-dir");
}

TEST(Config, TheShippedExampleLoads) {
  auto config = LoadConfigFile(TENSORD_EXAMPLE_CONFIG);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run_dir, "/run/tensord");
  EXPECT_EQ(config->socket_mode, 0660u);
  EXPECT_EQ(config->host.shm_mode, 0660u);
  EXPECT_TRUE(config->ssd.files.empty()) << "the SSD tier is opt-in";
}

TEST_F(ConfigFile, ReadsTheSsdTierWithSeveralSwapFiles) {
  auto config = LoadConfigFile(Write(R"(
[ssd]
path = "/nvme0/swap"
size = "8GiB"
io_threads = 2
queue_depth = 64
force_fallback = true
degrade_after = 5
high_watermark = 0.8
low_watermark = 0.6
min_mem_available = "2GiB"
[[ssd.file]]
path = "/nvme1/swap"
size = "16GiB"
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  const SsdConfig& ssd = config->ssd;
  ASSERT_EQ(ssd.files.size(), 2u);
  EXPECT_EQ(ssd.files[0].path, "/nvme0/swap");
  EXPECT_EQ(ssd.files[0].size, uint64_t{8} << 30);
  EXPECT_EQ(ssd.files[1].path, "/nvme1/swap");
  EXPECT_EQ(ssd.files[1].size, uint64_t{16} << 30);
  EXPECT_EQ(ssd.io_threads, 2);
  EXPECT_EQ(ssd.queue_depth, 64);
  EXPECT_TRUE(ssd.force_fallback);
  EXPECT_EQ(ssd.degrade_after, 5);
  EXPECT_DOUBLE_EQ(ssd.high_watermark, 0.8);
  EXPECT_DOUBLE_EQ(ssd.low_watermark, 0.6);
  EXPECT_EQ(ssd.min_mem_available, uint64_t{2} << 30);

  auto defaults = LoadConfigFile(Write("[ssd]\npath = \"/var/lib/tensord/swap\"\n"));
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  ASSERT_EQ(defaults->ssd.files.size(), 1u);
  EXPECT_EQ(defaults->ssd.files[0].size, kDefaultSwapSize);
  auto none = LoadConfigFile(Write("[daemon]\nlog_level = \"info\"\n"));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->ssd.files.empty()) << "no swap file, no SSD tier";
}

TEST_F(ConfigFile, AWholeFloatIsAByteSize) {
  auto config = LoadConfigFile(Write("[ssd]\npath = \"/s\"\nsize = 1.048576e6\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->ssd.files.size(), 1u);
  EXPECT_EQ(config->ssd.files[0].size, 1u << 20);
}

TEST_F(ConfigFile, RejectsBadSsdSettings) {
  for (const char* bad : {
           "[ssd]\npath = \"/s\"\nsize = \"1000\"\n",             // not a 4 KiB multiple
           "[ssd]\npath = \"/s\"\nhigh_watermark = 1.5\n",        // not a fraction
           "[ssd]\nhigh_watermark = 0.5\nlow_watermark = 0.7\n",  // low above high
           "[ssd]\nqueue_depth = 0\n",
           "[ssd]\nio_threads = \"two\"\n",
           "[ssd]\npth = \"/s\"\n",            // typo
           "[[ssd.file]]\nsize = \"1GiB\"\n",  // no path
           "[[ssd.file]]\npath = \"/s\"\nsize = \"0\"\n",
           "[ssd]\nsize = 7.7e112\n",  // past int64 (the config fuzzer's finding)
           "[ssd]\nsize = -4096.0\n",
           "[ssd]\nsize = 4096.5\n",
           "[ssd]\nsize = nan\n",
       }) {
    auto config = LoadConfigFile(Write(bad));
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace tensord

namespace tensord {
namespace {

TEST(Config, TheEvictionPolicyIsChosenByNameAndUnknownNamesAreRefused) {
  DaemonConfig config;
  EXPECT_EQ(config.policy.eviction, "slru+chain") << "the one trace_bench measures best";
  const Setting* s = FindSetting("policy.eviction");
  ASSERT_NE(s, nullptr);
  for (const char* name : {"lru", "s3fifo", "slru", "lru+chain", "s3fifo+chain", "slru+chain"}) {
    EXPECT_TRUE(s->set(config, name).ok()) << name;
    EXPECT_EQ(config.policy.eviction, name);
  }
  const absl::Status bad = s->set(config, "mru");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("known: lru, s3fifo"), std::string::npos) << bad.message();
  EXPECT_EQ(config.policy.eviction, "slru+chain") << "a refused value changes nothing";
  const Setting* small = FindSetting("policy.s3fifo_small");
  ASSERT_NE(small, nullptr);
  EXPECT_TRUE(small->set(config, "0.25").ok());
  EXPECT_DOUBLE_EQ(config.policy.s3fifo_small, 0.25);
  EXPECT_FALSE(small->set(config, "0").ok()) << "a probation queue of nothing";
  EXPECT_FALSE(small->set(config, "1.5").ok());
}

}  // namespace
}  // namespace tensord
