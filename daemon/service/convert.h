// Conversions between store value types and tensord.v1 protos, and absl -> gRPC status.
// Only service/ (and the client) know protobuf types.
#pragma once

#include "absl/status/status.h"
#include "daemon/store/store.h"
#include "grpcpp/support/status.h"
#include "tensord/v1/tensord.pb.h"

namespace tensord::service {

grpc::Status ToGrpc(const absl::Status& status);
void ToProto(const store::TensorInfo& info, v1::TensorMeta* out);
void ToProto(const store::StoreStats& stats, uint64_t uptime_ms, v1::Stats* out);
store::CreateParams FromProto(const v1::CreateRequest& request);

}  // namespace tensord::service
