// nestla::mpi::group: sums with the same bits on every worker, broadcast, members, layouts, bad communicators refused.
#include <doctest/doctest.h>

#include <nestla/mpi.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mpi_world.hpp"

namespace {

int world_rank() { return mpi_world::rank(); }
int world_size() { return mpi_world::size(); }

// Values whose sums round differently in different orders.
template <class T>
std::vector<T> awkward(std::size_t n, int rank) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = T(std::ldexp(1.0 + 0.1 * double((i * 7 + static_cast<std::size_t>(rank) * 13) % 31), int(i % 40) - 20) *
             (i % 3 == 0 ? -1 : 1));
  return v;
}

// Every worker of comm holds the same bytes.
bool same_everywhere(const void* data, std::size_t bytes, MPI_Comm comm) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  std::vector<char> all(bytes * static_cast<std::size_t>(n));
  MPI_Allgather(data, static_cast<int>(bytes), MPI_BYTE, all.data(), static_cast<int>(bytes), MPI_BYTE, comm);
  for (int r = 0; r < n; ++r)
    if (std::memcmp(all.data() + bytes * static_cast<std::size_t>(r), data, bytes) != 0) return false;
  return true;
}

template <class F>
std::string comm_error_of(F&& f) {
  try {
    f();
  } catch (const nestla::comm_error& e) {
    return e.what();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE_TEMPLATE("the sum is the sum, with the same bits on every worker", T, float, double) {
  auto g = nestla::mpi::world();
  const int n = g->size();
  for (std::size_t len : {std::size_t(1), std::size_t(7), std::size_t(1000), std::size_t(100003)}) {
    const std::size_t total = (len + n - 1) / n * n;
    auto mine = awkward<T>(total, g->rank());
    auto data = mine;
    g->allreduce_sum(data.data(), total);
    CHECK(same_everywhere(data.data(), total * sizeof(T), MPI_COMM_WORLD));
    // Against the sum in double of every worker's values: within rounding.
    std::vector<T> all(total * static_cast<std::size_t>(n));
    MPI_Allgather(mine.data(), int(total * sizeof(T)), MPI_BYTE, all.data(), int(total * sizeof(T)), MPI_BYTE,
                  MPI_COMM_WORLD);
    double worst = 0;
    for (std::size_t i = 0; i < total; ++i) {
      double s = 0, mag = 0;
      for (int r = 0; r < n; ++r) s += double(all[static_cast<std::size_t>(r) * total + i]), mag += std::abs(double(all[static_cast<std::size_t>(r) * total + i]));
      worst = std::max(worst, std::abs(double(data[i]) - s) / mag);
    }
    CHECK(worst <= 4 * double(std::numeric_limits<T>::epsilon()));
  }
  if (n > 1) {
    std::vector<T> odd(static_cast<std::size_t>(n) + 1);
    CHECK_THROWS_AS(g->allreduce_sum(odd.data(), odd.size()), nestla::comm_error);  // not a multiple of the size
  }
}

TEST_CASE("broadcast from the first worker, members as world ranks, counted bytes") {
  auto g = nestla::mpi::world();
  CHECK(g->size() == world_size());
  CHECK(g->rank() == world_rank());
  std::vector<std::int64_t> want(static_cast<std::size_t>(world_size()));
  for (int r = 0; r < world_size(); ++r) want[static_cast<std::size_t>(r)] = r;
  CHECK(g->members() == want);
  std::vector<double> v(1001, double(g->rank() + 1));
  g->reset_stats();
  g->broadcast(v.data(), v.size());
  CHECK(v == std::vector<double>(1001, 1.0));
  CHECK(g->stats().collectives == 1);
  CHECK(g->stats().bytes == 1001 * sizeof(double));
  std::vector<float> s(8 * static_cast<std::size_t>(g->size()), 1.0f);
  g->allreduce_sum(s.data(), s.size());
  CHECK(g->stats().collectives == 2);
  CHECK(g->stats().bytes_sent == (g->rank() + 1 < g->size() ? 1001 * sizeof(double) : 0) +
                                     2 * 8 * sizeof(float) * static_cast<std::size_t>(g->size() - 1));
  CHECK(s == std::vector<float>(s.size(), float(g->size())));
}

TEST_CASE("layouts: consecutive blocks, the node, a split; their members in world ranks") {
  const int r = world_rank(), n = world_size();
  auto pairs = nestla::mpi::consecutive(2);
  const int lo = r / 2 * 2;
  std::vector<std::int64_t> want;
  for (int q = lo; q < std::min(lo + 2, n); ++q) want.push_back(q);
  CHECK(pairs->members() == want);
  CHECK(pairs->rank() == r - lo);
  auto node = nestla::mpi::node();
  CHECK(node->size() == n);  // one machine
  auto odd = nestla::mpi::split(r % 2, -r);  // reversed order inside each half
  CHECK(odd->members().front() == (n - 1) - ((n - 1 - r % 2) % 2));
  CHECK(comm_error_of([] { nestla::mpi::consecutive(0); }).find("g = 0") != std::string::npos);
}

TEST_CASE("bad communicators are refused with a clear error") {
  CHECK(comm_error_of([] { nestla::mpi::group::create(MPI_COMM_NULL); }).find("MPI_COMM_NULL") != std::string::npos);
  const int n = world_size(), r = world_rank();
  if (n >= 2) {
    MPI_Comm half, inter;
    MPI_Comm_split(MPI_COMM_WORLD, r < n / 2, r, &half);
    MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, r < n / 2 ? n / 2 : 0, 7, &inter);
    CHECK(comm_error_of([&] { nestla::mpi::group::create(inter); }).find("intercommunicator") != std::string::npos);
    MPI_Comm_free(&inter);
    MPI_Comm_free(&half);
  }
}
