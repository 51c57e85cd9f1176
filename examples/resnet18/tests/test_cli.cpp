// resnet18_train's command line: defaults, the optimizer grid it reaches, and clear errors for bad values and files.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "cli.hpp"
#include "data_test_files.hpp"

using namespace resnet18;
using Args = std::vector<std::string>;

namespace {

// The message a user would see for these arguments ("" when they parse).
std::string error_of(const Args& args) {
  try {
    parse_command_line(args);
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return "";
}

const std::type_info& built_type(const Args& args) {
  static std::unique_ptr<AnyOptimizer<EigenParams>> keep;
  keep = make_optimizer<EigenParams>(parse_command_line(args).optimizer);
  return keep->type();
}

}  // namespace

TEST_CASE("cli: defaults are the paper's") {
  const RunSetup r = parse_command_line({});
  CHECK(r.optimizer.base == BaseKind::adam);
  CHECK(r.optimizer.depth() == 0);
  CHECK(r.optimizer.lr == 1e-3);
  CHECK(r.optimizer.weight_decay == 0);
  CHECK(r.trainer.batch_size == 64);
  CHECK(r.trainer.schedule.kind == Schedule::none);
  CHECK(r.trainer.augment);
  CHECK(r.train_data.name == "fashion-mnist");
  CHECK(r.model.width == 64);
  CHECK(r.model.stem == Stem::cifar);
  CHECK(r.cli.threads == 1);
  CHECK(r.cli.device == "cpu");

  const RunSetup n = parse_command_line({"--optimizer", "nested"});
  REQUIRE(n.optimizer.depth() == 2);
  CHECK(n.optimizer.base == BaseKind::adam);
  CHECK(n.optimizer.levels[0].k == 5);
  CHECK(n.optimizer.levels[0].alpha == 0.5);
  CHECK(n.optimizer.levels[1].k == 5);
  CHECK(n.optimizer.levels[1].alpha == 0.5);
  CHECK(n.optimizer.levels[1].momentum == nestla::Momentum::keep);

  CHECK(parse_command_line({"--optimizer", "adamw"}).optimizer.weight_decay == 1e-2);  // PyTorch's AdamW default
  CHECK(parse_command_line({"--optimizer", "adamw", "--weight-decay", "0"}).optimizer.weight_decay == 0);
}

TEST_CASE("cli: levels from --k/--alpha/--s/--h, --depth and --levels") {
  const RunSetup l = parse_command_line({"--optimizer", "lookahead", "--inner", "sgd", "--k", "6", "--alpha", "0.8",
                                         "--pullback", "pullback", "--lr", "0.1"});
  REQUIRE(l.optimizer.depth() == 1);
  CHECK(l.optimizer.base == BaseKind::sgd);
  CHECK(l.optimizer.momentum == 0.9);
  CHECK(l.optimizer.levels[0].k == 6);
  CHECK(l.optimizer.levels[0].alpha == 0.8);
  CHECK(l.optimizer.levels[0].momentum == nestla::Momentum::pullback);

  const RunSetup d3 = parse_command_line({"--optimizer", "nested", "--depth", "3", "--k", "4", "--s", "3", "--h", "0.6",
                                          "--pullback", "reset"});
  REQUIRE(d3.optimizer.depth() == 3);
  CHECK(d3.optimizer.levels[0].k == 4);
  CHECK(d3.optimizer.levels[1].k == 3);
  CHECK(d3.optimizer.levels[2].k == 3);
  CHECK(d3.optimizer.levels[2].alpha == 0.6);
  for (const auto& lv : d3.optimizer.levels) CHECK(lv.momentum == nestla::Momentum::reset);

  const RunSetup lv = parse_command_line({"--optimizer", "nested", "--levels", "5:0.5,4:0.25:pullback,2:1"});
  REQUIRE(lv.optimizer.depth() == 3);
  CHECK(lv.optimizer.levels[1].k == 4);
  CHECK(lv.optimizer.levels[1].alpha == 0.25);
  CHECK(lv.optimizer.levels[1].momentum == nestla::Momentum::pullback);
  CHECK(lv.optimizer.levels[2].alpha == 1.0);
  CHECK(lv.optimizer.levels[2].momentum == nestla::Momentum::keep);
  CHECK(parse_command_line({"--optimizer", "nested", "--depth", "1"}).optimizer.depth() == 1);
}

TEST_CASE("cli: the factory builds the nestla type the command line names") {
  CHECK(built_type({"--optimizer", "sgd"}) == typeid(nestla::SGD<float>));
  CHECK(built_type({"--optimizer", "adamw"}) == typeid(nestla::AdamW<float>));
  CHECK(built_type({"--optimizer", "lookahead"}) == typeid(nestla::Lookahead<nestla::Adam<float>>));
  CHECK(built_type({"--optimizer", "lookahead", "--inner", "sgd"}) == typeid(nestla::Lookahead<nestla::SGD<float>>));
  CHECK(built_type({"--optimizer", "nested"}) == typeid(nestla::nested_t<2, nestla::Adam<float>>));
  CHECK(built_type({"--optimizer", "nested", "--inner", "adamw", "--depth", "3"}) ==
        typeid(nestla::nested_t<3, nestla::AdamW<float>>));
  CHECK(built_type({"--optimizer", "nested", "--inner", "sgd", "--levels", "5:0.5"}) ==
        typeid(nestla::Lookahead<nestla::SGD<float>>));
}

TEST_CASE("cli: bad values and contradictory options are errors that say what is wrong") {
  CHECK(error_of({"--optimizer", "rmsprop"}).find("--optimizer") != std::string::npos);
  CHECK(error_of({"--optimizer", "rmsprop"}).find("rmsprop") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--inner", "lookahead"}).find("--inner") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--depth", "0"}).find("must be >= 1") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--depth", "4"}).find("at most 3") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--depth", "-1"}).find("--depth") != std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--depth", "2"}).find("--optimizer nested --depth 2") != std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--k", "0"}) == "--k: must be an integer in [1, 1073741824] (got 0)");
  CHECK(error_of({"--optimizer", "nested", "--s", "0"}) == "--s: must be an integer in [1, 1073741824] (got 0)");
  CHECK(error_of({"--optimizer", "lookahead", "--alpha", "1.5"}) == "--alpha: must be in [0, 1] (got 1.5)");
  CHECK(error_of({"--optimizer", "nested", "--h", "-0.1"}).find("--h: must be in [0, 1]") != std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--s", "5"}).find("no second level") != std::string::npos);
  CHECK(error_of({"--optimizer", "adam", "--k", "5"}).find("--k: applies only to --optimizer lookahead or nested") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "sgd", "--depth", "2"}).find("--depth") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:0.5", "--depth", "2"}).find("1 levels given, but --depth is 2") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:x"}).find("alpha 'x' is not a number") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "0:0.5"}).find("must be an integer in [1, 1073741824] (got 0)") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:0.5:sideways"}).find("unknown policy 'sideways'") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:0.5,5:0.5,5:0.5,5:0.5"}).find("at most 3") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:0.5", "--k", "3"}).find("not both") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--pullback", "sometimes"}).find("--pullback") != std::string::npos);
  CHECK(error_of({"--optimizer", "adam", "--momentum", "0.9"}).find("--momentum: is SGD's") != std::string::npos);
  CHECK(error_of({"--optimizer", "sgd", "--beta1", "0.8"}).find("--beta1") != std::string::npos);
  CHECK(error_of({"--optimizer", "sgd", "--nesterov", "--momentum", "0"}).find("needs --momentum > 0") !=
        std::string::npos);
  CHECK(error_of({"--lr", "-1"}).find("--lr") != std::string::npos);
  CHECK(error_of({"--lr", "fast"}).find("--lr") != std::string::npos);
  CHECK(error_of({"--batch-size", "0"}).find("--batch-size") != std::string::npos);
  CHECK(error_of({"--epochs", "0"}).find("--epochs") != std::string::npos);
  CHECK(error_of({"--width", "0"}).find("--width") != std::string::npos);
  CHECK(error_of({"--schedule", "linear"}).find("--schedule") != std::string::npos);
  CHECK(error_of({"--gamma", "0.5"}).find("only to --schedule step") != std::string::npos);
  CHECK(error_of({"--dataset", "imagenet"}).find("--dataset") != std::string::npos);
  CHECK(error_of({"--dataset", "cifar10"}).find("needs --data DIR") != std::string::npos);
  CHECK(error_of({"--image-size", "16"}).find("synthetic only") != std::string::npos);
  CHECK(error_of({"--stem", "vgg"}).find("--stem") != std::string::npos);
  CHECK(error_of({"--device", "tpu"}).find("--device") != std::string::npos);
  CHECK(error_of({"--eval-slow"}).find("needs a Lookahead optimizer") != std::string::npos);
  CHECK(error_of({"--checkpoint-every", "10"}).find("needs --checkpoint") != std::string::npos);
  CHECK(error_of({"--resume", "/nonexistent/checkpoint"}).find("--resume") != std::string::npos);
  CHECK(error_of({"--frobnicate"}).find("frobnicate") != std::string::npos);
  CHECK_THROWS_AS(parse_command_line({"--help"}), CLI::CallForHelp);
}

TEST_CASE("cli: levels parser") {
  const auto lv = parse_levels("3:0.25,7:1:reset", nestla::Momentum::pullback);
  REQUIRE(lv.size() == 2);
  CHECK(lv[0].k == 3);
  CHECK(lv[0].alpha == 0.25);
  CHECK(lv[0].momentum == nestla::Momentum::pullback);
  CHECK(lv[1].momentum == nestla::Momentum::reset);
  CHECK_THROWS_AS(parse_levels("", nestla::Momentum::keep), CLI::ValidationError);
  CHECK_THROWS_AS(parse_levels("5", nestla::Momentum::keep), CLI::ValidationError);
  CHECK_THROWS_AS(parse_levels("5:0.5:keep:x", nestla::Momentum::keep), CLI::ValidationError);
  CHECK_THROWS_AS(parse_levels("5.5:0.5", nestla::Momentum::keep), CLI::ValidationError);
}

// CLI11's own range checks let NaN through and its unsigned conversion wraps -1 (which
// once reached a vector resize as "vector::_M_default_append"): every numeric option is
// checked on the text as typed, and the message names it.
TEST_CASE("cli: every numeric option rejects NaN, infinities, negatives and out-of-range values, naming the option") {
  struct Bad {
    Args context;  // what makes the option applicable
    std::string option;
    std::vector<std::string> values;
  };
  const Args sgd = {"--optimizer", "sgd"};
  const Args step = {"--schedule", "step"};
  const Args la = {"--optimizer", "lookahead"};
  const Args nested = {"--optimizer", "nested"};
  const Args synthetic = {"--dataset", "synthetic"};
  const Bad cases[] = {
      {{}, "--lr", {"nan", "inf", "-inf", "-1", "1e999", "fast"}},
      {sgd, "--momentum", {"nan", "inf", "-0.1", "1", "1.5"}},
      {{}, "--beta1", {"nan", "inf", "-0.1", "1"}},
      {{}, "--beta2", {"nan", "-inf", "1", "2"}},
      {{}, "--weight-decay", {"nan", "inf", "-1e-4"}},
      {step, "--step-size", {"nan", "inf", "0", "-1", "2e6"}},
      {step, "--gamma", {"nan", "inf", "0", "-0.5", "1.5"}},
      {{}, "--warmup", {"nan", "inf", "-1", "2e6"}},
      {la, "--alpha", {"nan", "inf", "-0.1", "1.01"}},
      {nested, "--h", {"nan", "-inf", "2"}},
      {la, "--k", {"nan", "inf", "0", "-3", "1.5", "2147483648"}},
      {nested, "--s", {"nan", "0", "-1"}},
      {nested, "--depth", {"nan", "-1", "0", "4", "2.5"}},
      {{}, "--train-subset", {"-1", "nan", "1.5", "2147483648", "18446744073709551615"}},
      {{}, "--test-subset", {"-1", "inf"}},
      {synthetic, "--image-size", {"nan", "2", "2048", "-16"}},
      {{}, "--width", {"nan", "0", "-8", "5000", "8.5"}},
      {{}, "--batch-size", {"nan", "0", "-1", "65537", "18446744073709551615"}},
      {{}, "--eval-batch-size", {"nan", "-1", "65537"}},
      {{}, "--epochs", {"nan", "0", "-1", "1.5", "1048577"}},
      {{}, "--seed", {"-1", "nan", "18446744073709551616", "1.5"}},
      {{}, "--threads", {"nan", "-1", "1025"}},
      {{}, "--max-steps", {"nan", "-1", "9223372036854775808"}},
      {{"--checkpoint", "x.ckpt"}, "--checkpoint-every", {"nan", "-1", "1.5"}},
  };
  for (const Bad& b : cases)
    for (const std::string& v : b.values) {
      Args args = b.context;
      args.push_back(b.option);
      args.push_back(v);
      const std::string error = error_of(args);
      CAPTURE(b.option);
      CAPTURE(v);
      CAPTURE(error);
      CHECK(error.rfind(b.option + ":", 0) == 0);  // "--gamma: must be ..." or "Could not convert: ..."
    }
  // The message says what is allowed.
  CHECK(error_of({"--schedule", "step", "--gamma", "nan"}) == "--gamma: must be a finite number in (0, 1] (got nan)");
  CHECK(error_of({"--warmup", "inf"}) == "--warmup: must be a finite number in [0, 1048576] (got inf)");
  CHECK(error_of({"--train-subset", "-1"}) == "--train-subset: must be an integer in [0, 2147483647] (got -1)");
  CHECK(error_of({"--lr", "fast"}) == "--lr: 'fast' is not a number");
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:nan"}).find("--levels") == 0);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:inf"}).find("--levels") == 0);

  // The edges themselves, and the spellings people type, are accepted.
  CHECK(error_of({"--lr", "0"}).empty());
  CHECK(error_of({"--lr", "+1e-3"}).empty());
  CHECK(error_of({"--optimizer", "sgd", "--momentum", "0"}).empty());
  CHECK(error_of({"--beta1", "0.999999"}).empty());
  CHECK(error_of({"--schedule", "step", "--gamma", "1", "--step-size", "0.5"}).empty());
  CHECK(error_of({"--warmup", "0.25"}).empty());
  CHECK(error_of({"--seed", "18446744073709551615"}).empty());
  CHECK(error_of({"--batch-size", "65536", "--eval-batch-size", "0", "--width", "4096", "--epochs", "1048576"}).empty());
  CHECK(parse_command_line({"--seed", "18446744073709551615"}).trainer.seed == 18446744073709551615ull);
  CHECK(parse_command_line({"--train-subset", "+100"}).train_data.limit == 100);
}

// Special files are refused when the options are parsed: before any data is loaded,
// and without opening them (opening a FIFO blocks, opening a device may act).
TEST_CASE("cli: a device node, FIFO, socket or directory as --checkpoint, --metrics or --resume is refused") {
  using resnet18::testing::TempDir;
  TempDir dir;
  const std::string fifo = (dir / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string sub = (dir / "sub").string();
  std::filesystem::create_directory(sub);
  const std::string sock = (dir / "sock").string();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  const std::string to_null = (dir / "link-to-null").string();
  // Parsing opens nothing, so the system's /dev/null is safe here.
  std::filesystem::create_symlink("/dev/null", to_null);
  const std::string regular = (dir / "run.ckpt").string();
  std::ofstream(regular) << "x";
  const std::string to_regular = (dir / "link-to-run.ckpt").string();
  std::filesystem::create_symlink("run.ckpt", to_regular);

  for (const char* option : {"--checkpoint", "--metrics"}) {
    CAPTURE(option);
    CHECK(error_of({option, "/dev/null"}) == std::string(option) +
                                              ": /dev/null: is a character device, not a regular file: the trainer "
                                              "replaces only regular files");
    CHECK(error_of({option, fifo}).find(std::string(option) + ": " + fifo + ": is a FIFO") == 0);
    CHECK(error_of({option, sub}).find(std::string(option) + ": " + sub + ": is a directory") == 0);
    CHECK(error_of({option, sock}).find(std::string(option) + ": " + sock + ": is a socket") == 0);
    CHECK(error_of({option, to_null}).find(std::string(option) + ": " + to_null +
                                           " (a link to /dev/null): is a character device") == 0);
    CHECK(error_of({option, regular}).empty());
    CHECK(error_of({option, to_regular}).empty());
    CHECK(error_of({option, (dir / "new.file").string()}).empty());
  }
  CHECK(error_of({"--resume", "/dev/zero"}) == "--resume: /dev/zero: is a character device, not a checkpoint file");
  CHECK(error_of({"--resume", fifo}) == "--resume: " + fifo + ": is a FIFO (named pipe), not a checkpoint file");
  CHECK(error_of({"--resume", sub}) == "--resume: " + sub + ": is a directory, not a checkpoint file");
  CHECK(error_of({"--resume", (dir / "missing").string()}).find("No such file or directory") != std::string::npos);
  CHECK(error_of({"--resume", to_regular}).empty());
  // Nothing was created, removed or replaced.
  ::close(fd);
  struct stat st {};
  CHECK((::stat(fifo.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)));
  CHECK((::lstat(to_null.c_str(), &st) == 0 && S_ISLNK(st.st_mode)));
  CHECK((::stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode)));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()) == 6);
}

TEST_CASE("cli: distributed layouts (--groups) and DiLoCo's outer momentum") {
  const RunSetup ddp = parse_command_line({"--optimizer", "adam", "--groups", "all"});
  CHECK(ddp.groups == std::vector<std::string>{"all"});
  const RunSetup nested = parse_command_line({"--optimizer", "nested", "--groups", "1,2,all"});
  CHECK(nested.groups == std::vector<std::string>{"1", "2", "all"});
  CHECK(parse_command_line({"--optimizer", "nested"}).groups.empty());  // the default: 1,1,all
  const RunSetup diloco = parse_command_line({"--optimizer", "lookahead", "--inner", "adamw", "--alpha", "0.7",
                                              "--outer-momentum", "0.9", "--outer-nesterov"});
  CHECK(diloco.optimizer.levels.back().outer_momentum == 0.9);
  CHECK(diloco.optimizer.levels.back().outer_nesterov);
  CHECK(make_optimizer<EigenParams>(diloco.optimizer)->describe().find("outer_momentum=0.9 nesterov") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--groups", "1,all"}).find("2 groups for 3 levels") != std::string::npos);
  CHECK(error_of({"--optimizer", "adam", "--groups", "0"}).find("level 0: '0' is not a group") != std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--groups", "1,everyone"}).find("'everyone'") != std::string::npos);
  CHECK(error_of({"--optimizer", "adam", "--outer-momentum", "0.9"}).find("applies to a Lookahead level") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--outer-nesterov"}).find("needs --outer-momentum > 0") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--outer-momentum", "-1"}).find("--outer-momentum") != std::string::npos);
}
