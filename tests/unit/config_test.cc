// Configuration: byte sizes, modes, TOML files and the qwen3-vl preset.
#include "daemon/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

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
  EXPECT_EQ(ApplyPreset("llama", &host).code(), absl::StatusCode::kInvalidArgument);
}

class ConfigFile : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { unlink(path_.c_str()); }
  std::string path_ = ::testing::TempDir() + "/tensord_config_test.toml";
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
}

}  // namespace
}  // namespace tensord
