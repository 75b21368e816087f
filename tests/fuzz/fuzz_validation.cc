// libFuzzer harness: request validation. The input is tried as a serialized CreateRequest (the
// service's conversion, then the store's checks) and as raw key, namespace and text fields.
// Nothing a client sends may crash it, and what validation accepts must hold the documented
// limits.
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "daemon/service/convert.h"
#include "daemon/store/validation.h"
#include "tensord/v1/tensord.pb.h"

namespace {

void Require(bool ok) {
  if (!ok) std::abort();  // an accepted field broke its documented limits
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tensord;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  if (store::ValidateKey(text).ok()) {
    Require(!text.empty() && text.size() <= store::kMaxKeyBytes);
    Require(text.find('\0') == absl::string_view::npos);
  }
  if (store::ValidateNamespace(text).ok()) {
    Require(text.size() <= store::kMaxNamespaceBytes);
    for (char c : text) {
      Require((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-');
    }
  }
  if (store::ValidateClientName(text).ok()) Require(text.size() <= store::kMaxClientNameBytes);
  (void)store::ValidateText("field", text);

  v1::CreateRequest request;
  if (request.ParseFromArray(data, static_cast<int>(size))) {
    const store::CreateParams params = service::FromProto(request);
    auto nbytes = store::ValidateCreate(params);
    if (nbytes.ok()) {
      Require(store::ValidateKey(params.key).ok());
      Require(store::ValidateNamespace(params.ns).ok());
      Require(*nbytes > 0);
    }
  }
  return 0;
}
