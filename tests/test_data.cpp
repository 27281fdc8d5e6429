// runtime/data: windows, the held-out split, deterministic shuffling, and refusal of bad files.
#include <doctest/doctest.h>

#include <set>

#include "memory/errors.h"
#include "runtime/data/corpus.h"
#include "test_util.h"

using namespace pipetrain;
using pipetrain::testing::ScratchDir;

// Windows are seq_len + 1 consecutive bytes of one file: inputs and next-token targets.
TEST_CASE("batches hold consecutive bytes of the corpus") {
  ScratchDir dir;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>('a' + i % 26);
  const std::string path = dir.file("abc.txt", text);
  Corpus corpus({path}, 8, 0.2, 1);
  CHECK(corpus.total_bytes() == 1000);
  // train part = 800 bytes: windows at 0, 8, ..., while off + 9 <= 800 -> 99 windows
  CHECK(corpus.num_train_windows() == 99);
  const std::vector<int64_t> batch = corpus.next_train_batch(3);
  REQUIRE(batch.size() == 27);
  for (int row = 0; row < 3; ++row) {
    for (int k = 1; k < 9; ++k) {
      const int64_t prev = batch[row * 9 + k - 1], cur = batch[row * 9 + k];
      CHECK(cur == 'a' + (prev - 'a' + 1) % 26);
    }
  }
}

// The held-out part is the tail of every file and never appears in training windows.
TEST_CASE("validation windows come from the held-out tail of each file") {
  ScratchDir dir;
  const std::string a = dir.file("a.txt", std::string(900, 'a') + std::string(100, 'A'));
  const std::string b = dir.file("b.txt", std::string(900, 'b') + std::string(100, 'B'));
  Corpus corpus({a, b}, 16, 0.1, 7);
  std::set<int64_t> train_bytes, val_bytes;
  for (int i = 0; i < corpus.num_train_windows(); ++i) {
    for (int64_t t : corpus.next_train_batch(1)) train_bytes.insert(t);
  }
  for (int i = 0; i < corpus.num_val_windows(); ++i) {
    for (int64_t t : corpus.val_batch(i, 1)) val_bytes.insert(t);
  }
  CHECK(train_bytes == std::set<int64_t>{'a', 'b'});
  CHECK(val_bytes == std::set<int64_t>{'A', 'B'});
}

// Same seed, same order; another seed, another order; each epoch visits every window once.
TEST_CASE("shuffling is deterministic from the seed and covers every window per epoch") {
  ScratchDir dir;
  std::string text;
  for (int i = 0; i < 5000; ++i) text += static_cast<char>(' ' + (i * 7919) % 90);
  const std::string path = dir.file("t.txt", text);
  Corpus one({path}, 16, 0.1, 42), two({path}, 16, 0.1, 42), other({path}, 16, 0.1, 43);
  const int64_t n = one.num_train_windows();
  const auto first = one.next_train_batch(n);
  CHECK(first == two.next_train_batch(n));
  CHECK(first != other.next_train_batch(n));
  std::multiset<std::vector<int64_t>> epoch_one;
  for (int64_t r = 0; r < n; ++r) epoch_one.insert(std::vector<int64_t>(first.begin() + r * 17, first.begin() + (r + 1) * 17));
  CHECK(one.position().epoch == 0);
  const auto second = one.next_train_batch(n);
  CHECK(one.position().epoch == 1);
  CHECK_MESSAGE(second != first, "epoch 2 must be shuffled differently");
  std::multiset<std::vector<int64_t>> epoch_two;
  for (int64_t r = 0; r < n; ++r) epoch_two.insert(std::vector<int64_t>(second.begin() + r * 17, second.begin() + (r + 1) * 17));
  CHECK(epoch_one == epoch_two);
}

// A saved position resumes the stream exactly.
TEST_CASE("set_position resumes the stream") {
  ScratchDir dir;
  const std::string path = dir.file("t.txt", testing::sample_text(200));
  Corpus a({path}, 32, 0.1, 3), b({path}, 32, 0.1, 3);
  a.next_train_batch(a.num_train_windows() + 5);  // into epoch 1
  const DataPosition saved = a.position();
  const auto expected = a.next_train_batch(4);
  b.set_position(saved);
  CHECK(b.next_train_batch(4) == expected);
  CHECK_THROWS_AS(b.set_position({0, b.num_train_windows() + 1}), InputError);
}

// Missing, empty, binary and too-short files are refused, naming the file.
TEST_CASE("bad data files are refused with the file named") {
  ScratchDir dir;
  const std::string good = dir.file("good.txt", testing::sample_text(100));
  CHECK_THROWS_WITH_AS(Corpus({good, dir.path() + "/missing.txt"}, 16, 0.1, 1),
                       doctest::Contains(("data.files[1] '" + dir.path() + "/missing.txt' cannot be opened").c_str()), InputError);
  CHECK_THROWS_WITH_AS(Corpus({}, 16, 0.1, 1), doctest::Contains("data.files is empty; give at least one text file"),
                       InputError);
  CHECK_THROWS_WITH_AS(Corpus({dir.file("empty.txt", "")}, 16, 0.1, 1), doctest::Contains("empty.txt' is empty"),
                       InputError);
  CHECK_THROWS_WITH_AS(Corpus({dir.file("bin.dat", std::string("abc\0def", 7))}, 16, 0.1, 1),
                       doctest::Contains("looks binary (a NUL byte at offset 3)"), InputError);
  CHECK_THROWS_WITH_AS(Corpus({dir.file("short.txt", "tiny")}, 16, 0.1, 1),
                       doctest::Contains("too few for one training and one validation window"), InputError);
  CHECK_THROWS_WITH_AS(Corpus({dir.path()}, 16, 0.1, 1), doctest::Contains("is not a regular file"), InputError);
}
