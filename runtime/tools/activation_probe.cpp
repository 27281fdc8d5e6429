#include "runtime/tools/activation_probe.h"

#include <vector>

#include "memory/estimate.h"
#include "runtime/backends/cpu/cpu_alloc_counter.h"
#include "stages/model.h"

namespace pipetrain {

ActivationMeasurement measure_activations(const ModelConfig& config, int64_t micro_batch_size, int held) {
  CpuAllocCounter::install();
  LayerRange model = make_gpt_model(config, 7);
  const auto options = torch::TensorOptions().dtype(torch::kLong);
  const torch::Tensor tokens = torch::randint(0, config.vocab_size, {micro_batch_size, config.seq_len + 1}, options);
  const torch::Tensor inputs = tokens.narrow(1, 0, config.seq_len).contiguous();
  const torch::Tensor targets = tokens.narrow(1, 1, config.seq_len).contiguous();
  // A first step allocates the gradients, which are not activations.
  lm_loss(model->forward(inputs), targets).backward();

  ActivationMeasurement m;
  const int64_t base = CpuAllocCounter::current_bytes();
  CpuAllocCounter::reset_peak();
  std::vector<torch::Tensor> losses;
  for (int k = 0; k < held; ++k) losses.push_back(lm_loss(model->forward(inputs), targets));
  m.saved_bytes = CpuAllocCounter::current_bytes() - base;
  for (torch::Tensor& loss : losses) loss.backward();
  m.peak_bytes = CpuAllocCounter::peak_bytes() - base;
  return m;
}

int64_t estimated_activations(const ModelConfig& model, int64_t micro_batch_size, int held) {
  HardwareSpec hw;
  hw.name = "counted";
  DeviceSpec cpu;
  cpu.id = DeviceId::cpu();
  cpu.allocator_slack = 0.0;
  cpu.flops_per_s = 1e9;         // unused: only memory is estimated here
  cpu.memory_bytes_per_s = 1e9;  // likewise
  hw.devices = {cpu};
  MemoryOptions o;
  o.micro_batch_size = micro_batch_size;
  o.precision = uniform_precision(model.dtype);
  // One stage holding `held` micro-batches, as GPipe holds them.
  return estimate_memory(describe_model(model), hw, single_cpu_stage(model), {held}, o).stages[0].activations;
}

}  // namespace pipetrain
