# Sourced by hyla's scripts: settings every run needs.
# Open MPI refuses to run as root unless told that it is intended (containers, CI).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# OpenMP threads do the parallel work; OpenBLAS stays single-threaded inside them, so
# results do not depend on how its threads are scheduled.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
