#include <cxxopts.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/data/tokenizer.h"

namespace pipetrain::cli {
namespace {

int train(int argc, char** argv) {
  cxxopts::Options options("pipetrain tokenizer train",
                           "Trains a SentencePiece subword tokenizer on text files (byte fallback: any text encodes; no "
                           "normalisation: text decodes back to itself). Name it in a config as data.tokenizer; the "
                           "model's vocabulary size is then the tokenizer's.");
  options.add_options()
      ("files", "text files, comma-separated", cxxopts::value<std::string>())
      ("vocab-size", "pieces at most (a small corpus may support fewer)", cxxopts::value<int64_t>()->default_value("8000"))
      ("o,out", "the model to write: NAME.model (and NAME.vocab beside it)", cxxopts::value<std::string>())
      ("model-type", "unigram or bpe", cxxopts::value<std::string>()->default_value("unigram"))
      ("character-coverage", "share of the characters seen that get pieces of their own; the rest fall back to bytes",
       cxxopts::value<double>()->default_value("0.9995"))
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "tokenizer train");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("files") || !args.count("out")) {
    throw InputError("usage: pipetrain tokenizer train --files A,B --vocab-size N --out tok.model");
  }
  TokenizerTraining training;
  training.files = split_list(args["files"].as<std::string>());
  training.vocab_size = args["vocab-size"].as<int64_t>();
  training.out = args["out"].as<std::string>();
  training.model_type = args["model-type"].as<std::string>();
  training.character_coverage = args["character-coverage"].as<double>();
  std::fprintf(stderr, "training a %s tokenizer of at most %lld pieces on %zu file(s)...\n", training.model_type.c_str(),
               static_cast<long long>(training.vocab_size), training.files.size());
  const int64_t pieces = train_tokenizer(training);
  std::printf("wrote %s: %lld pieces (use it with --set data.tokenizer=%s)\n", training.out.c_str(),
              static_cast<long long>(pieces), training.out.c_str());
  return 0;
}

// Unicode characters in UTF-8 text: bytes that do not continue a sequence.
int64_t characters(const std::string& text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

int stats(int argc, char** argv) {
  cxxopts::Options options("pipetrain tokenizer stats",
                           "Counts characters, bytes and tokens of text files: tokens per character for bytes, and for "
                           "a SentencePiece model when given.");
  options.add_options()
      ("files", "text files, comma-separated", cxxopts::value<std::string>())
      ("tokenizer", "a SentencePiece model (pipetrain tokenizer train)", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "tokenizer stats");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("files")) throw InputError("usage: pipetrain tokenizer stats --files A,B [--tokenizer tok.model]");
  std::vector<Tokenizer> tokenizers = {Tokenizer::bytes()};
  if (args.count("tokenizer")) tokenizers.push_back(Tokenizer::load(args["tokenizer"].as<std::string>()));
  std::printf("%-40s %10s %10s %-40s %10s %10s\n", "file", "chars", "bytes", "tokenizer", "tokens", "per char");
  for (const std::string& file : split_list(args["files"].as<std::string>())) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw InputError("--files: '" + file + "' cannot be read");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const int64_t chars = characters(text);
    for (const Tokenizer& t : tokenizers) {
      const auto tokens = static_cast<int64_t>(t.encode(text).size());
      std::printf("%-40s %10lld %10zu %-40s %10lld %10.3f\n", file.c_str(), static_cast<long long>(chars), text.size(),
                  t.describe().c_str(), static_cast<long long>(tokens),
                  chars > 0 ? static_cast<double>(tokens) / static_cast<double>(chars) : 0.0);
    }
  }
  return 0;
}

}  // namespace

int tokenizer_command(int argc, char** argv) {
  const std::string sub = argc >= 2 ? argv[1] : "";
  if (sub == "train") return train(argc - 1, argv + 1);
  if (sub == "stats") return stats(argc - 1, argv + 1);
  if (sub == "--help" || sub == "-h") {
    std::printf("usage: pipetrain tokenizer train|stats [options]\n"
                "  train  train a SentencePiece subword tokenizer on text files\n"
                "  stats  tokens per character of text files, for bytes and a tokenizer\n");
    return 0;
  }
  throw InputError("pipetrain tokenizer needs train or stats" + (sub.empty() ? std::string() : ", not '" + sub + "'") +
                   " (try `pipetrain tokenizer --help`)");
}

}  // namespace pipetrain::cli
