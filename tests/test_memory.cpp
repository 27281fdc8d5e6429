// memory/: closed-form parameter counts, optimizer state sizes, device ids, and the machine probes' parsing.
#include <doctest/doctest.h>

#include "memory/device.h"
#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "memory/model_config.h"
#include "memory/optimizer_config.h"
#include "memory/param_count.h"
#include "memory/units.h"

using namespace pipetrain;

// The per-layer counts, worked out by hand for a small config (V=256, T=16, H=8, I=32).
TEST_CASE("parameter counts of each layer match hand-computed values") {
  ModelConfig m;
  m.vocab_size = 256;
  m.seq_len = 16;
  m.hidden_dim = 8;
  m.intermediate_size = 32;
  m.num_heads = 2;
  m.num_layers = 3;
  CHECK(embed_param_count(m) == 256 * 8 + 16 * 8);                     // 2176
  CHECK(block_param_count(m) == 2 * 8 + (8 * 24 + 24) + (8 * 8 + 8) + 2 * 8 + (8 * 32 + 32) + (32 * 8 + 8));
  CHECK(head_param_count(m) == 2 * 8 + 8 * 256);
  CHECK(total_param_count(m) == 2176 + 3 * block_param_count(m) + 2064);
  CHECK(layer_param_count(m, 0) == embed_param_count(m));
  CHECK(layer_param_count(m, 2) == block_param_count(m));
  CHECK(layer_param_count(m, 4) == head_param_count(m));
}

// Layer names and positions in the ordered list [embed, blocks, head].
TEST_CASE("layer_at and layer_name walk the ordered list") {
  ModelConfig m;
  m.num_layers = 2;
  CHECK(m.num_model_layers() == 4);
  CHECK(layer_name(m, 0) == "embed");
  CHECK(layer_name(m, 1) == "block 0");
  CHECK(layer_name(m, 2) == "block 1");
  CHECK(layer_name(m, 3) == "head");
  CHECK(layer_at(m, 2).block_index == 1);
  CHECK_THROWS_AS(layer_at(m, 4), std::out_of_range);
  CHECK_THROWS_AS(layer_at(m, -1), std::out_of_range);
  // The index convention, stated once.
  CHECK(kEmbedLayer == 0);
  CHECK(block_layer(1) == 2);
  CHECK(head_layer(m) == 3);
  CHECK(is_head_layer(m, 3));
  CHECK_FALSE(is_head_layer(m, 2));
}

// Device names are parsed once into typed ids; anything but cpu and cuda:N is refused by name.
TEST_CASE("device ids") {
  CHECK(parse_device("cpu") == DeviceId::cpu());
  CHECK(parse_device("cuda:0") == DeviceId::cuda(0));
  CHECK(parse_device("cuda:12") == DeviceId::cuda(12));
  CHECK(parse_device("standin:0") == DeviceId::stand_in(0));
  CHECK(DeviceId::stand_in(1).name() == "standin:1");
  CHECK(DeviceId::stand_in(0).has_own_memory());  // like the GPU it stands in for
  CHECK_FALSE(DeviceId::stand_in(0).is_cpu());
  CHECK(DeviceId::cuda(3).name() == "cuda:3");
  CHECK(DeviceId::cpu().name() == "cpu");
  CHECK(DeviceId::cpu().is_cpu());
  CHECK_FALSE(DeviceId::cpu().has_own_memory());
  CHECK(DeviceId::cuda(0).has_own_memory());
  CHECK(crosses_host_boundary(DeviceId::cpu(), DeviceId::cuda(0)));
  CHECK(crosses_host_boundary(DeviceId::cuda(1), DeviceId::cpu()));
  CHECK_FALSE(crosses_host_boundary(DeviceId::cpu(), DeviceId::cpu()));
  CHECK(DeviceId::cpu() < DeviceId::cuda(0));
  for (const char* bad : {"tpu:0", "cuda:", "cuda:x", "cuda:-1", "CPU", "", "cuda:0 ", "cuda:99999"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(parse_device(bad), doctest::Contains(("'" + std::string(bad) + "' is not a device").c_str()), InputError);
  }
}

// Optimizer state per parameter: AdamW 8 B, SGD with momentum 4 B, plain SGD 0. Kinds are looked
// up by name; an unknown one is refused with the registered names, never defaulted.
TEST_CASE("optimizer state bytes per parameter") {
  OptimizerConfig adamw;
  CHECK(adamw.kind == OptimizerKind::adamw());
  CHECK(optimizer_state_bytes_per_param(adamw) == 8);
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::sgd();
  CHECK(optimizer_state_bytes_per_param(sgd) == 0);
  sgd.momentum = 0.9;
  CHECK(optimizer_state_bytes_per_param(sgd) == 4);
  CHECK(OptimizerKind::named("sgd") == OptimizerKind::sgd());
  CHECK(OptimizerKind::named("sgd").name() == "sgd");
  CHECK_THROWS_WITH_AS(OptimizerKind::named("adam"), doctest::Contains("'adam'; expected one of adamw, sgd"), InputError);
  CHECK(optimizer_label(sgd) == "SGD with momentum");
  // The settings a remedy may propose: every registered kind's, each with its state size; bfloat16
  // state only for AdamW (the fused CPU AdamW keeps it; SGD's momentum stays float32).
  std::vector<std::string> labels;
  for (const OptimizerConfig& o : optimizer_settings(adamw)) labels.push_back(optimizer_label(o));
  CHECK(labels == std::vector<std::string>{"AdamW", "AdamW with bfloat16 state", "SGD with momentum",
                                           "SGD without momentum"});
  OptimizerConfig adamw_half = adamw;
  adamw_half.state_dtype = Dtype::kBFloat16;
  labels.clear();
  for (const OptimizerConfig& o : optimizer_settings(adamw_half)) labels.push_back(optimizer_label(o));
  CHECK(labels == std::vector<std::string>{"AdamW with bfloat16 state", "SGD with momentum", "SGD without momentum"});
  // State in bfloat16 halves it.
  OptimizerConfig half;
  half.state_dtype = Dtype::kBFloat16;
  CHECK(optimizer_state_bytes_per_param(half) == 4);
  CHECK(parse_state_dtype("bfloat16") == Dtype::kBFloat16);
  CHECK_THROWS_WITH_AS(parse_state_dtype("float16"), doctest::Contains("optimizer state is float32 or bfloat16"), InputError);
}

// dtype names round-trip, and an unknown one is named in the error.
TEST_CASE("dtype parsing and sizes") {
  CHECK(dtype_bytes(parse_dtype("float32")) == 4);
  CHECK(dtype_bytes(parse_dtype("bfloat16")) == 2);
  CHECK(dtype_bytes(parse_dtype("float64")) == 8);
  CHECK(dtype_name(Dtype::kBFloat16) == "bfloat16");
  CHECK_THROWS_WITH_AS(parse_dtype("half"), doctest::Contains("'half'"), InputError);
}

// /proc/meminfo parsing: values are KiB, missing keys are -1, not 0.
TEST_CASE("meminfo parsing") {
  const std::string text = "MemTotal:       24563484 kB\nMemAvailable:   20000000 kB\nSwapTotal:             0 kB\n";
  CHECK(meminfo_bytes(text, "MemTotal") == 24563484LL * 1024);
  CHECK(meminfo_bytes(text, "MemAvailable") == 20000000LL * 1024);
  CHECK(meminfo_bytes(text, "SwapTotal") == 0);
  CHECK(meminfo_bytes(text, "SwapFree") == -1);
  CHECK(meminfo_bytes(text, "Mem") == -1);
}

// The live probes return plausible numbers on any Linux machine.
TEST_CASE("live machine probes") {
  const MachineMemory mem = probe_machine_memory();
  CHECK(mem.ram_total_bytes > 0);
  CHECK(mem.ram_available_bytes > 0);
  CHECK(mem.ram_available_bytes <= mem.ram_total_bytes);
  CHECK(usable_cores() >= 1);
  CHECK(peak_rss_bytes() > 0);
  CHECK(current_rss_bytes() > 0);
}

// Memory figures print in GiB with two decimals (the table cells without the unit).
TEST_CASE("format_gib") {
  CHECK(gib_digits(1536LL * 1024 * 1024) == "1.50");
  CHECK(format_gib(0) == "0.00 GiB");
  CHECK(format_gib(1536LL * 1024 * 1024) == "1.50 GiB");
  CHECK(format_gib(109456000000LL) == "101.94 GiB");
}
