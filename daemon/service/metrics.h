// Prometheus metrics, generated from the same v1::Stats message that GetStats returns, through
// one table (kMetrics in metrics.cc) that names each Stats field's metric, type, unit scale
// and help text; the store's counters map becomes tensord_<name>_total. A unit test walks the
// Stats descriptor and fails when a field has no metric, so the two never drift.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "tensord/v1/tensord.pb.h"

namespace prometheus {
class Exposer;
}

namespace tensord::service {

// The metric families for one Stats snapshot.
std::vector<prometheus::MetricFamily> StatsToMetrics(const v1::Stats& stats);
// The Stats field paths the table covers ("sessions", "tiers.hits", "swap.reads", ...).
std::vector<std::string> MetricFieldPaths();

// Serves /metrics on 127.0.0.1:`port` (0: an ephemeral port), calling `snapshot` per scrape.
class MetricsEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      int port, std::function<v1::Stats()> snapshot);
  ~MetricsEndpoint();
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace tensord::service
