// Fuzz target for the ResNet-18 example's CIFAR-10 loader: any file set loads a consistent Dataset or fails with DataError.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "fuzz_data.hpp"

// Input: a mode byte (bit 0: the train split, the rest cut into five batch
// files; else test_batch.bin), a limit byte (0: all records), then the bytes.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace resnet18;
  using resnet18::testing::Bytes;
  if (size < 2) return 0;
  const bool train = data[0] & 1;
  const std::size_t limit = data[1];
  const Bytes rest(data + 2, data + size);
  const auto& dir = nestla_fuzz::scratch();
  if (train) {
    for (std::size_t i = 0; i < 5; ++i) {
      const std::size_t from = rest.size() * i / 5, to = rest.size() * (i + 1) / 5;
      testing::write_bytes(dir / ("data_batch_" + std::to_string(i + 1) + ".bin"),
                           Bytes(rest.begin() + static_cast<std::ptrdiff_t>(from),
                                 rest.begin() + static_cast<std::ptrdiff_t>(to)));
    }
  } else {
    testing::write_bytes(dir / "test_batch.bin", rest);
  }
  try {
    const Dataset d = load_cifar10(dir.path(), train ? Split::train : Split::test, limit);
    nestla_fuzz::check_dataset("fuzz_cifar10", d, limit);
    if (d.channels != 3 || d.height != 32 || d.width != 32 || d.num_classes != 10)
      nestla_fuzz::data_finding("fuzz_cifar10", "not CIFAR-10's shape");
  } catch (const DataError&) {
  } catch (const std::exception& e) {
    nestla_fuzz::data_finding("fuzz_cifar10", std::string("threw something other than DataError: ") + e.what());
  }
  return 0;
}
