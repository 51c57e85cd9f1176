// This process's rank and the job's size in MPI_COMM_WORLD, for the MPI tests.
#pragma once

#include <mpi.h>

namespace mpi_world {

inline int rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

}  // namespace mpi_world
