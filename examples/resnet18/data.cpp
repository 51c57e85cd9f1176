// Loaders for CIFAR-10 binary batches, IDX (plain or gzip) files and the synthetic dataset.
#include "data.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numbers>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "rng.hpp"

namespace resnet18 {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw DataError(file.string() + ": " + what);
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Division rather than a multiplication by 1/255: correctly rounded, as torchvision's
// ToTensor gives it.
void bytes_to_unit_floats(const std::uint8_t* src, std::size_t n, float* dst) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
}

// Sizes the image buffer once. First-touch page faults cost about 11.5 us per 4 KiB page
// on the target machine (perf-notes.md): 1.7 s for CIFAR-10's 614 MB. reserve() maps the
// memory without touching it, so advising huge pages before resize() cuts that to a few ms.
void allocate_images(std::vector<float>& images, std::size_t count) {
  images.reserve(count);
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(images.data());
  const std::uintptr_t first = (begin + huge - 1) & ~(huge - 1);
  const std::uintptr_t last = (begin + count * sizeof(float)) & ~(huge - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // advice only
  images.resize(count);
}

// ---------------------------------------------------------------- plain files

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Into a caller's buffer, so consecutive files of one size reuse its (touched) pages.
void read_whole_file(const fs::path& file, std::vector<std::uint8_t>& bytes) {
  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail(file, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(file, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(file, "not a regular file");
  bytes.resize(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t got = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (got < 0) {
      if (errno == EINTR) continue;
      fail(file, std::string("read error: ") + std::strerror(errno));
    }
    if (got == 0) break;  // shrank while reading: the size check of the caller reports it
    done += static_cast<std::size_t>(got);
  }
  bytes.resize(done);
}

// ---------------------------------------------------------------- gzip or plain via zlib

// zlib reads plain files transparently, so one reader serves both the .gz and the
// uncompressed IDX files; it also checks the gzip CRC when the stream ends.
class GzReader {
 public:
  explicit GzReader(fs::path file) : file_(std::move(file)) {
    errno = 0;
    gz_ = gzopen(file_.c_str(), "rb");
    if (gz_ == nullptr)
      fail(file_, std::string("cannot open: ") + (errno != 0 ? std::strerror(errno) : "out of memory"));
    gzbuffer(gz_, 1u << 17);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  ~GzReader() { gzclose_r(gz_); }

  const fs::path& file() const { return file_; }

  // Reads up to n bytes, fewer only at the end of the data; throws on a corrupt stream.
  std::size_t read(void* dst, std::size_t n) {
    std::size_t total = 0;
    while (total < n) {
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - total, 1u << 30));
      const int got = gzread(gz_, static_cast<char*>(dst) + total, chunk);
      if (got <= 0) break;
      total += static_cast<std::size_t>(got);
    }
    int err = Z_OK;
    const std::string msg = zlib_message(&err);
    // Z_BUF_ERROR is zlib's "unexpected end of file": a truncation, which the caller
    // reports with the byte counts it knows.
    if (err != Z_OK && err != Z_BUF_ERROR) {
      if (err == Z_ERRNO) fail(file_, std::string("read error: ") + std::strerror(errno));
      fail(file_, std::string("corrupt gzip stream: ") + msg);
    }
    return total;
  }

  // A note for truncation messages: whether zlib saw the compressed stream end early.
  std::string eof_note() {
    int err = Z_OK;
    const std::string msg = zlib_message(&err);
    return err == Z_BUF_ERROR ? " (gzip: " + msg + ")" : std::string();
  }

 private:
  // gzerror's text starts with "<path>: "; the path is already at the front of ours.
  std::string zlib_message(int* err) {
    std::string msg = gzerror(gz_, err);
    const std::string prefix = file_.string() + ": ";
    if (msg.starts_with(prefix)) msg.erase(0, prefix.size());
    return msg;
  }

  fs::path file_;
  gzFile gz_ = nullptr;
};

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

// Reads exactly `expected` payload bytes after a header of `header_bytes`, then insists
// the stream ends there. The buffer grows with the data actually read, so a header that
// claims billions of images fails as truncated instead of allocating that much first.
std::vector<std::uint8_t> read_payload(GzReader& in, std::size_t header_bytes, std::size_t expected) {
  std::vector<std::uint8_t> data;
  std::size_t done = 0;
  std::size_t capacity = std::min<std::size_t>(expected, std::size_t{4} << 20);
  while (done < expected) {
    if (capacity <= done) capacity = std::min(expected, std::max(capacity * 2, done + 1));
    data.resize(capacity);
    const std::size_t got = in.read(data.data() + done, capacity - done);
    done += got;
    if (done < capacity) break;
  }
  if (done < expected) {
    fail(in.file(), "truncated: expected " + std::to_string(header_bytes + expected) + " bytes, got " +
                        std::to_string(header_bytes + done) + in.eof_note());
  }
  std::uint8_t extra = 0;
  if (in.read(&extra, 1) != 0) {
    fail(in.file(), "trailing data: expected " + std::to_string(header_bytes + expected) +
                        " bytes, the file is longer");
  }
  data.resize(done);
  return data;
}

struct IdxHeader {
  std::vector<std::uint32_t> dims;
  std::size_t header_bytes = 0;
};

IdxHeader read_idx_header(GzReader& in, std::size_t want_dims) {
  const std::uint32_t expected_magic = 0x00000800u | static_cast<std::uint32_t>(want_dims);
  std::array<std::uint8_t, 4> magic_bytes{};
  const std::size_t header_bytes = 4 + 4 * want_dims;
  const std::size_t got_magic = in.read(magic_bytes.data(), 4);
  if (got_magic < 4) {
    fail(in.file(), "truncated header: expected " + std::to_string(header_bytes) + " bytes, got " +
                        std::to_string(got_magic) + in.eof_note());
  }
  const std::uint32_t magic = be32(magic_bytes.data());
  if (magic != expected_magic) {
    std::string why;
    const std::uint32_t type = (magic >> 8) & 0xffu;
    if ((magic >> 16) != 0) {
      why = " (not an IDX file)";
    } else if (type != 0x08) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%02x", type);
      why = std::string(" (element type ") + buf + " is not unsigned byte 0x08)";
    } else {
      why = " (" + std::to_string(magic & 0xffu) + " dimensions, expected " + std::to_string(want_dims) + ")";
    }
    fail(in.file(), "bad magic " + hex32(magic) + ", expected " + hex32(expected_magic) + why);
  }
  std::vector<std::uint8_t> raw(4 * want_dims);
  const std::size_t got = in.read(raw.data(), raw.size());
  if (got < raw.size()) {
    fail(in.file(), "truncated header: expected " + std::to_string(header_bytes) + " bytes, got " +
                        std::to_string(4 + got) + in.eof_note());
  }
  IdxHeader h;
  h.header_bytes = header_bytes;
  for (std::size_t d = 0; d < want_dims; ++d) h.dims.push_back(be32(raw.data() + 4 * d));
  return h;
}

void check_label_range(const fs::path& file, std::size_t record, std::uint8_t label, int num_classes) {
  if (label >= num_classes) {
    fail(file, "record " + std::to_string(record) + ": label " + std::to_string(label) + " is out of range 0.." +
                   std::to_string(num_classes - 1));
  }
}

fs::path plain_or_gz(const fs::path& dir, const std::string& base) {
  const fs::path plain = dir / base;
  const fs::path gz = dir / (base + ".gz");
  std::error_code ec;
  if (fs::exists(plain, ec)) return plain;
  if (fs::exists(gz, ec)) return gz;
  throw DataError(dir.string() + ": neither " + base + " nor " + base + ".gz found");
}

Dataset load_idx_dir(const fs::path& dir, Split split, std::size_t limit, std::string name, float mean,
                     float stddev) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  Dataset d = load_idx(plain_or_gz(dir, prefix + "-images-idx3-ubyte"), plain_or_gz(dir, prefix + "-labels-idx1-ubyte"),
                       limit, 10);
  d.name = std::move(name);
  d.mean = {mean};
  d.stddev = {stddev};
  return d;
}

}  // namespace

// ---------------------------------------------------------------- CIFAR-10

Dataset load_cifar10(const fs::path& dir, Split split, std::size_t limit) {
  constexpr std::size_t pixels = 3 * 32 * 32;
  constexpr std::size_t record_bytes = 1 + pixels;
  std::vector<std::string> names;
  if (split == Split::train) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }

  Dataset d;
  d.name = "cifar10";
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.num_classes = 10;
  d.mean.assign(std::begin(cifar10_mean), std::end(cifar10_mean));
  d.stddev.assign(std::begin(cifar10_std), std::end(cifar10_std));
  const std::size_t want = limit == 0 ? std::numeric_limits<std::size_t>::max() : limit;

  // One allocation for all files, sized from the file sizes; a file that is missing or
  // changes size in between is reported when it is read.
  std::size_t expected_records = 0;
  for (const auto& name : names) {
    std::error_code ec;
    const auto bytes = fs::file_size(dir / name, ec);
    if (!ec) expected_records += static_cast<std::size_t>(bytes) / record_bytes;
  }
  expected_records = std::min(expected_records, want);
  d.labels.reserve(expected_records);
  allocate_images(d.images, expected_records * pixels);
  std::size_t kept = 0;

  std::vector<std::uint8_t> bytes;
  for (const auto& name : names) {
    if (kept >= want) break;
    const fs::path file = dir / name;
    read_whole_file(file, bytes);
    if (bytes.empty()) fail(file, "empty file, expected records of " + std::to_string(record_bytes) + " bytes");
    if (bytes.size() % record_bytes != 0) {
      const std::size_t whole = bytes.size() / record_bytes;
      fail(file, "truncated: " + std::to_string(bytes.size()) + " bytes is not a whole number of " +
                     std::to_string(record_bytes) + "-byte records (record " + std::to_string(whole) + " has " +
                     std::to_string(bytes.size() % record_bytes) + " bytes)");
    }
    const std::size_t records = bytes.size() / record_bytes;
    // Validate every label of the file, kept or not: a corrupt file should fail even in
    // a quick run on a subset.
    for (std::size_t r = 0; r < records; ++r) check_label_range(file, r, bytes[r * record_bytes], 10);

    const std::size_t keep = std::min(records, want - kept);
    if (d.images.size() < (kept + keep) * pixels) d.images.resize((kept + keep) * pixels);
    for (std::size_t r = 0; r < keep; ++r) {
      const std::uint8_t* rec = bytes.data() + r * record_bytes;
      d.labels.push_back(rec[0]);
      // The file stores R plane, G plane, B plane: already C x H x W.
      bytes_to_unit_floats(rec + 1, pixels, d.images.data() + (kept + r) * pixels);
    }
    kept += keep;
  }
  d.images.resize(kept * pixels);
  return d;
}

// ---------------------------------------------------------------- IDX

Dataset load_idx(const fs::path& images_file, const fs::path& labels_file, std::size_t limit, int num_classes) {
  if (num_classes < 1 || num_classes > 256) {
    throw DataError("load_idx: num_classes " + std::to_string(num_classes) + " is out of range 1..256");
  }
  // Both headers first, so a count mismatch is reported before decompressing anything.
  GzReader labels_in(labels_file);
  const IdxHeader lh = read_idx_header(labels_in, 1);
  GzReader images_in(images_file);
  const IdxHeader ih = read_idx_header(images_in, 3);

  const std::uint32_t n = ih.dims[0];
  const std::uint32_t rows = ih.dims[1];
  const std::uint32_t cols = ih.dims[2];
  if (n != lh.dims[0]) {
    throw DataError(images_file.string() + " and " + labels_file.string() + ": image count " + std::to_string(n) +
                    " does not match label count " + std::to_string(lh.dims[0]));
  }
  if (n == 0) fail(images_file, "contains no images");
  if (rows == 0 || cols == 0 || rows > 65536 || cols > 65536) {
    fail(images_file, "image size " + std::to_string(rows) + "x" + std::to_string(cols) + " is not plausible");
  }
  const std::size_t image_bytes = std::size_t{rows} * cols;
  // n < 2^32 and image_bytes <= 2^32: the product fits in 64 bits.
  const std::size_t payload = std::size_t{n} * image_bytes;

  const std::vector<std::uint8_t> labels = read_payload(labels_in, lh.header_bytes, n);
  for (std::size_t r = 0; r < labels.size(); ++r) check_label_range(labels_file, r, labels[r], num_classes);
  const std::vector<std::uint8_t> pixels = read_payload(images_in, ih.header_bytes, payload);

  const std::size_t keep = limit == 0 ? n : std::min<std::size_t>(n, limit);
  Dataset d;
  d.name = "idx";
  d.channels = 1;
  d.height = static_cast<int>(rows);
  d.width = static_cast<int>(cols);
  d.num_classes = num_classes;
  d.labels.assign(labels.begin(), labels.begin() + static_cast<std::ptrdiff_t>(keep));
  allocate_images(d.images, keep * image_bytes);
  bytes_to_unit_floats(pixels.data(), keep * image_bytes, d.images.data());
  d.mean = {0.5f};
  d.stddev = {0.5f};
  return d;
}

Dataset load_fashion_mnist(const fs::path& dir, Split split, std::size_t limit) {
  return load_idx_dir(dir, split, limit, "fashion-mnist", fashion_mnist_mean, fashion_mnist_std);
}

Dataset load_mnist(const fs::path& dir, Split split, std::size_t limit) {
  return load_idx_dir(dir, split, limit, "mnist", mnist_mean, mnist_std);
}

// ---------------------------------------------------------------- synthetic

Dataset make_synthetic(const SyntheticOptions& o) {
  if (o.count == 0 || o.channels < 1 || o.size < 1 || o.num_classes < 1 || o.num_classes > 256 || !(o.noise >= 0)) {
    throw DataError("make_synthetic: bad options (count " + std::to_string(o.count) + ", channels " +
                    std::to_string(o.channels) + ", size " + std::to_string(o.size) + ", classes " +
                    std::to_string(o.num_classes) + ", noise " + std::to_string(o.noise) +
                    "): need count, channels, size >= 1, classes in 1..256, noise >= 0");
  }
  struct ClassPattern {
    double kx, ky;  // wave vector in radians per pixel
    std::vector<double> colour;
  };
  // Orientations are spread evenly (with jitter) and frequencies drawn per class, so
  // classes differ in both and a small CNN separates them quickly.
  Rng class_rng(mix64(o.seed, 0x5a5a));
  std::vector<ClassPattern> classes(static_cast<std::size_t>(o.num_classes));
  for (int c = 0; c < o.num_classes; ++c) {
    const double angle = std::numbers::pi * (c + class_rng.uniform(-0.2, 0.2)) / o.num_classes;
    const double cycles = class_rng.uniform(1.5, 4.5);  // per image width
    const double k = 2.0 * std::numbers::pi * cycles / o.size;
    auto& p = classes[static_cast<std::size_t>(c)];
    p.kx = k * std::cos(angle);
    p.ky = k * std::sin(angle);
    for (int ch = 0; ch < o.channels; ++ch) p.colour.push_back(class_rng.uniform(0.3, 1.0));
  }

  Dataset d;
  d.name = "synthetic";
  d.channels = o.channels;
  d.height = o.size;
  d.width = o.size;
  d.num_classes = o.num_classes;
  d.labels.resize(o.count);
  allocate_images(d.images, o.count * d.image_size());
  for (std::size_t i = 0; i < o.count; ++i) {
    // One stream per sample: sample i does not depend on count or on other samples.
    Rng rng(mix64(mix64(o.seed, o.sample_seed), i));
    const auto label = static_cast<std::uint8_t>(i % static_cast<std::size_t>(o.num_classes));
    d.labels[i] = label;
    const auto& p = classes[label];
    const double phase = rng.uniform(0.0, 2.0 * std::numbers::pi);
    const double contrast = rng.uniform(0.7, 1.0);
    float* img = d.images.data() + i * d.image_size();
    for (int ch = 0; ch < o.channels; ++ch) {
      const double amp = 0.45 * contrast * p.colour[static_cast<std::size_t>(ch)];
      for (int y = 0; y < o.size; ++y) {
        for (int x = 0; x < o.size; ++x) {
          const double v = 0.5 + amp * std::sin(p.kx * x + p.ky * y + phase) + o.noise * rng.normal();
          *img++ = static_cast<float>(std::clamp(v, 0.0, 1.0));
        }
      }
    }
  }
  compute_channel_stats(d, d.mean, d.stddev);
  return d;
}

// ---------------------------------------------------------------- dispatch and stats

Dataset load_dataset(const DatasetOptions& o, Split split) {
  if (o.name == "cifar10") {
    if (o.dir.empty()) throw DataError("cifar10: no data directory given");
    return load_cifar10(o.dir, split, o.limit);
  }
  if (o.name == "fashion-mnist") {
    return load_fashion_mnist(o.dir.empty() ? fs::path(default_fashion_mnist_dir) : o.dir, split, o.limit);
  }
  if (o.name == "mnist") {
    if (o.dir.empty()) throw DataError("mnist: no data directory given");
    return load_mnist(o.dir, split, o.limit);
  }
  if (o.name == "synthetic") {
    SyntheticOptions s = o.synthetic;
    if (o.limit != 0) s.count = std::min(s.count, o.limit);
    // Same class patterns (seed), other samples: a test set the model has not seen.
    if (split == Split::test) s.sample_seed = mix64(s.sample_seed, 0x7e57);
    Dataset d = make_synthetic(s);
    return d;
  }
  throw DataError("unknown dataset '" + o.name + "' (expected cifar10, fashion-mnist, mnist or synthetic)");
}

void compute_channel_stats(const Dataset& data, std::vector<float>& mean, std::vector<float>& stddev) {
  const auto channels = static_cast<std::size_t>(data.channels);
  const std::size_t plane = static_cast<std::size_t>(data.height) * static_cast<std::size_t>(data.width);
  std::vector<double> sum(channels, 0.0), sum_sq(channels, 0.0);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const float* img = data.images.data() + i * data.image_size();
    for (std::size_t c = 0; c < channels; ++c) {
      double s = 0, s2 = 0;
      for (std::size_t k = 0; k < plane; ++k) {
        const double v = img[c * plane + k];
        s += v;
        s2 += v * v;
      }
      sum[c] += s;
      sum_sq[c] += s2;
    }
  }
  const double n = static_cast<double>(data.size() * plane);
  mean.assign(channels, 0.0f);
  stddev.assign(channels, 1.0f);
  if (n == 0) return;
  for (std::size_t c = 0; c < channels; ++c) {
    const double m = sum[c] / n;
    const double var = std::max(0.0, sum_sq[c] / n - m * m);
    mean[c] = static_cast<float>(m);
    // A constant channel would divide by zero when normalizing.
    stddev[c] = var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f;
  }
}

}  // namespace resnet18
