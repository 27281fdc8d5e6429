// runtime/io/safetensors and weights_file: the format read and written to its specification, hostile
// files refused with the value named, export and import bit-exact, a file from an independent
// writer (tests/write_safetensors.py) loaded, and mismatches refused before anything changes.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "memory/errors.h"
#include "runtime/config/run_config.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/safetensors.h"
#include "runtime/io/weights_file.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/train/run_plan.h"
#include "planner_fixtures.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

// 8-byte little-endian length, the header text, then the data: a file as the format lays it out.
std::string file_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string refusal(const std::string& bytes) {
  try {
    parse_safetensors(bytes, "x.safetensors");
  } catch (const InputError& e) {
    return e.what();
  }
  return "(accepted)";
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

RunConfig tiny_run(const std::string& data_file) {
  RunConfig run = parse_run_config(
      default_config_text(), "default config",
      {"stages=none", "data.tokenizer=bytes", "model.hidden_dim=32", "model.num_layers=3", "model.num_heads=2", "model.intermediate_size=64",
       "model.seq_len=16", "train.micro_batch_size=2", "train.micro_batches=2", "train.steps=20", "train.warmup_steps=2"});
  run.data.files = {data_file};
  run.stages = make_stage_map({DeviceId::cpu(), DeviceId::cpu()}, {2, 4});
  return run;
}

std::unique_ptr<PipelineTrainer> trainer_of(const RunConfig& run) {
  const HardwareSpec host = testing::cpu_only_box(1);
  return std::make_unique<PipelineTrainer>(run, plan_of_run(run, host), host, false);
}

// Every parameter of the trainer, by its name in a weights file.
std::map<std::string, torch::Tensor> weights_of(const PipelineTrainer& trainer, const ModelConfig& model) {
  std::map<std::string, torch::Tensor> out;
  for (int64_t layer = 0; layer < model.num_model_layers(); ++layer) {
    for (const auto& [key, tensor] : trainer.layer_state(layer)) {
      if (key.rfind("param/", 0) == 0) out[weight_name(model, layer, key.substr(6))] = tensor.clone();
    }
  }
  return out;
}

// A weights file with `weights`' tensors, as the writer lays them out.
void write_weights(const std::string& path, const std::map<std::string, torch::Tensor>& weights) {
  std::vector<SafetensorsTensor> declared;
  for (const auto& [name, t] : weights) {
    declared.push_back({name, t.scalar_type() == torch::kHalf ? "F16" : "F32", t.sizes().vec()});
  }
  SafetensorsWriter out(path, declared, {});
  for (const auto& [name, t] : weights) {
    const torch::Tensor c = t.contiguous();
    out.write(c.data_ptr(), static_cast<uint64_t>(c.numel() * c.element_size()));
  }
  out.commit();
}

std::string init_refusal(const std::string& path, const RunConfig& run, PipelineTrainer& trainer) {
  try {
    init_from_weights(path, run.model, trainer);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("safetensors: a written file reads back its names, dtypes, shapes, data and metadata, the data 8-byte aligned") {
  testing::ScratchDir dir;
  const std::string path = dir.path() + "/w.safetensors";
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1.0f};
  const std::vector<uint16_t> b = {1, 2, 65535};
  {
    SafetensorsWriter out(path, {{"a", "F32", {2, 3}}, {"b.x", "BF16", {3}}, {"empty", "F32", {0, 4}}},
                          {{"format", "pt"}, {"note", "hi"}});
    out.write(a.data(), 24);
    out.write(b.data(), 6);
    out.write(nullptr, 0);
    CHECK_FALSE(std::ifstream(path).good());  // nothing at the path until commit
    out.commit();
  }
  const SafetensorsFile file = read_safetensors_header(path);
  CHECK(file.data_start % 8 == 0);
  CHECK(file.metadata.at("note") == "hi");
  REQUIRE(file.tensors.size() == 3);
  const SafetensorsTensor* ta = file.find("a");
  REQUIRE(ta != nullptr);
  CHECK(ta->dtype == "F32");
  CHECK(ta->shape == std::vector<int64_t>{2, 3});
  std::vector<float> back(6);
  read_safetensors_data(file, *ta, back.data());
  CHECK(back == a);
  std::vector<uint16_t> back_b(3);
  read_safetensors_data(file, *file.find("b.x"), back_b.data());
  CHECK(back_b == b);
  CHECK(file.find("empty")->bytes() == 0);
  // The same bytes parsed in memory agree.
  CHECK(parse_safetensors(read_all(path), path).tensors.size() == 3);
}

TEST_CASE("safetensors: a writer abandoned before commit leaves no file") {
  testing::ScratchDir dir;
  const std::string path = dir.path() + "/w.safetensors";
  {
    SafetensorsWriter out(path, {{"a", "F32", {2}}}, {});
  }
  CHECK_FALSE(std::ifstream(path).good());
  CHECK_FALSE(std::ifstream(path + ".partial").good());
}

TEST_CASE("safetensors: hostile files are refused, naming the value") {
  const std::string f32x2(8, '\0');
  // Well-formed, for contrast.
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2)) == "(accepted)");
  CHECK(refusal("1234") .find("too short") != std::string::npos);
  // A header length past the file.
  std::string long_header = file_bytes(R"({})", "");
  long_header[1] = 0x40;
  CHECK(refusal(long_header).find("past the end of the file") != std::string::npos);
  CHECK(refusal(file_bytes("[1,2]", "")).find("does not start with '{'") != std::string::npos);
  CHECK(refusal(file_bytes("{\"a\":", "")).find("not a JSON object") != std::string::npos);
  // Unknown dtypes.
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", f32x2)).find("\"F31\"") !=
        std::string::npos);
  // Overlapping offsets.
  const std::string overlap =
      refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                         f32x2));
  CHECK(overlap.find("overlapping") != std::string::npos);
  // Out-of-range offsets, and a file truncated mid-tensor (the same thing seen from the header).
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2.substr(0, 5)))
            .find("outside the 5 bytes") != std::string::npos);
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", f32x2)).find("[8,0]") !=
        std::string::npos);
  // A hole, extra bytes, a span that is not shape x size, shapes that are not sizes or overflow.
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2)).find("a hole") !=
        std::string::npos);
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32x2)).find("cover 4 bytes") !=
        std::string::npos);
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2)).find("is 12 bytes") !=
        std::string::npos);
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2)).find("-2") !=
        std::string::npos);
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", f32x2))
            .find("64 bits") != std::string::npos);
  CHECK(refusal(file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", f32x2)).find("no 'data_offsets'") != std::string::npos);
  CHECK(refusal(file_bytes(R"({"__metadata__":{"k":1}})", "")).find("not a string") != std::string::npos);
}

TEST_CASE("safetensors: a file truncated after its header was read is an error, not an over-read") {
  testing::ScratchDir dir;
  const std::string path = dir.path() + "/w.safetensors";
  const std::vector<float> a(1024, 1.0f);
  {
    SafetensorsWriter out(path, {{"a", "F32", {1024}}}, {});
    out.write(a.data(), a.size() * 4);
    out.commit();
  }
  const SafetensorsFile file = read_safetensors_header(path);
  REQUIRE(::truncate(path.c_str(), static_cast<off_t>(file.data_start + 100)) == 0);
  std::vector<float> back(1024);
  CHECK_THROWS_WITH_AS(read_safetensors_data(file, file.tensors[0], back.data()), doctest::Contains("truncated"), InputError);
  CHECK_THROWS_WITH_AS(read_safetensors_header(path), doctest::Contains("outside the 100 bytes"), InputError);
}

// Export a trained checkpoint, start a new run from the file: every weight equal bit for bit, and
// the first step's loss equal to the checkpoint's own model's loss on the same batch.
TEST_CASE("export and --init-from round trip is bit-exact and step 0's loss is the exported model's") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const RunConfig run = tiny_run(data);
  const auto trained = trainer_of(run);
  for (int i = 0; i < 3; ++i) trained->train_step();
  const std::string saved = trained->save_checkpoint(dir.path(), 1);
  const std::string file = dir.path() + "/model.safetensors";
  export_weights(verify_checkpoint(saved), file, /*overwrite=*/false);
  CHECK(std::ifstream(dir.path() + "/config.json").good());
  CHECK_THROWS_WITH_AS(export_weights(verify_checkpoint(saved), file, false), doctest::Contains("--force"), InputError);
  CHECK(read_safetensors_header(file).metadata.at("step") == "3");

  const auto fine_tune = trainer_of(run);
  init_from_weights(file, run.model, *fine_tune);
  const auto expected = weights_of(*trained, run.model);
  const auto loaded = weights_of(*fine_tune, run.model);
  REQUIRE(expected.size() == loaded.size());
  for (const auto& [name, t] : expected) CHECK_MESSAGE(torch::equal(t, loaded.at(name)), name);

  // The exported model's loss on the first batch: the checkpoint loaded whole, data from the start.
  const auto exported = trainer_of(run);
  load_checkpoint(verify_checkpoint(saved), run.model, *exported);
  CHECK(fine_tune->train_step().loss == exported->train_step().loss);
}

TEST_CASE("a file from an independent writer (tests/write_safetensors.py) loads with its values") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const RunConfig run = tiny_run(data);
  const std::string file = dir.path() + "/python.safetensors";
  const auto written = testing::run_command("python3 " PIPETRAIN_SOURCE_DIR "/tests/write_safetensors.py " + file +
                                            " --vocab 256 --hidden 32 --layers 3 --intermediate 64 --seq-len 16");
  REQUIRE_MESSAGE(written.exit_code == 0, written.output);
  const auto trainer = trainer_of(run);
  init_from_weights(file, run.model, *trainer);
  // The script's order of names, and its formula for element k of tensor t.
  std::vector<std::string> names = {"embed.tokens.weight", "embed.positions.weight"};
  for (int i = 0; i < 3; ++i) {
    for (const char* p : {"ln1.weight", "ln1.bias", "qkv.weight", "qkv.bias", "attn_out.weight", "attn_out.bias", "ln2.weight",
                          "ln2.bias", "fc_in.weight", "fc_in.bias", "fc_out.weight", "fc_out.bias"}) {
      names.push_back("blocks." + std::to_string(i) + "." + p);
    }
  }
  for (const char* p : {"head.norm.weight", "head.norm.bias", "head.lm_head.weight"}) names.push_back(p);
  const auto weights = weights_of(*trainer, run.model);
  REQUIRE(weights.size() == names.size());
  for (size_t t = 0; t < names.size(); ++t) {
    const torch::Tensor got = weights.at(names[t]).reshape({-1});
    const torch::Tensor k = torch::arange(got.numel(), torch::kFloat64);
    const torch::Tensor want = ((k.fmod(97) - 48) / 64 + static_cast<double>(t) / 1024).to(torch::kFloat32);
    CHECK_MESSAGE(torch::equal(got, want), names[t]);
  }
}

TEST_CASE("--init-from refuses a missing, extra, misshapen or mistyped tensor by name, changing nothing") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const RunConfig run = tiny_run(data);
  const auto source = trainer_of(run);
  const auto good = weights_of(*source, run.model);
  const auto target = trainer_of(run);
  target->train_step();
  const auto before = weights_of(*target, run.model);
  const std::string file = dir.path() + "/w.safetensors";

  auto missing = good;
  missing.erase("blocks.1.fc_in.bias");
  write_weights(file, missing);
  CHECK(init_refusal(file, run, *target).find("no tensor 'blocks.1.fc_in.bias' (F32 [64])") != std::string::npos);

  auto extra = good;
  extra["blocks.7.qkv.weight"] = torch::zeros({2});
  write_weights(file, extra);
  CHECK(init_refusal(file, run, *target).find("'blocks.7.qkv.weight', which is no parameter") != std::string::npos);

  auto misshapen = good;
  misshapen["head.lm_head.weight"] = torch::zeros({255, 32});
  write_weights(file, misshapen);
  CHECK(init_refusal(file, run, *target).find("'head.lm_head.weight' is F32 [255, 32]; this model needs F32 [256, 32]") !=
        std::string::npos);

  auto mistyped = good;
  mistyped["embed.positions.weight"] = mistyped["embed.positions.weight"].to(torch::kHalf);
  write_weights(file, mistyped);
  CHECK(init_refusal(file, run, *target).find("'embed.positions.weight' is F16 [16, 32]") != std::string::npos);

  const auto after = weights_of(*target, run.model);
  for (const auto& [name, t] : before) CHECK_MESSAGE(torch::equal(t, after.at(name)), name);
}

TEST_CASE("pipetrain export and train --init-from: exit 0, and exit 2 naming what is wrong") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const std::string bin = PIPETRAIN_BINARY;
  const std::string small =
      " --config " + dir.file("tiny.yaml", testing::tiny_config_yaml(data, 2, 16));
  const auto trained = testing::run_command(bin + " train --steps 2 --out " + dir.path() + "/a" + small);
  REQUIRE_MESSAGE(trained.exit_code == 0, trained.output);
  const std::string file = dir.path() + "/out/model.safetensors";
  testing::run_command("mkdir -p " + dir.path() + "/out");
  const auto exported = testing::run_command(bin + " export " + dir.path() + "/a --out " + file);
  CHECK_MESSAGE(exported.exit_code == 0, exported.output);
  CHECK(std::ifstream(dir.path() + "/out/config.json").good());
  const auto again = testing::run_command(bin + " export " + dir.path() + "/a --out " + file);
  CHECK(again.exit_code == 2);
  CHECK(again.output.find("--force") != std::string::npos);
  CHECK(testing::run_command(bin + " export " + dir.path() + "/a --out " + file + " --force").exit_code == 0);

  const auto tuned = testing::run_command(bin + " train --steps 1 --out " + dir.path() + "/b --init-from " + file + small);
  CHECK_MESSAGE(tuned.exit_code == 0, tuned.output);
  CHECK(tuned.output.find("weights: from " + file) != std::string::npos);
  const auto wrong = testing::run_command(bin + " train --steps 1 --out " + dir.path() + "/c --init-from " + file + small +
                                          " --set model.intermediate_size=128");
  CHECK(wrong.exit_code == 2);
  CHECK(wrong.output.find("blocks.0.fc_in.weight") != std::string::npos);
  CHECK_FALSE(std::ifstream(dir.path() + "/c/metrics.jsonl").good());
  const auto garbage = testing::run_command("echo nonsense > " + dir.path() + "/g.safetensors && " + bin +
                                            " train --steps 1 --out " + dir.path() + "/d --init-from " + dir.path() +
                                            "/g.safetensors" + small);
  CHECK(garbage.exit_code == 2);
  CHECK(garbage.output.find("past the end of the file") != std::string::npos);
}
