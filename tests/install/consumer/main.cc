// The smallest real client: connect, put a tensor, get it back zero-copy, check it, clean up.
//   consumer SOCKET   -> prints "consumer ok" and exits 0
#include <cstdio>
#include <cstring>

#include "tensord/client.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  tensord::ClientOptions opts;
  opts.socket_path = argv[1];
  opts.client_name = "consumer";
  auto client = tensord::Client::Connect(opts);
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s\n", client.status().ToString().c_str());
    return 1;
  }
  auto t = (*client)->Create("consumer.x", tensord::DType::kFloat32, {256});
  if (!t.ok()) return 1;
  auto* p = static_cast<float*>(t->data());
  for (int i = 0; i < 256; ++i) p[i] = static_cast<float>(i) * 0.5f;
  if (!t->Seal().ok()) return 1;
  auto lease = (*client)->Get("consumer.x");
  if (!lease.ok() || lease->nbytes() != 256 * sizeof(float)) return 1;
  for (int i = 0; i < 256; ++i) {
    if (lease->data_as<float>()[i] != static_cast<float>(i) * 0.5f) return 1;
  }
  if (!(*client)->Delete("consumer.x").ok()) return 1;
  std::printf("consumer ok\n");
  return 0;
}
