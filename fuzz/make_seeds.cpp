// Writes the fuzz targets' seed corpora, made by the library itself: checkpoints of every variant and valid dataset files.
//
//   nestla_fuzz_seeds [--keep-corpus] DIR
//
// writes DIR/seeds/<target>/* afresh and creates DIR/corpus/<target>/, the
// directory libFuzzer adds its finds to: emptied, unless --keep-corpus (a
// campaign continuing from the last one).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint_variants.hpp"
#include "data_test_files.hpp"

namespace fs = std::filesystem;
using resnet18::testing::Bytes;

namespace {

void write(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

std::string str(const Bytes& b) { return std::string(b.begin(), b.end()); }

void checkpoint_seeds(const fs::path& dir) {
  using namespace nestla_fuzz;
  for (unsigned i = 0; i < variant_count; ++i) {
    with_variant(i, [&](auto make) {
      for (bool saved_stepped : {false, true}) {
        std::string body = save_bytes(make_state(make, saved_stepped));
        const std::string full = body;
        body.resize(body.size() - 4);  // the harness appends the CRC
        for (bool target_stepped : {false, true}) {
          const char sel = static_cast<char>(i | (target_stepped ? stepped_target_bit : 0));
          write(dir / ("v" + std::to_string(i) + (saved_stepped ? "_stepped" : "_fresh") + "_into_" +
                       (target_stepped ? "stepped" : "fresh")),
                sel + body);
        }
        if (saved_stepped) write(dir / ("v" + std::to_string(i) + "_raw_crc"), char(i | raw_crc_bit) + full);
      }
      // A Lookahead level with its slow weights swapped in.
      auto opt = make_state(make, true);
      if constexpr (requires { opt.slow_weights_swapped_in(); }) {
        tensors<typename decltype(opt)::scalar_type> t(default_sizes());
        opt.swap_slow_weights(t.p);
        std::string body = save_bytes(opt);
        body.resize(body.size() - 4);
        write(dir / ("v" + std::to_string(i) + "_swapped"), char(i) + body);
      }
    });
  }
}

void cifar10_seeds(const fs::path& dir) {
  using resnet18::testing::cifar_records;
  write(dir / "test_2", std::string("\0\0", 2) + str(cifar_records(0, 2)));
  write(dir / "test_limit1", std::string("\0\1", 2) + str(cifar_records(3, 3)));
  write(dir / "train_5", std::string("\1\0", 2) + str(cifar_records(10, 5)));
}

void idx_seeds(const fs::path& dir, const fs::path& scratch) {
  using namespace resnet18::testing;
  const std::string labels = str(idx_labels(3)), images = str(idx_images(3, 4, 3));
  auto input = [&](unsigned mode, unsigned limit, unsigned classes, const std::string& l, const std::string& im) {
    std::string s;
    s += char(mode);
    s += char(limit);
    s += char(classes);
    s += char(l.size() & 0xFF);
    s += char(l.size() >> 8);
    return s + l + im;
  };
  for (unsigned mode = 0; mode < 4; ++mode) write(dir / ("mode" + std::to_string(mode)), input(mode, 0, 0, labels, images));
  write(dir / "limit2_classes4", input(0, 2, 4, labels, images));
  // Files that are gzip already, passed through as written: mutations hit zlib.
  write_gzip(scratch / "l.gz", idx_labels(3));
  write_gzip(scratch / "i.gz", idx_images(3, 4, 3));
  write(dir / "raw_gzip", input(0, 0, 0, str(read_bytes(scratch / "l.gz")), str(read_bytes(scratch / "i.gz"))));
}

}  // namespace

int main(int argc, char** argv) {
  const bool keep_corpus = argc == 3 && std::string(argv[1]) == "--keep-corpus";
  if (argc != 2 && !keep_corpus) {
    std::fprintf(stderr, "usage: %s [--keep-corpus] DIR\n", argv[0]);
    return 2;
  }
  try {
    const fs::path root = argv[argc - 1];
    for (const char* t : {"fuzz_checkpoint", "fuzz_cifar10", "fuzz_idx"}) {
      fs::remove_all(root / "seeds" / t);
      if (!keep_corpus) fs::remove_all(root / "corpus" / t);
      fs::create_directories(root / "seeds" / t);
      fs::create_directories(root / "corpus" / t);
    }
    checkpoint_seeds(root / "seeds" / "fuzz_checkpoint");
    cifar10_seeds(root / "seeds" / "fuzz_cifar10");
    resnet18::testing::TempDir scratch;
    idx_seeds(root / "seeds" / "fuzz_idx", scratch.path());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nestla_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
