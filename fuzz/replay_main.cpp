// main() for the fuzz targets where libFuzzer is not available (GCC): runs inputs and simple mutants of them through the target.
//
//   fuzz_checkpoint [--mutants N] FILE_OR_DIR...
//
// Each input runs as given, then as N mutants (bit flips, boundary values,
// truncations, duplicated and deleted spans), drawn from a fixed seed. It
// keeps the targets compiled and exercised in every build; the coverage-guided
// search is libFuzzer's (clang), see docs/testing.md.
#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

// The input being run, written to ./replay-crash when the target aborts or
// crashes, so that a finding can be rerun (TARGET replay-crash) and debugged.
const std::uint8_t* current_data = nullptr;
std::size_t current_size = 0;

extern "C" void save_current_input(int sig) {
  const int fd = ::open("replay-crash", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    std::size_t done = 0;
    while (done < current_size) {
      const ssize_t n = ::write(fd, current_data + done, current_size - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    static const char note[] = "replay: the failing input is in ./replay-crash\n";
    (void)!::write(2, note, sizeof note - 1);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void run(const std::vector<std::uint8_t>& input) {
  current_data = input.data();
  current_size = input.size();
  LLVMFuzzerTestOneInput(input.data(), input.size());
}

struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 17;
  }
  std::size_t below(std::size_t n) { return n ? static_cast<std::size_t>(next() % n) : 0; }
};

void mutate(std::vector<std::uint8_t>& b, rng& r) {
  static const std::uint64_t interesting[] = {0,          1,          0x7F,         0x80,         0xFF,
                                              0x7FFFFFFF, 0xFFFFFFFF, 1ull << 32,   1ull << 53,   1ull << 61,
                                              1ull << 62, 1ull << 63, ~0ull >> 1,   ~0ull,        ~0ull - 15};
  const int ops = 1 + static_cast<int>(r.below(3));
  for (int i = 0; i < ops; ++i) {
    if (b.empty()) {
      b.push_back(static_cast<std::uint8_t>(r.next()));
      continue;
    }
    const std::size_t at = r.below(b.size());
    switch (r.below(6)) {
      case 0: b[at] ^= static_cast<std::uint8_t>(1u << r.below(8)); break;
      case 1: b[at] = static_cast<std::uint8_t>(interesting[r.below(5)]); break;
      case 2: {  // an interesting 8-byte value in place
        const std::uint64_t v = interesting[r.below(std::size(interesting))];
        std::memcpy(b.data() + at, &v, std::min<std::size_t>(8, b.size() - at));
        break;
      }
      case 3: b.resize(at + 1); break;
      case 4: {  // duplicate a span
        const std::size_t n = std::min<std::size_t>(1 + r.below(64), b.size() - at);
        std::vector<std::uint8_t> span(b.begin() + static_cast<std::ptrdiff_t>(at),
                                       b.begin() + static_cast<std::ptrdiff_t>(at + n));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(r.below(b.size() + 1)), span.begin(), span.end());
        break;
      }
      default: {  // delete a span (not the selector byte)
        const std::size_t from = std::max<std::size_t>(at, 1);
        const std::size_t n = std::min<std::size_t>(1 + r.below(16), b.size() - std::min(from, b.size()));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(std::min(from, b.size())),
                b.begin() + static_cast<std::ptrdiff_t>(std::min(from + n, b.size())));
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  long mutants = 0;
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mutants" && i + 1 < argc) {
      mutants = std::strtol(argv[++i], nullptr, 10);
    } else if (std::filesystem::is_directory(a)) {
      for (const auto& e : std::filesystem::directory_iterator(a))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (std::filesystem::is_regular_file(a)) {
      files.push_back(a);
    } else {
      std::fprintf(stderr, "%s: no such file or directory: %s\n", argv[0], a.c_str());
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s [--mutants N] FILE_OR_DIR...  (no inputs found)\n", argv[0]);
    return 2;
  }
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, save_current_input);
  long runs = 0;
  rng r{0x5EED};
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<std::uint8_t> seed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    run(seed);
    ++runs;
    for (long m = 0; m < mutants; ++m) {
      std::vector<std::uint8_t> b = seed;
      mutate(b, r);
      run(b);
      ++runs;
    }
  }
  std::printf("%s: %ld inputs from %zu files, no finding\n", argv[0], runs, files.size());
  return 0;
}
