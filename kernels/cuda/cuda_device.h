/* CUDA device discovery, callable from C. */
#ifndef HYLA_CUDA_DEVICE_H
#define HYLA_CUDA_DEVICE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no device. */
int hyla_cuda_device_count(void);
/* Device name into name[capacity]; 0 on success, -1 on failure. */
int hyla_cuda_device_name(int device, char *name, int capacity);

#ifdef __cplusplus
}
#endif

#endif
