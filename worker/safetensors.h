/* safetensors files: weight interchange with PyTorch / Hugging Face.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
 * (optionally padded with spaces), then the data section; offsets are relative to its start,
 * tensors are row-major little-endian and tile the data section without gaps or overlaps.
 *
 * Reading validates everything and keeps the raw bytes (the file is mapped); any dtype of
 * the format is accepted and F32, BF16, F16 convert to fp32 (exact widening). Writing takes
 * fp32 data and stores F32 or BF16 (round to nearest even), or raw bytes of any dtype, which
 * makes read -> write bit-exact when the dtype does not change. */
#ifndef HYLA_SAFETENSORS_H
#define HYLA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define HYLA_ST_MAX_DIMS 8
#define HYLA_ST_MAX_HEADER (100u * 1024 * 1024) /* the format's own limit on the JSON header */

enum hyla_st_status {
    HYLA_ST_OK = 0,
    HYLA_ST_EIO = 1,     /* cannot open, map, write */
    HYLA_ST_EFORMAT = 2, /* the file is not valid safetensors */
    HYLA_ST_EARG = 3,    /* a caller's request that cannot be met (unknown name, dtype, shape) */
};

struct hyla_st_error {
    int code;           /* enum hyla_st_status */
    char message[1024];
};

enum hyla_st_dtype {
    HYLA_ST_BOOL, HYLA_ST_U8, HYLA_ST_I8, HYLA_ST_F8_E4M3, HYLA_ST_F8_E5M2, HYLA_ST_I16, HYLA_ST_U16,
    HYLA_ST_F16, HYLA_ST_BF16, HYLA_ST_I32, HYLA_ST_U32, HYLA_ST_F32, HYLA_ST_I64, HYLA_ST_U64, HYLA_ST_F64,
    HYLA_ST_NUM_DTYPES
};

/* "F32", "BF16", ... as in the file; element size in bytes. */
const char *hyla_st_dtype_name(enum hyla_st_dtype dtype);
size_t hyla_st_dtype_size(enum hyla_st_dtype dtype);
/* 0 and *dtype on a known name, -1 otherwise. */
int hyla_st_dtype_parse(const char *name, enum hyla_st_dtype *dtype);

/* bf16 <-> fp32: widening is exact; narrowing rounds to nearest, ties to even, like PyTorch's
 * c10::BFloat16: every NaN becomes 0x7FC0, infinities stay, overflow rounds to infinity. */
uint16_t hyla_f32_to_bf16(float x);
float hyla_bf16_to_f32(uint16_t h);
float hyla_f16_to_f32(uint16_t h);

/* ---- reading ---------------------------------------------------------------------------- */

struct hyla_st_tensor {
    char *name;
    enum hyla_st_dtype dtype;
    int ndim;
    int64_t shape[HYLA_ST_MAX_DIMS];
    uint64_t num_elements;   /* product of the shape (1 for a scalar) */
    const void *data;        /* raw little-endian bytes inside the mapping; may be unaligned */
    uint64_t nbytes;
    uint64_t offset;         /* data_offsets[0] */
};

struct hyla_st_file {
    struct hyla_st_tensor *tensors; /* in data-offset order */
    int num_tensors;
    char **meta_keys, **meta_values; /* __metadata__, in file order */
    int num_meta;
    void *map;
    size_t map_bytes;
};

/* Map and validate a file: header length within the file, JSON header, no duplicate names,
 * known dtypes, shapes of non-negative integers with shape x dtype size = byte length,
 * offsets within the data section, contiguous, covering it exactly; metadata string -> string. */
int hyla_st_open(struct hyla_st_file *file, const char *path, struct hyla_st_error *err);
void hyla_st_close(struct hyla_st_file *file);

/* NULL when absent. */
const struct hyla_st_tensor *hyla_st_find(const struct hyla_st_file *file, const char *name);
const char *hyla_st_metadata(const struct hyla_st_file *file, const char *key);

/* Convert a tensor to fp32 (out holds num_elements floats); F32, BF16, F16 only. */
int hyla_st_to_f32(const struct hyla_st_tensor *tensor, float *out, struct hyla_st_error *err);

/* ---- writing ---------------------------------------------------------------------------- */

struct hyla_st_entry {
    const char *name;            /* free-form, unique, not "__metadata__" */
    enum hyla_st_dtype dtype;    /* stored dtype */
    int ndim;                    /* 0..HYLA_ST_MAX_DIMS; 0 = scalar */
    const int64_t *shape;
    const float *f32;            /* fp32 data, converted to dtype (F32 or BF16) ... */
    const void *raw;             /* ... or, when not NULL, bytes already in dtype, written as they are */
};

struct hyla_st_meta {
    const char *key, *value;
};

/* Write path atomically (path.tmp, fsync, rename); tensors in the order given. */
int hyla_st_write(const char *path, const struct hyla_st_entry *tensors, int num_tensors,
                  const struct hyla_st_meta *meta, int num_meta, struct hyla_st_error *err);

#endif
