// Must not compile: the rule has no prepare. The error must say what is missing.
#include <nestla/nestla.hpp>

#include <vector>

struct no_prepare_rule {
  struct options {
    double lr = 0.1;
  };
  static constexpr const char* name = "NoPrepare";
  static constexpr std::array<const char*, 0> states{};
  static constexpr int first_moment = -1;
  static void validate(const options&, const nestla::option_check&) {}
  static void fields(auto& o, auto&& f) { f("lr", o.lr); }
};

int main() {
  nestla::BaseOptimizer<no_prepare_rule> opt;
  std::vector<float> p(3), g(3);
  opt.step(p, g);
}
