/* Which GPU a worker process uses: its index among the workers on its host, modulo the GPUs
 * it sees. The coordinator (world rank 0) uses none, so on a host with W GPUs,
 * `mpirun -np 1+W` gives each worker its own. */
#include <stdio.h>

#include "roles.h"
#ifdef HYLA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

int hyla_pick_worker_gpu(int is_worker) {
    int launched = 0;
    MPI_Initialized(&launched);
    int failed = 0;
    if (!launched) return 0; /* alone: GPU 0 */
    MPI_Comm host, host_workers;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host);
    MPI_Comm_split(host, is_worker ? 0 : MPI_UNDEFINED, 0, &host_workers);
    if (is_worker) {
        int index = 0;
        MPI_Comm_rank(host_workers, &index);
#ifdef HYLA_WITH_CUDA
        const int gpus = hyla_cuda_device_count();
        if (gpus == 0) {
            fprintf(stderr, "hyla: error: --backend cuda: this worker sees no GPU; run on GPU hosts or use "
                            "--backend cpu\n");
            failed = 1;
        } else {
            failed = hyla_cuda_use_device(index % gpus) != 0;
        }
#else
        (void)index;
        fprintf(stderr, "hyla: error: --backend cuda: this hyla was built without CUDA; rebuild with -DHYLA_CUDA=ON\n");
        failed = 1;
#endif
        MPI_Comm_free(&host_workers);
    }
    MPI_Comm_free(&host);
    /* every process learns whether any worker failed, so that all stop together */
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return failed;
}
