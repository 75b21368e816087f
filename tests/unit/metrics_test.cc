// Prometheus metrics from v1::Stats: every Stats field has a metric (no drift), names follow
// the Prometheus conventions, labels and unit scaling are right.
#include "daemon/service/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <regex>

#include "prometheus/text_serializer.h"

namespace tensord::service {
namespace {

namespace pb = google::protobuf;

// Every numeric or boolean field of Stats, as "field" or "message_field.field".
std::vector<std::string> NumericPaths() {
  std::vector<std::string> out;
  const pb::Descriptor* root = v1::Stats::descriptor();
  for (int i = 0; i < root->field_count(); ++i) {
    const pb::FieldDescriptor* f = root->field(i);
    if (f->is_map()) continue;  // counters: one metric per entry
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      const pb::Descriptor* m = f->message_type();
      for (int j = 0; j < m->field_count(); ++j) {
        const pb::FieldDescriptor* g = m->field(j);
        if (g->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING &&
            g->cpp_type() != pb::FieldDescriptor::CPPTYPE_ENUM) {
          out.push_back(f->name() + "." + g->name());
        }
      }
    } else {
      out.push_back(f->name());
    }
  }
  return out;
}

TEST(Metrics, EveryStatsFieldHasAMetric) {
  const std::vector<std::string> covered = MetricFieldPaths();
  for (const std::string& path : NumericPaths()) {
    EXPECT_NE(std::find(covered.begin(), covered.end(), path), covered.end())
        << "Stats field " << path << " has no Prometheus metric (add it to kMetrics)";
  }
  for (const std::string& path : covered) {
    const auto all = NumericPaths();
    EXPECT_NE(std::find(all.begin(), all.end(), path), all.end())
        << "kMetrics names " << path << ", which Stats does not have";
  }
}

v1::Stats Sample() {
  v1::Stats s;
  s.set_sessions(2);
  s.set_leases(3);
  s.set_uptime_ms(1500);
  v1::TierStats* host = s.add_tiers();
  host->set_tier(v1::TIER_HOST);
  host->set_present(true);
  host->set_capacity_bytes(1 << 30);
  host->set_used_bytes(1 << 20);
  host->set_hits(7);
  v1::PoolStats* pool = s.add_pools();
  pool->set_name("kv_cache");
  pool->set_tier(v1::TIER_HOST);
  pool->set_kind("fixed");
  pool->set_capacity_bytes(1 << 20);
  s.mutable_swap()->set_engine("io_uring");
  s.mutable_swap()->set_read_mbps(1.5);
  s.mutable_pressure()->set_psi_some_avg10(12.5);
  (*s.mutable_counters())["creates"] = 5;
  (*s.mutable_counters())["bytes_created"] = 4096;
  return s;
}

TEST(Metrics, NamesFollowPrometheusConventions) {
  const std::regex name("tensord_[a-z0-9_]+");
  for (const prometheus::MetricFamily& f : StatsToMetrics(Sample())) {
    EXPECT_TRUE(std::regex_match(f.name, name)) << f.name;
    const bool total = f.name.size() > 6 && f.name.compare(f.name.size() - 6, 6, "_total") == 0;
    EXPECT_EQ(total, f.type == prometheus::MetricType::Counter) << f.name;
    EXPECT_EQ(f.name.find("_ms"), std::string::npos) << "base units: seconds, " << f.name;
    EXPECT_EQ(f.name.find("mbps"), std::string::npos) << "base units: bytes, " << f.name;
    EXPECT_FALSE(f.help.empty()) << f.name;
  }
}

TEST(Metrics, ValuesLabelsAndUnits) {
  const std::string text = prometheus::TextSerializer().Serialize(StatsToMetrics(Sample()));
  for (const char* line : {
           "tensord_sessions 2",
           "tensord_uptime_seconds 1.5",
           "tensord_tier_capacity_bytes{tier=\"host\"} 1073741824",
           "tensord_tier_hits_total{tier=\"host\"} 7",
           "tensord_pool_capacity_bytes{pool=\"kv_cache\",kind=\"fixed\",tier=\"host\"} 1048576",
           "tensord_swap_read_throughput_bytes_per_second{engine=\"io_uring\"} 1500000",
           "tensord_system_memory_pressure_some_ratio 0.125",
           "tensord_creates_total 5",
           "tensord_created_bytes_total 4096",
       }) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
  v1::Stats no_swap = Sample();
  no_swap.clear_swap();
  const std::string without = prometheus::TextSerializer().Serialize(StatsToMetrics(no_swap));
  EXPECT_EQ(without.find("tensord_swap_"), std::string::npos) << "no SSD tier, no swap metrics";
}

TEST(Metrics, AReadingThatIsNotAvailableHasNoSampleRatherThanZero) {
  v1::Stats s = Sample();  // PSI set, MemAvailable unset (a kernel without it)
  const std::string text = prometheus::TextSerializer().Serialize(StatsToMetrics(s));
  EXPECT_EQ(text.find("tensord_system_memory_available_bytes"), std::string::npos)
      << "an unset MemAvailable must not read as 0 bytes free\n"
      << text;
  s.mutable_pressure()->set_mem_available_bytes(uint64_t{3} << 30);
  s.mutable_pressure()->clear_psi_some_avg10();
  const std::string set = prometheus::TextSerializer().Serialize(StatsToMetrics(s));
  EXPECT_NE(set.find("tensord_system_memory_available_bytes 3221225472\n"), std::string::npos)
      << set;
  EXPECT_EQ(set.find("tensord_system_memory_pressure_some_ratio"), std::string::npos) << set;
}

}  // namespace
}  // namespace tensord::service
