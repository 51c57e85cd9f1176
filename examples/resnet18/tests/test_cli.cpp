// resnet18_train's command line: defaults, the optimizer grid it reaches, and clear errors for bad values.
#include <doctest/doctest.h>

#include <string>
#include <typeinfo>
#include <vector>

#include "cli.hpp"

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
  CHECK(error_of({"--optimizer", "lookahead", "--k", "0"}) == "--k: must be >= 1 (got 0)");
  CHECK(error_of({"--optimizer", "nested", "--s", "0"}) == "--s: must be >= 1 (got 0)");
  CHECK(error_of({"--optimizer", "lookahead", "--alpha", "1.5"}) == "--alpha: must be in [0, 1] (got 1.5)");
  CHECK(error_of({"--optimizer", "nested", "--h", "-0.1"}).find("--h: must be in [0, 1]") != std::string::npos);
  CHECK(error_of({"--optimizer", "lookahead", "--s", "5"}).find("no second level") != std::string::npos);
  CHECK(error_of({"--optimizer", "adam", "--k", "5"}).find("--k: applies only to --optimizer lookahead or nested") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "sgd", "--depth", "2"}).find("--depth") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:0.5", "--depth", "2"}).find("1 levels given, but --depth is 2") !=
        std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "5:x"}).find("alpha 'x' is not a number") != std::string::npos);
  CHECK(error_of({"--optimizer", "nested", "--levels", "0:0.5"}).find("must be >= 1") != std::string::npos);
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
