// runtime/data/tokenizer and the corpus's token cache: a SentencePiece model trained here encodes
// and decodes any text back to itself (Korean, unseen characters through byte fallback), shortens
// Korean against bytes, is cached beside the corpus and made again when the text or the tokenizer
// changes; the config takes the vocabulary from it; train and generate use it from the command line.
#include <doctest/doctest.h>
#include <dirent.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "memory/errors.h"
#include "runtime/config/run_config.h"
#include "runtime/data/corpus.h"
#include "runtime/data/tokenizer.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

// Korean prose, repeated with variations: enough for a small vocabulary to learn its syllables.
std::string korean_text(int lines) {
  const char* sentences[] = {"이 프로그램은 자유 소프트웨어입니다. ", "누구나 이 프로그램을 복제하고 배포할 수 있습니다. ",
                             "이 라이선스의 조건에 따라 수정할 수 있습니다. ", "보증은 없습니다. ",
                             "자세한 내용은 라이선스 전문을 참고하십시오. ", "저작권 고지를 그대로 유지해야 합니다. "};
  std::string text;
  for (int i = 0; i < lines; ++i) {
    for (int k = 0; k < 4; ++k) text += sentences[(i * 5 + k * 2) % 6];
    text += "\n";
  }
  return text;
}

int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Files in a directory, not counting the models auto:N trained beside en.txt.
size_t entries(const std::string& path) {
  size_t n = 0;
  DIR* d = ::opendir(path.c_str());
  REQUIRE(d != nullptr);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != ".." && name.rfind("en.txt.auto-", 0) != 0) ++n;
  }
  ::closedir(d);
  return n;
}

// One tokenizer for the cases below: English sample text and Korean, 400 pieces at most.
std::string trained_model(testing::ScratchDir& dir) {
  TokenizerTraining training;
  training.files = {dir.file("en.txt", testing::sample_text(400)), dir.file("ko.txt", korean_text(300))};
  training.vocab_size = 400;
  training.out = dir.path() + "/tok.model";
  const int64_t pieces = train_tokenizer(training);
  CHECK(pieces > 256);
  CHECK(pieces <= 400);
  return training.out;
}

}  // namespace

TEST_CASE("a trained tokenizer decodes every text back to itself and shortens Korean") {
  testing::ScratchDir dir;
  const Tokenizer tok = Tokenizer::load(trained_model(dir));
  CHECK_FALSE(tok.is_bytes());
  CHECK(tok.describe().find("tok.model") != std::string::npos);
  for (const std::string text :
       {std::string("the pipeline stage moves tensors.\n  indented line\n\n"), korean_text(3),
        std::string("never seen: \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87 \x01 ~{}|"), std::string(" leading and trailing  "),
        std::string()}) {
    const std::vector<int32_t> ids = tok.encode(text);
    CHECK(tok.decode({ids.begin(), ids.end()}) == text);
    for (int32_t id : ids) CHECK((id >= 0 && id < tok.vocab_size()));
  }
  // Hangul is 3 bytes per syllable: the trained model needs far fewer tokens than bytes.
  const std::string ko = korean_text(20);
  CHECK(static_cast<double>(tok.encode(ko).size()) < 0.5 * static_cast<double>(ko.size()));
  CHECK_THROWS_WITH_AS(tok.decode({tok.vocab_size()}), doctest::Contains("outside the vocabulary"), InputError);
  // Bytes: the identity.
  const Tokenizer bytes = Tokenizer::bytes();
  CHECK(bytes.vocab_size() == 256);
  CHECK(bytes.encode("ab") == std::vector<int32_t>{97, 98});
  CHECK(bytes.decode({104, 105}) == "hi");
}

TEST_CASE("tokenizer training and loading refuse bad input by name") {
  testing::ScratchDir dir;
  TokenizerTraining t;
  t.files = {dir.file("a.txt", testing::sample_text(50))};
  t.out = dir.path() + "/x.bin";
  CHECK_THROWS_WITH_AS(train_tokenizer(t), doctest::Contains("must end in .model"), InputError);
  t.out = dir.path() + "/x.model";
  t.vocab_size = 100;
  CHECK_THROWS_WITH_AS(train_tokenizer(t), doctest::Contains("--vocab-size 100"), InputError);
  t.vocab_size = 300;
  t.files = {dir.path() + "/missing.txt"};
  CHECK_THROWS_WITH_AS(train_tokenizer(t), doctest::Contains("missing.txt' cannot be read"), InputError);
  CHECK_THROWS_WITH_AS(Tokenizer::load(dir.path() + "/nope.model"), doctest::Contains("does not exist"), InputError);
  CHECK_THROWS_WITH_AS(Tokenizer::load(dir.file("junk.model", "not a model")), doctest::Contains("not a SentencePiece model"),
                       InputError);
  CHECK_THROWS_WITH_AS(Tokenizer::load(dir.path()), doctest::Contains("not a regular file"), InputError);
}

TEST_CASE("the corpus reads subword tokens from a cache made once, and made again when text or tokenizer change") {
  testing::ScratchDir dir;
  const std::string model = trained_model(dir);
  const Tokenizer tok = Tokenizer::load(model);
  const std::string text = korean_text(60) + testing::sample_text(60);
  const std::string file = dir.file("corpus.txt", text);
  const std::vector<int32_t> expected = tok.encode(text);

  std::string cache;
  int64_t made = 0;
  {
    Corpus corpus({file}, 16, 0.1, 1, tok);
    REQUIRE(corpus.token_sources().size() == 1);
    cache = corpus.token_sources()[0];
    CHECK(cache.rfind(file + ".tok-", 0) == 0);  // beside the corpus
    CHECK(corpus.total_tokens() == static_cast<int64_t>(expected.size()));
    CHECK(corpus.total_bytes() == static_cast<int64_t>(text.size()));
    // The first training window of the (unshuffled) file is the first 17 tokens, somewhere in the batches.
    const std::vector<int64_t> first(expected.begin(), expected.begin() + 17);
    bool found = false;
    for (int64_t b = 0; b < corpus.num_train_windows() && !found; ++b) {
      const std::vector<int64_t> row = corpus.next_train_batch(1);
      found = row == first;
    }
    CHECK(found);
    made = mtime_ns(cache);
  }
  {
    Corpus again({file}, 16, 0.1, 1, tok);
    CHECK(again.token_sources()[0] == cache);
    CHECK(mtime_ns(cache) == made);  // read, not made again
  }
  // The text changes (same size): the cache is stale and made again, with the new tokens.
  std::string changed = text;
  changed[0] = 'X';
  std::ofstream(file, std::ios::binary | std::ios::trunc) << changed;
  {
    Corpus fresh({file}, 16, 0.1, 1, tok);
    CHECK(fresh.total_tokens() == static_cast<int64_t>(tok.encode(changed).size()));
  }
  // Another tokenizer: another cache file.
  TokenizerTraining other;
  other.files = {file};
  other.vocab_size = 600;
  other.out = dir.path() + "/other.model";
  train_tokenizer(other);
  Corpus by_other({file}, 16, 0.1, 1, Tokenizer::load(other.out));
  CHECK(by_other.token_sources()[0] != cache);
  // A cache whose ids were damaged: refused by name when read, never an index past the embedding.
  {
    std::fstream f(cache, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(48);
    const int32_t bad = 1 << 20;
    for (int k = 0; k < 4000; ++k) f.write(reinterpret_cast<const char*>(&bad), 4);
  }
  Corpus damaged({file}, 16, 0.1, 1, tok);
  CHECK_THROWS_WITH_AS(
      for (int b = 0; b < 50; ++b) damaged.next_train_batch(4), doctest::Contains("outside the vocabulary"), InputError);
}

TEST_CASE("the config takes the vocabulary from data.tokenizer and refuses one that disagrees") {
  testing::ScratchDir dir;
  const std::string model = trained_model(dir);
  const int64_t pieces = Tokenizer::load(model).vocab_size();
  const RunConfig run = parse_run_config("data:\n  tokenizer: " + model + "\n", "test");
  CHECK(run.model.vocab_size == pieces);
  CHECK(run.data.tokenizer == model);
  CHECK(to_yaml(run).find("tokenizer: " + model) != std::string::npos);
  // The default config states no vocabulary: --set data.tokenizer is enough.
  CHECK(parse_run_config(default_config_text(), "default", {"data.tokenizer=" + model}).model.vocab_size == pieces);
  CHECK_THROWS_WITH_AS(parse_run_config("model:\n  vocab_size: 256\ndata:\n  tokenizer: " + model + "\n", "test"),
                       doctest::Contains("model.vocab_size = 256, but data.tokenizer"), InputError);
  CHECK_THROWS_WITH_AS(parse_run_config("data:\n  tokenizer: " + dir.path() + "/none.model\n", "test"),
                       doctest::Contains("none.model' does not exist"), InputError);
}

TEST_CASE("data.tokenizer auto:N trains one model of N pieces on the data, and reads it again after") {
  testing::ScratchDir dir;
  const std::vector<std::string> files = {dir.file("en.txt", testing::sample_text(400)), dir.file("ko.txt", korean_text(300))};
  const Tokenizer first = corpus_tokenizer("auto:350", files);
  CHECK(first.vocab_size() == 350);  // exactly N: the planner sized the model before training it
  CHECK(first.path().rfind(files[0] + ".auto-350-", 0) == 0);  // beside the first file
  const int64_t made = mtime_ns(first.path());
  const Tokenizer again = corpus_tokenizer("auto:350", files);
  CHECK(again.path() == first.path());
  CHECK(again.fingerprint() == first.fingerprint());
  CHECK(mtime_ns(first.path()) == made);  // read, not trained again
  // Other text, or another N: another model.
  std::ofstream(files[1], std::ios::app) << korean_text(3);
  CHECK(corpus_tokenizer("auto:350", files).path() != first.path());
  CHECK(corpus_tokenizer("auto:360", files).path() != first.path());
  // The config's model takes N without training anything.
  CHECK(parse_run_config("data:\n  tokenizer: auto:777\n", "test").model.vocab_size == 777);
  for (const std::string bad : {"auto:", "auto:12", "auto:2000000", "auto:1e4", "auto:-300"}) {
    const std::string expected = "'" + bad + "': auto:N needs N pieces in 260..1000000";
    CHECK_THROWS_WITH_AS(parse_run_config("data:\n  tokenizer: '" + bad + "'\n", "test"), doctest::Contains(expected.c_str()),
                         InputError);
  }
  // More pieces than the text supports: refused by name, nothing left behind.
  const std::string small = dir.file("small.txt", "a small text\n");
  CHECK_THROWS_WITH_AS(corpus_tokenizer("auto:5000", {small}), doctest::Contains("data.tokenizer 'auto:5000'"), InputError);
  CHECK(entries(dir.path()) == 3);  // en.txt, ko.txt, small.txt
  CHECK_THROWS_WITH_AS(Tokenizer::named("auto:350"), doctest::Contains("trained on the run's data.files"), InputError);
}

TEST_CASE("pipetrain tokenizer, then train and generate with it") {
  testing::ScratchDir dir;
  const std::string bin = PIPETRAIN_BINARY;
  const std::string ko = dir.file("ko.txt", korean_text(400));
  const std::string model = dir.path() + "/ko.model";
  const auto trained = testing::run_command(bin + " tokenizer train --files " + ko + " --vocab-size 500 --out " + model);
  REQUIRE_MESSAGE(trained.exit_code == 0, trained.output);
  CHECK(trained.output.find("pieces") != std::string::npos);
  const auto stats = testing::run_command(bin + " tokenizer stats --files " + ko + " --tokenizer " + model);
  CHECK(stats.exit_code == 0);
  // Two rows for the file, bytes then the model: the model's tokens per character are fewer.
  std::vector<double> per_char;
  std::istringstream rows(stats.output);
  for (std::string row; std::getline(rows, row);) {
    if (row.rfind(ko, 0) == 0) per_char.push_back(std::stod(row.substr(row.find_last_of(' ') + 1)));
  }
  REQUIRE(per_char.size() == 2);
  CHECK(per_char[0] > 2.0);  // Hangul: 3 bytes a syllable, 1 a space
  CHECK(per_char[1] < 0.5 * per_char[0]);
  CHECK(testing::run_command(bin + " tokenizer train --files " + ko + " --vocab-size 5 --out " + model).exit_code == 2);
  CHECK(testing::run_command(bin + " tokenizer frobnicate").exit_code == 2);

  const std::string config = dir.file("tiny.yaml", testing::tiny_config_yaml(ko, 1, 16, "  tokenizer: " + model + "\n"));
  const auto run = testing::run_command(bin + " train --config " + config + " --steps 3 --out " + dir.path() + "/run");
  REQUIRE_MESSAGE(run.exit_code == 0, run.output);
  CHECK(run.output.find("tokens of sentencepiece") != std::string::npos);
  const auto text = testing::run_command("(" + bin + " generate " + dir.path() + "/run --prompt '이 프로그램' --max-tokens 20 2>/dev/null)");
  CHECK_MESSAGE(text.exit_code == 0, text.output);
  CHECK(text.output.rfind("이 프로그램", 0) == 0);
  CHECK(text.output.size() > std::string("이 프로그램").size() + 1);

  // auto:N: the run keeps the model it trained in its directory and names it in its config, so
  // generate reads the same pieces after the cached model is gone.
  const std::string mixed = dir.file("mixed.txt", korean_text(300) + testing::sample_text(400));
  const std::string auto_config = dir.file("auto.yaml", testing::tiny_config_yaml(mixed, 1, 16, "  tokenizer: auto:350\n"));
  const auto auto_run = testing::run_command(bin + " train --config " + auto_config + " --steps 2 --out " + dir.path() + "/auto");
  REQUIRE_MESSAGE(auto_run.exit_code == 0, auto_run.output);
  CHECK(auto_run.output.find("training the data.tokenizer model (auto:350") != std::string::npos);
  CHECK(auto_run.output.find("per byte of text") != std::string::npos);
  const std::string kept = dir.path() + "/auto/tokenizer.model";
  CHECK(contents(dir.path() + "/auto/config.yaml").find("tokenizer: " + kept) != std::string::npos);
  const Tokenizer cached = corpus_tokenizer("auto:350", {mixed});
  CHECK(Tokenizer::load(kept).fingerprint() == cached.fingerprint());
  REQUIRE(std::remove(cached.path().c_str()) == 0);
  const auto from_copy = testing::run_command("(" + bin + " generate " + dir.path() + "/auto --prompt '이' --max-tokens 5 2>&1)");
  CHECK_MESSAGE(from_copy.exit_code == 0, from_copy.output);
  CHECK(from_copy.output.find(kept) != std::string::npos);
  // A resume with another tokenizer is refused by name, and the run's own model is not replaced.
  const std::string before = contents(kept);
  const std::string other = " --set data.tokenizer=" + model;  // config.yaml states the vocabulary: it must agree
  const auto mismatched = testing::run_command(bin + " train --resume " + dir.path() + "/auto --steps 4" + other);
  CHECK(mismatched.exit_code == 2);
  CHECK(mismatched.output.find("model.vocab_size = 350, but data.tokenizer") != std::string::npos);
  const std::string pieces = std::to_string(Tokenizer::load(model).vocab_size());
  const auto changed = testing::run_command(bin + " train --resume " + dir.path() + "/auto --steps 4" + other +
                                            " --set model.vocab_size=" + pieces);
  CHECK_MESSAGE(changed.exit_code == 2, changed.output);
  CHECK(changed.output.find("tokenizer: data.tokenizer's model (fingerprint") != std::string::npos);
  CHECK(changed.output.find("model: model.vocab_size 350 -> " + pieces) != std::string::npos);
  CHECK(contents(kept) == before);
}
