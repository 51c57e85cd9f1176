// Must not compile: first_moment names a state the rule does not have.
#include <nestla/nestla.hpp>

#include <vector>

struct bad_rule {
  struct options {
    double lr = 0.1;
  };
  static constexpr const char* name = "Bad";
  static constexpr std::array<const char*, 1> states{"m"};
  static constexpr int first_moment = 1;
  static void validate(const options&, const nestla::option_check&) {}
  static void fields(auto& o, auto&& f) { f("lr", o.lr); }
  template <class T>
  struct update {
    template <class V>
    void operator()(V&, V, V*) const {}
  };
  template <class T>
  static update<T> prepare(const options&, const nestla::step_context&) {
    return {};
  }
};

int main() { nestla::BaseOptimizer<bad_rule> opt; }
