// Must not compile: the rule cannot be checkpointed without its fields.
#include <nestla/nestla.hpp>

struct no_fields_rule {
  struct options {
    double lr = 0.1;
  };
  static constexpr const char* name = "NoFields";
  static constexpr std::array<const char*, 0> states{};
  static constexpr int first_moment = -1;
  static void validate(const options&, const nestla::option_check&) {}
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

int main() { nestla::BaseOptimizer<no_fields_rule> opt; }
