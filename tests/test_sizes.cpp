// Size arithmetic never wraps: checked helpers, Layout::of and the allocators refuse what no allocation can hold.
#include <doctest/doctest.h>

#include <nestla/detail/checked.hpp>
#include <nestla/detail/host_buffer.hpp>
#include <nestla/huge_page_allocator.hpp>
#include <nestla/step_plan.hpp>

#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <vector>

namespace d = nestla::detail;

namespace {
constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
constexpr std::size_t p62 = std::size_t(1) << 62;
}  // namespace

TEST_CASE("checked add, multiply and round up report overflow at the exact boundary") {
  CHECK(!d::add_overflows(max - 5, 5));
  CHECK(d::add_overflows(max - 5, 6));
  CHECK(!d::mul_overflows(p62, 3));
  CHECK(d::mul_overflows(p62, 4));
  CHECK(!d::mul_overflows(max, 0));
  CHECK(!d::mul_overflows(0, max));
  CHECK(!d::round_up_overflows(max - 63, 64));
  CHECK(d::round_up_overflows(max - 62, 64));
  CHECK(d::checked_round_up(65, 64, "x") == 128);
  CHECK(d::checked_mul(p62, 3, "x") == 3 * p62);
  CHECK_THROWS_AS((void)d::checked_add(max, 1, "x"), std::length_error);
  CHECK_THROWS_WITH((void)d::checked_mul(p62, 4, "the test product"), "nestla: size overflow in the test product");
  CHECK_THROWS_AS((void)d::checked_round_up(max, 2, "x"), std::length_error);
  std::size_t bytes = 7;
  CHECK(d::object_bytes<float>(d::max_object_bytes / 4, bytes));
  CHECK(bytes == d::max_object_bytes / 4 * 4);
  CHECK(!d::object_bytes<float>(d::max_object_bytes / 4 + 1, bytes));
  CHECK(!d::object_bytes<double>(p62, bytes));
}

// The padded total used to wrap: {2^62, 16} floats gave a 64-byte buffer.
TEST_CASE("Layout::of refuses sizes whose padded total or bytes overflow, and keeps exact ones") {
  CHECK_THROWS_AS(nestla::Layout::of<float>({p62, 16}), std::length_error);
  CHECK_THROWS_AS(nestla::Layout::of<float>({p62 - 16, 48}), std::length_error);
  CHECK_THROWS_AS(nestla::Layout::of<float>({max}), std::length_error);
  CHECK_THROWS_AS(nestla::Layout::of<float>({max - 3}), std::length_error);
  CHECK_THROWS_AS(nestla::Layout::of<double>({p62 / 8, p62 / 8, p62 / 8, p62 / 8}), std::length_error);
  CHECK_THROWS_AS(nestla::Layout::of<double>({std::size_t(1) << 60}), std::length_error);
  // The largest that fits: (2^63 - 64) bytes of float, padding included.
  const std::size_t most = (d::max_object_bytes / 4) / 16 * 16;
  const auto l = nestla::Layout::of<float>({most - 16, 1});
  CHECK(l.offsets == std::vector<std::size_t>{0, most - 16});
  CHECK(l.total == most);
  CHECK_THROWS_AS(nestla::Layout::of<float>({most - 16, 17}), std::length_error);
  const auto small = nestla::Layout::of<double>({0, 1, 9, 8});
  CHECK(small.offsets == std::vector<std::size_t>{0, 0, 8, 24});
  CHECK(small.total == 32);
}

// The 2 MiB rounding used to wrap to 0, and the whole request was then zeroed.
TEST_CASE("host allocations near 2^64 bytes throw bad_alloc instead of wrapping") {
  CHECK_THROWS_AS((void)d::allocate_host_bytes(max), std::bad_alloc);
  CHECK_THROWS_AS((void)d::allocate_host_bytes(max - (std::size_t(2) << 20) + 2), std::bad_alloc);
  CHECK_THROWS_AS((void)d::allocate_host_bytes(d::max_object_bytes + 1), std::bad_alloc);
  CHECK_THROWS_AS(d::host_buffer<float>{max / 4 + 1}, std::bad_alloc);
  CHECK_THROWS_AS(d::host_buffer<float>{p62}, std::bad_alloc);
  CHECK_THROWS_AS(d::host_buffer<double>{max}, std::bad_alloc);
  nestla::huge_page_allocator<double> a;
  CHECK_THROWS_AS((void)a.allocate(p62), std::bad_array_new_length);
  CHECK_THROWS_AS((void)a.allocate(max), std::bad_array_new_length);
  d::host_buffer<float> ok(5);
  CHECK(ok.size() == 5);
  CHECK(ok.data()[4] == 0.0f);
}
