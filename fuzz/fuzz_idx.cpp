// Fuzz target for the ResNet-18 example's IDX loader (plain and gzip): any pair of files loads a consistent Dataset or fails with DataError.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "fuzz_data.hpp"

// Input: a mode byte (bit 0: the images file is gzip-compressed by the
// harness, so mutations reach the IDX parser through zlib; bit 1: the same for
// the labels; bytes written as given are read as plain, or as gzip when they
// start with its magic, so mutated gzip streams reach zlib too), a limit byte,
// a class-count byte (0: 10, else 1..255), two bytes of where the labels file
// ends (little endian, modulo the length), then the two files' bytes.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace resnet18;
  using resnet18::testing::Bytes;
  if (size < 5) return 0;
  const unsigned mode = data[0];
  const std::size_t limit = data[1];
  const int classes = data[2] == 0 ? 10 : data[2];
  const Bytes rest(data + 5, data + size);
  const std::size_t split = rest.empty() ? 0 : (std::size_t{data[3]} | std::size_t{data[4]} << 8) % (rest.size() + 1);
  const Bytes labels(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(split));
  const Bytes images(rest.begin() + static_cast<std::ptrdiff_t>(split), rest.end());
  const auto& dir = nestla_fuzz::scratch();
  const auto images_file = dir / "images", labels_file = dir / "labels";
  if (mode & 1) testing::write_gzip(images_file, images);
  else testing::write_bytes(images_file, images);
  if (mode & 2) testing::write_gzip(labels_file, labels);
  else testing::write_bytes(labels_file, labels);
  try {
    const Dataset d = load_idx(images_file, labels_file, limit, classes);
    nestla_fuzz::check_dataset("fuzz_idx", d, limit);
    if (d.channels != 1 || d.num_classes != classes) nestla_fuzz::data_finding("fuzz_idx", "wrong channels or classes");
  } catch (const DataError&) {
  } catch (const std::exception& e) {
    nestla_fuzz::data_finding("fuzz_idx", std::string("threw something other than DataError: ") + e.what());
  }
  return 0;
}
