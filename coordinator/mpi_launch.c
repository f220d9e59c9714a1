/* Starting and stopping MPI only when the process was launched by mpirun or srun: a plain
 * `hyla train` runs alone without touching MPI (no orted, no root checks). */
#include <stdlib.h>

#include "common/hyla_error.h"
#include "roles.h"

int hyla_mpi_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

void hyla_mpi_start(int *argc, char ***argv, int *world_rank, int *world_size) {
    *world_rank = 0, *world_size = 1;
    if (!hyla_mpi_launched()) return;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) hyla_die("MPI_Init failed; check the mpirun installation");
    MPI_Comm_rank(MPI_COMM_WORLD, world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, world_size);
}

void hyla_mpi_stop(void) {
    int started = 0, finished = 0;
    MPI_Initialized(&started);
    if (started) MPI_Finalized(&finished);
    if (started && !finished) MPI_Finalize();
}
