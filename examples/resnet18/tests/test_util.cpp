// Tests of atomic file replacement, the JSON-lines metrics writer and the progress bar's output.
#include <doctest/doctest.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include "data_test_files.hpp"
#include "util.hpp"

using namespace resnet18;
using namespace resnet18::testing;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

std::vector<nlohmann::json> read_json_lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string read_stream(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s.push_back(static_cast<char>(c));
  return s;
}

// Lowers the file-size limit so that write(2) fails with EFBIG, as on a full disk.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = saved_;
    lim.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

}  // namespace

TEST_SUITE("atomic write") {
  TEST_CASE("the target is replaced completely, longer or shorter, and no temporary is left") {
    TempDir dir;
    const fs::path target = dir / "checkpoint.bin";
    write_file_atomic(target, "first version, rather long");
    CHECK(slurp(target) == "first version, rather long");
    write_file_atomic(target, "short");
    CHECK(slurp(target) == "short");
    const std::string big(3 << 20, 'x');
    write_file_atomic(target, [&](AtomicFile& f) {
      for (std::size_t i = 0; i < big.size(); i += 65536) f.write(big.data() + i, 65536);
    });
    CHECK(slurp(target) == big);
    write_file_atomic(target, "");
    CHECK(fs::file_size(target) == 0);
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("a producer that throws leaves the old file and no temporary") {
    TempDir dir;
    const fs::path target = dir / "state.json";
    write_file_atomic(target, "old");
    CHECK_THROWS_WITH(write_file_atomic(target,
                                        [](AtomicFile& f) {
                                          f.write("new, but half");
                                          throw std::runtime_error("killed while saving");
                                        }),
                      "killed while saving");
    CHECK(slurp(target) == "old");
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("an uncommitted AtomicFile (a run killed while saving) leaves the old file") {
    TempDir dir;
    const fs::path target = dir / "state.json";
    write_file_atomic(target, "old");
    {
      AtomicFile f(target);
      f.write("partial new content");
      CHECK(fs::exists(f.temp_path()));
      CHECK(f.temp_path().parent_path() == target.parent_path());
      CHECK(slurp(target) == "old");
    }
    CHECK(slurp(target) == "old");
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("a failing write(2) names the path and errno text and leaves the old file") {
    TempDir dir;
    const fs::path target = dir / "weights.bin";
    write_file_atomic(target, "old weights");
    std::string msg;
    {
      const FileSizeLimit limit(4096);
      try {
        write_file_atomic(target, std::string(100000, 'w'));
      } catch (const std::system_error& e) {
        msg = e.what();
        CHECK(e.code().value() == EFBIG);
      }
    }
    CHECK(msg.find("cannot write ") != std::string::npos);
    CHECK(msg.find(target.string()) != std::string::npos);
    CHECK(msg.find("File too large") != std::string::npos);
    CHECK(slurp(target) == "old weights");
    CHECK(entries(dir.path()) == 1);
  }

  TEST_CASE("a missing directory is an error naming the path") {
    TempDir dir;
    const fs::path target = dir / "no" / "such" / "file.txt";
    try {
      write_file_atomic(target, "x");
      FAIL("no exception");
    } catch (const std::system_error& e) {
      const std::string msg = e.what();
      CHECK(msg.find(target.string()) != std::string::npos);
      CHECK(msg.find("No such file or directory") != std::string::npos);
      CHECK(e.code().value() == ENOENT);
    }
  }

  TEST_CASE("a relative path in the working directory works") {
    TempDir dir;
    const fs::path cwd = fs::current_path();
    fs::current_path(dir.path());
    write_file_atomic("relative.txt", "here");
    fs::current_path(cwd);
    CHECK(slurp(dir / "relative.txt") == "here");
  }
}

TEST_SUITE("metrics") {
  TEST_CASE("epoch records are JSON lines that parse back, appended across writers") {
    TempDir dir;
    const fs::path file = dir / "metrics.jsonl";
    {
      MetricsWriter w(file, true);
      EpochMetrics m;
      m.epoch = 1;
      m.step = 391;
      m.train_loss = 1.5;
      m.train_acc = 0.45;
      m.test_loss = 1.25;
      m.test_acc = 0.55;
      m.lr = 0.1;
      m.seconds = 12.5;
      m.images_per_s = 4000;
      m.extra = {{"lookahead_k", 5}, {"lookahead_alpha", 0.5}};
      w.write(m);
      // Each line is on disk as soon as write returns.
      CHECK(read_json_lines(file).size() == 1);
      EpochMetrics no_test;
      no_test.epoch = 2;
      no_test.train_loss = std::numeric_limits<double>::quiet_NaN();
      w.write(no_test);
    }
    {
      MetricsWriter w(file);  // appends
      w.write(nlohmann::json{{"event", "done"}, {"best_test_acc", 0.9}});
    }
    const auto lines = read_json_lines(file);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0]["epoch"] == 1);
    CHECK(lines[0]["step"] == 391);
    CHECK(lines[0]["train_loss"] == 1.5);
    CHECK(lines[0]["train_acc"] == 0.45);
    CHECK(lines[0]["test_loss"] == 1.25);
    CHECK(lines[0]["test_acc"] == 0.55);
    CHECK(lines[0]["lr"] == 0.1);
    CHECK(lines[0]["seconds"] == 12.5);
    CHECK(lines[0]["images_per_s"] == 4000);
    CHECK(lines[0]["lookahead_k"] == 5);
    CHECK(lines[0]["lookahead_alpha"] == 0.5);
    CHECK(lines[1]["epoch"] == 2);
    CHECK(lines[1]["train_loss"].is_null());  // NaN
    CHECK_FALSE(lines[1].contains("test_loss"));
    CHECK(lines[2]["event"] == "done");
    // Fields in the order written, for people reading the file.
    CHECK(slurp(file).rfind("{\"epoch\":1,\"step\":391,\"train_loss\":1.5,", 0) == 0);

    MetricsWriter fresh(file, true);
    CHECK(fs::file_size(file) == 0);
  }

  TEST_CASE("an unwritable metrics path is an error naming it") {
    TempDir dir;
    const fs::path file = dir / "missing" / "metrics.jsonl";
    CHECK_THROWS_WITH_AS(MetricsWriter{file},
                         ("cannot open metrics file " + file.string() + ": No such file or directory").c_str(),
                         std::system_error);
  }
}

TEST_SUITE("progress") {
  TEST_CASE("format_duration") {
    CHECK(format_duration(0) == "0:00");
    CHECK(format_duration(65.4) == "1:05");
    CHECK(format_duration(3723) == "1:02:03");
    CHECK(format_duration(-1) == "?");
    CHECK(format_duration(std::numeric_limits<double>::infinity()) == "?");
  }

  TEST_CASE("plain mode prints whole lines, one per interval") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      ProgressBar::Options o;
      o.out = f;
      o.mode = ProgressBar::Mode::plain;
      o.log_every = std::chrono::duration<double>(0);
      ProgressBar bar("epoch 3", 10, o);
      CHECK_FALSE(bar.is_terminal());
      bar.update(3, 96, 1.23456, 0.5);
      CHECK(bar.last_line().find("epoch 3 3/10  loss 1.2346  acc  50.0%") == 0);
      CHECK(bar.last_line().find("ETA ") != std::string::npos);
      bar.update(10, 320, 1.0, 0.625);
      bar.finish("test acc 61.0%");
    }
    const std::string out = read_stream(f);
    std::fclose(f);
    CHECK(out.find('\r') == std::string::npos);
    CHECK(out.find("\x1b") == std::string::npos);
    CHECK(std::count(out.begin(), out.end(), '\n') == 3);
    CHECK(out.find("epoch 3 10/10  loss 1.0000  acc  62.5%") != std::string::npos);
    CHECK(out.substr(out.size() - 17) == "  test acc 61.0%\n");
  }

  TEST_CASE("plain mode stays quiet between intervals") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      ProgressBar::Options o;
      o.out = f;
      o.mode = ProgressBar::Mode::plain;
      o.log_every = std::chrono::duration<double>(3600);
      ProgressBar bar("train", 1000, o);
      for (std::size_t i = 1; i <= 1000; ++i) bar.update(i, i * 32, 0.5, 0.5);
      bar.finish();
    }
    const std::string out = read_stream(f);
    std::fclose(f);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK(out.find("train 1000/1000") == 0);
  }

  TEST_CASE("terminal mode redraws one line with \\r and a bar") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      ProgressBar::Options o;
      o.out = f;
      o.mode = ProgressBar::Mode::terminal;
      o.refresh = std::chrono::duration<double>(0);
      o.width = 10;
      ProgressBar bar("epoch 1", 4, o);
      CHECK(bar.is_terminal());
      bar.update(1, 8, 2.0, 0.25);
      CHECK(bar.last_line().find("epoch 1 [##........] 1/4") == 0);
      bar.update(2, 16, 1.5, 0.5);
      // Destroyed without finish(): ends the line anyway.
    }
    const std::string out = read_stream(f);
    std::fclose(f);
    CHECK(std::count(out.begin(), out.end(), '\r') == 2);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    CHECK(out.back() == '\n');
  }
}
