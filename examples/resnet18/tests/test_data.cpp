// Tests of the dataset loaders: exact read-back of generated CIFAR-10 and IDX files, and every error path.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include "data.hpp"
#include "data_test_files.hpp"

using namespace resnet18;
using namespace resnet18::testing;
namespace fs = std::filesystem;

namespace {

// The message of the DataError that `f` throws ("" if it throws none).
template <class F>
std::string data_error(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// CIFAR-10 train files of 3, 3, 2, 3, 3 records and a test file of 4.
void write_cifar(const fs::path& dir) {
  const std::size_t sizes[5] = {3, 3, 2, 3, 3};
  std::size_t first = 0;
  for (int i = 0; i < 5; ++i) {
    write_bytes(dir / ("data_batch_" + std::to_string(i + 1) + ".bin"), cifar_records(first, sizes[i]));
    first += sizes[i];
  }
  write_bytes(dir / "test_batch.bin", cifar_records(1000, 4));
}

void check_cifar_record(const Dataset& d, std::size_t i, std::size_t record) {
  REQUIRE(i < d.size());
  CHECK(d.labels[i] == test_label(record));
  const auto img = d.image(i);
  bool all_equal = true;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        all_equal &= img[static_cast<std::size_t>((c * 32 + y) * 32 + x)] ==
                     static_cast<float>(test_pixel(record, c, y, x)) / 255.0f;
  CHECK_MESSAGE(all_equal, "pixels of record " << record << " differ");
}

const char* const idx_names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                  "t10k-labels-idx1-ubyte"};

void write_idx_dir(const fs::path& dir, bool gz) {
  const Bytes files[4] = {idx_images(5, 4, 3), idx_labels(5), idx_images(2, 4, 3), idx_labels(2)};
  for (int i = 0; i < 4; ++i) {
    if (gz) {
      write_gzip(dir / (std::string(idx_names[i]) + ".gz"), files[i]);
    } else {
      write_bytes(dir / idx_names[i], files[i]);
    }
  }
}

void check_idx(const Dataset& d, std::size_t count) {
  REQUIRE(d.size() == count);
  CHECK(d.channels == 1);
  CHECK(d.height == 4);
  CHECK(d.width == 3);
  CHECK(d.num_classes == 10);
  REQUIRE(d.images.size() == count * 12);
  bool all_equal = true;
  for (std::size_t r = 0; r < count; ++r) {
    CHECK(d.labels[r] == test_label(r));
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 3; ++x)
        all_equal &= d.images[r * 12 + static_cast<std::size_t>(y * 3 + x)] ==
                     static_cast<float>(test_pixel(r, 0, y, x)) / 255.0f;
  }
  CHECK(all_equal);
}

}  // namespace

TEST_SUITE("cifar10") {
  TEST_CASE("train and test files read back exactly, in CHW order") {
    TempDir dir;
    write_cifar(dir.path());
    const Dataset train = load_cifar10(dir.path(), Split::train);
    CHECK(train.name == "cifar10");
    CHECK(train.channels == 3);
    CHECK(train.height == 32);
    CHECK(train.width == 32);
    CHECK(train.num_classes == 10);
    REQUIRE(train.size() == 14);
    CHECK(train.images.size() == 14 * 3072);
    for (std::size_t i = 0; i < 14; ++i) check_cifar_record(train, i, i);
    CHECK(train.mean == std::vector<float>{0.4914f, 0.4822f, 0.4465f});
    CHECK(train.stddev == std::vector<float>{0.2470f, 0.2435f, 0.2616f});

    const Dataset test = load_cifar10(dir.path(), Split::test);
    REQUIRE(test.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) check_cifar_record(test, i, 1000 + i);
  }

  TEST_CASE("a limit keeps the first images across files and reads no further files") {
    TempDir dir;
    write_cifar(dir.path());
    const Dataset d = load_cifar10(dir.path(), Split::train, 5);
    REQUIRE(d.size() == 5);
    for (std::size_t i = 0; i < 5; ++i) check_cifar_record(d, i, i);
    // Files 3..5 are not needed for 5 images.
    fs::remove(dir / "data_batch_4.bin");
    CHECK(load_cifar10(dir.path(), Split::train, 6).size() == 6);
    CHECK(contains(data_error([&] { load_cifar10(dir.path(), Split::train, 9); }), "data_batch_4.bin"));
  }

  TEST_CASE("a missing file is named") {
    TempDir dir;
    write_cifar(dir.path());
    fs::remove(dir / "data_batch_3.bin");
    const std::string msg = data_error([&] { load_cifar10(dir.path(), Split::train); });
    CHECK(contains(msg, (dir / "data_batch_3.bin").string()));
    CHECK(contains(msg, "No such file or directory"));
    CHECK(contains(data_error([&] { load_cifar10(dir / "nowhere", Split::test); }), "test_batch.bin"));
  }

  TEST_CASE("a truncated file names the incomplete record") {
    TempDir dir;
    write_cifar(dir.path());
    Bytes b = cifar_records(6, 2);
    b.resize(b.size() + 100, 0);  // record 2 has only 100 bytes
    write_bytes(dir / "data_batch_3.bin", b);
    const std::string msg = data_error([&] { load_cifar10(dir.path(), Split::train); });
    CHECK(contains(msg, (dir / "data_batch_3.bin").string() + ": truncated: 6246 bytes"));
    CHECK(contains(msg, "3073-byte records (record 2 has 100 bytes)"));
  }

  TEST_CASE("a file smaller than one record, or empty, is an error") {
    TempDir dir;
    write_bytes(dir / "test_batch.bin", Bytes(1000, 1));
    CHECK(contains(data_error([&] { load_cifar10(dir.path(), Split::test); }),
                   "test_batch.bin: truncated: 1000 bytes is not a whole number of 3073-byte records (record 0"));
    write_bytes(dir / "test_batch.bin", Bytes{});
    CHECK(contains(data_error([&] { load_cifar10(dir.path(), Split::test); }), "test_batch.bin: empty file"));
  }

  TEST_CASE("a label out of range names the file and record") {
    TempDir dir;
    write_cifar(dir.path());
    Bytes b = cifar_records(6, 2);
    b[3073] = 12;  // label of record 1
    write_bytes(dir / "data_batch_3.bin", b);
    CHECK(data_error([&] { load_cifar10(dir.path(), Split::train); }) ==
          (dir / "data_batch_3.bin").string() + ": record 1: label 12 is out of range 0..9");
    // Validated even when a limit means the record is not kept.
    CHECK_FALSE(data_error([&] { load_cifar10(dir.path(), Split::train, 7); }).empty());
  }

  TEST_CASE("a directory where a file should be is an error") {
    TempDir dir;
    fs::create_directory(dir / "test_batch.bin");
    CHECK(contains(data_error([&] { load_cifar10(dir.path(), Split::test); }), "test_batch.bin: not a regular file"));
  }
}

TEST_SUITE("idx") {
  TEST_CASE("plain and gzip files read back exactly") {
    for (const bool gz : {false, true}) {
      CAPTURE(gz);
      TempDir dir;
      write_idx_dir(dir.path(), gz);
      const Dataset train = load_fashion_mnist(dir.path(), Split::train);
      CHECK(train.name == "fashion-mnist");
      check_idx(train, 5);
      CHECK(train.mean == std::vector<float>{0.2860f});
      CHECK(train.stddev == std::vector<float>{0.3530f});
      check_idx(load_fashion_mnist(dir.path(), Split::test), 2);
      check_idx(load_fashion_mnist(dir.path(), Split::train, 3), 3);
      const Dataset mnist = load_mnist(dir.path(), Split::train);
      CHECK(mnist.mean == std::vector<float>{0.1307f});
      check_idx(mnist, 5);
    }
  }

  TEST_CASE("plain and gzip files can be mixed, and plain wins when both exist") {
    TempDir dir;
    write_gzip(dir / "train-images-idx3-ubyte.gz", idx_images(5, 4, 3));
    write_bytes(dir / "train-labels-idx1-ubyte", idx_labels(5));
    write_bytes(dir / "train-labels-idx1-ubyte.gz", Bytes{1, 2, 3});  // would fail if read
    check_idx(load_fashion_mnist(dir.path(), Split::train), 5);
  }

  TEST_CASE("missing files are named") {
    TempDir dir;
    const std::string msg = data_error([&] { load_fashion_mnist(dir.path(), Split::train); });
    CHECK(contains(msg, dir.path().string()));
    CHECK(contains(msg, "neither train-labels-idx1-ubyte nor train-labels-idx1-ubyte.gz found"));
    CHECK(contains(data_error([&] { load_idx(dir / "a", dir / "b"); }), (dir / "b").string() + ": cannot open"));
  }

  TEST_CASE("bad magic numbers") {
    for (const bool gz : {false, true}) {
      CAPTURE(gz);
      TempDir dir;
      const fs::path images = dir / (gz ? "i.gz" : "i");
      const fs::path labels = dir / (gz ? "l.gz" : "l");
      auto put = [&](const fs::path& f, const Bytes& b) { gz ? write_gzip(f, b) : write_bytes(f, b); };
      put(labels, idx_labels(5));
      put(images, idx_images(5, 4, 3, 0x00000802));
      CHECK(data_error([&] { load_idx(images, labels); }) ==
            images.string() + ": bad magic 0x00000802, expected 0x00000803 (2 dimensions, expected 3)");
      put(images, idx_images(5, 4, 3, 0x00000804));
      CHECK(contains(data_error([&] { load_idx(images, labels); }),
                     "bad magic 0x00000804, expected 0x00000803 (4 dimensions, expected 3)"));
      put(images, idx_images(5, 4, 3, 0x00000d03));
      CHECK(contains(data_error([&] { load_idx(images, labels); }), "(element type 0x0d is not unsigned byte 0x08)"));
      put(images, idx_images(5, 4, 3, 0x89504e47));
      CHECK(contains(data_error([&] { load_idx(images, labels); }), "bad magic 0x89504e47, expected 0x00000803 (not an IDX file)"));
      put(images, idx_images(5, 4, 3));
      put(labels, idx_images(5, 4, 3));  // images given as labels
      CHECK(data_error([&] { load_idx(images, labels); }) ==
            labels.string() + ": bad magic 0x00000803, expected 0x00000801 (3 dimensions, expected 1)");
    }
  }

  TEST_CASE("truncated files report expected and actual sizes") {
    for (const bool gz : {false, true}) {
      CAPTURE(gz);
      TempDir dir;
      const fs::path images = dir / (gz ? "i.gz" : "i");
      const fs::path labels = dir / (gz ? "l.gz" : "l");
      auto put = [&](const fs::path& f, const Bytes& b) { gz ? write_gzip(f, b) : write_bytes(f, b); };
      put(labels, idx_labels(5));
      Bytes b = idx_images(5, 4, 3);  // 16 + 60 bytes
      b.resize(50);
      put(images, b);
      CHECK(data_error([&] { load_idx(images, labels); }) == images.string() + ": truncated: expected 76 bytes, got 50");
      b.resize(7);
      put(images, b);
      CHECK(data_error([&] { load_idx(images, labels); }) ==
            images.string() + ": truncated header: expected 16 bytes, got 7");
      b.resize(2);
      put(images, b);
      CHECK(contains(data_error([&] { load_idx(images, labels); }), "truncated header: expected 16 bytes, got 2"));
      put(images, idx_images(5, 4, 3));
      Bytes l = idx_labels(5);
      l.pop_back();
      put(labels, l);
      CHECK(data_error([&] { load_idx(images, labels); }) == labels.string() + ": truncated: expected 13 bytes, got 12");
    }
  }

  TEST_CASE("a gzip stream cut short is reported as truncated") {
    TempDir dir;
    write_bytes(dir / "l", idx_labels(200));
    write_gzip(dir / "i.gz", idx_images(200, 28, 28));
    Bytes gz = read_bytes(dir / "i.gz");
    gz.resize(gz.size() / 2);
    write_bytes(dir / "i.gz", gz);
    const std::string msg = data_error([&] { load_idx(dir / "i.gz", dir / "l"); });
    CHECK(contains(msg, (dir / "i.gz").string() + ": truncated: expected 156816 bytes, got "));
    CHECK(contains(msg, "(gzip: unexpected end of file)"));
  }

  TEST_CASE("trailing data is an error") {
    TempDir dir;
    Bytes b = idx_images(5, 4, 3);
    b.push_back(0);
    write_bytes(dir / "i", b);
    write_bytes(dir / "l", idx_labels(5));
    CHECK(data_error([&] { load_idx(dir / "i", dir / "l"); }) ==
          (dir / "i").string() + ": trailing data: expected 76 bytes, the file is longer");
  }

  TEST_CASE("image and label counts must match") {
    TempDir dir;
    write_bytes(dir / "i", idx_images(5, 4, 3));
    write_bytes(dir / "l", idx_labels(4));
    const std::string msg = data_error([&] { load_idx(dir / "i", dir / "l"); });
    CHECK(contains(msg, (dir / "i").string()));
    CHECK(contains(msg, (dir / "l").string()));
    CHECK(contains(msg, "image count 5 does not match label count 4"));
  }

  TEST_CASE("a header claiming an enormous file fails as truncated without allocating it") {
    TempDir dir;
    Bytes b = idx_images(0, 4, 3);
    b[4] = b[5] = b[6] = b[7] = 0xff;  // 4294967295 images of 4x3
    write_bytes(dir / "i", b);
    Bytes l = idx_labels(0);
    l[4] = l[5] = l[6] = l[7] = 0xff;
    write_bytes(dir / "l", l);
    CHECK(data_error([&] { load_idx(dir / "i", dir / "l"); }) ==
          (dir / "l").string() + ": truncated: expected 4294967303 bytes, got 8");
  }

  TEST_CASE("empty images and implausible sizes") {
    TempDir dir;
    write_bytes(dir / "i", idx_images(0, 4, 3));
    write_bytes(dir / "l", idx_labels(0));
    CHECK(contains(data_error([&] { load_idx(dir / "i", dir / "l"); }), "contains no images"));
    write_bytes(dir / "i", idx_images(1, 0, 3));
    write_bytes(dir / "l", idx_labels(1));
    CHECK(contains(data_error([&] { load_idx(dir / "i", dir / "l"); }), "image size 0x3 is not plausible"));
  }

  TEST_CASE("a label out of range names the record") {
    TempDir dir;
    write_bytes(dir / "i", idx_images(5, 4, 3));
    Bytes l = idx_labels(5);
    l[8 + 3] = 10;
    write_gzip(dir / "l.gz", l);
    CHECK(data_error([&] { load_idx(dir / "i", dir / "l.gz"); }) ==
          (dir / "l.gz").string() + ": record 3: label 10 is out of range 0..9");
  }

  TEST_CASE("corrupt gzip streams are reported") {
    TempDir dir;
    write_bytes(dir / "l", idx_labels(50));
    write_gzip(dir / "i.gz", idx_images(50, 8, 8));
    const Bytes good = read_bytes(dir / "i.gz");
    REQUIRE(good.size() > 30);
    REQUIRE(good[0] == 0x1f);
    REQUIRE(good[1] == 0x8b);

    SUBCASE("reserved deflate block type") {
      Bytes bad = good;
      bad[10] = static_cast<std::uint8_t>(bad[10] | 0x06);  // BTYPE = 11, reserved
      write_bytes(dir / "i.gz", bad);
      CHECK(data_error([&] { load_idx(dir / "i.gz", dir / "l"); }) ==
            (dir / "i.gz").string() + ": corrupt gzip stream: invalid block type");
    }
    SUBCASE("CRC of the trailer does not match") {
      Bytes bad = good;
      bad[bad.size() - 8] ^= 0xff;
      write_bytes(dir / "i.gz", bad);
      CHECK(data_error([&] { load_idx(dir / "i.gz", dir / "l"); }) ==
            (dir / "i.gz").string() + ": corrupt gzip stream: incorrect data check");
    }
    SUBCASE("unknown header flags") {
      Bytes bad = good;
      bad[3] = 0xe0;
      write_bytes(dir / "i.gz", bad);
      CHECK(contains(data_error([&] { load_idx(dir / "i.gz", dir / "l"); }), "corrupt gzip stream: unknown header flags set"));
    }
  }
}

TEST_SUITE("synthetic") {
  TEST_CASE("the same options give the same data, and other seeds do not") {
    SyntheticOptions o;
    o.seed = 42;
    o.count = 50;
    o.channels = 3;
    o.size = 16;
    const Dataset a = make_synthetic(o);
    const Dataset b = make_synthetic(o);
    CHECK(a.images == b.images);
    CHECK(a.labels == b.labels);
    CHECK(a.mean == b.mean);
    REQUIRE(a.size() == 50);
    CHECK(a.images.size() == 50 * 3 * 16 * 16);
    CHECK(std::all_of(a.images.begin(), a.images.end(), [](float v) { return v >= 0.0f && v <= 1.0f; }));
    for (std::size_t i = 0; i < 50; ++i) CHECK(a.labels[i] == i % 10);

    SyntheticOptions other = o;
    other.seed = 43;
    CHECK(make_synthetic(other).images != a.images);
    other = o;
    other.sample_seed = 1;
    CHECK(make_synthetic(other).images != a.images);

    // Sample i does not depend on the count: a smaller set is a prefix.
    SyntheticOptions small = o;
    small.count = 20;
    const Dataset s = make_synthetic(small);
    CHECK(std::equal(s.images.begin(), s.images.end(), a.images.begin()));
  }

  TEST_CASE("normalization constants are the data's own statistics") {
    SyntheticOptions o;
    o.count = 200;
    o.channels = 2;
    o.size = 8;
    const Dataset d = make_synthetic(o);
    REQUIRE(d.mean.size() == 2);
    REQUIRE(d.stddev.size() == 2);
    for (int c = 0; c < 2; ++c) {
      double s = 0, s2 = 0;
      std::size_t n = 0;
      for (std::size_t i = 0; i < d.size(); ++i)
        for (std::size_t k = 0; k < 64; ++k) {
          const double v = d.images[i * 128 + static_cast<std::size_t>(c) * 64 + k];
          s += v;
          s2 += v * v;
          ++n;
        }
      const double m = s / static_cast<double>(n);
      CHECK(d.mean[static_cast<std::size_t>(c)] == doctest::Approx(m).epsilon(1e-5));
      CHECK(d.stddev[static_cast<std::size_t>(c)] ==
            doctest::Approx(std::sqrt(s2 / static_cast<double>(n) - m * m)).epsilon(1e-4));
    }
  }

  TEST_CASE("classes are separable: 1-nearest-neighbour on raw pixels beats chance by far") {
    // Not the CNN test (that lives with the model), but evidence that the classes carry
    // signal beyond the noise: the test split shares the class patterns and not the samples.
    DatasetOptions o;
    o.name = "synthetic";
    o.synthetic.count = 400;
    o.synthetic.channels = 3;
    o.synthetic.size = 12;
    const Dataset train = load_dataset(o, Split::train);
    o.synthetic.count = 100;
    const Dataset test = load_dataset(o, Split::test);
    CHECK_FALSE(std::equal(test.images.begin(), test.images.end(), train.images.begin()));
    const std::size_t n = train.image_size();
    std::size_t correct = 0;
    for (std::size_t t = 0; t < test.size(); ++t) {
      double best = 1e300;
      std::size_t best_label = 0;
      for (std::size_t i = 0; i < train.size(); ++i) {
        double dist = 0;
        for (std::size_t k = 0; k < n; ++k) {
          const double diff = double(test.images[t * n + k]) - double(train.images[i * n + k]);
          dist += diff * diff;
        }
        if (dist < best) {
          best = dist;
          best_label = train.labels[i];
        }
      }
      correct += best_label == test.labels[t];
    }
    MESSAGE("1-NN accuracy on synthetic: " << correct << "/100");
    CHECK(correct >= 60);
  }

  TEST_CASE("bad options are rejected") {
    SyntheticOptions o;
    o.count = 0;
    CHECK_THROWS_AS(make_synthetic(o), DataError);
    o.count = 10;
    o.num_classes = 300;
    CHECK_THROWS_AS(make_synthetic(o), DataError);
  }
}

TEST_CASE("load_dataset dispatches by name and rejects unknown names") {
  DatasetOptions o;
  o.name = "imagenet";
  CHECK(contains(data_error([&] { load_dataset(o, Split::train); }), "unknown dataset 'imagenet'"));
  o.name = "cifar10";
  CHECK(contains(data_error([&] { load_dataset(o, Split::train); }), "no data directory"));
  TempDir dir;
  write_cifar(dir.path());
  o.dir = dir.path();
  o.limit = 2;
  CHECK(load_dataset(o, Split::train).size() == 2);
  o.name = "synthetic";
  o.synthetic.count = 30;
  CHECK(load_dataset(o, Split::train).size() == 2);
}

TEST_CASE("Debian's Fashion-MNIST files, when installed") {
  const fs::path dir = default_fashion_mnist_dir;
  std::error_code ec;
  if (!fs::exists(dir / "train-images-idx3-ubyte.gz", ec) && !fs::exists(dir / "train-images-idx3-ubyte", ec)) {
    MESSAGE("skipped: no Fashion-MNIST in " << dir << " (Debian package dataset-fashion-mnist)");
    return;
  }
  const Dataset train = load_fashion_mnist(dir, Split::train);
  const Dataset test = load_fashion_mnist(dir, Split::test);
  REQUIRE(train.size() == 60000);
  REQUIRE(test.size() == 10000);
  for (const Dataset* d : {&train, &test}) {
    CHECK(d->channels == 1);
    CHECK(d->height == 28);
    CHECK(d->width == 28);
    CHECK(d->images.size() == d->size() * 784);
    // Fashion-MNIST is balanced: 6000 / 1000 images per class.
    std::size_t per_class[10] = {};
    for (auto l : d->labels) ++per_class[l];
    for (std::size_t c = 0; c < 10; ++c) CHECK(per_class[c] == d->size() / 10);
  }
  CHECK(*std::max_element(train.images.begin(), train.images.end()) == 1.0f);
  CHECK(*std::min_element(train.images.begin(), train.images.end()) == 0.0f);
  std::vector<float> mean, stddev;
  compute_channel_stats(train, mean, stddev);
  CHECK(mean[0] == doctest::Approx(fashion_mnist_mean).epsilon(0.002));
  CHECK(stddev[0] == doctest::Approx(fashion_mnist_std).epsilon(0.002));
}
