#include "worker/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bf16.h"
#include "common/hyla_error.h"

/* The data section is read and written in the host's byte order; safetensors is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; hyla's reader supports little-endian hosts only"
#endif

static int st_fail(struct hyla_st_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int st_fail(struct hyla_st_error *err, int code, const char *fmt, ...) {
    if (!err) return code;
    va_list args;
    va_start(args, fmt);
    hyla_vmessage(err->message, sizeof err->message, fmt, args);
    va_end(args);
    err->code = code;
    return code;
}

/* ---- dtypes and conversions ------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_table[HYLA_ST_NUM_DTYPES] = {
    [HYLA_ST_BOOL] = {"BOOL", 1}, [HYLA_ST_U8] = {"U8", 1},     [HYLA_ST_I8] = {"I8", 1},
    [HYLA_ST_F8_E4M3] = {"F8_E4M3", 1}, [HYLA_ST_F8_E5M2] = {"F8_E5M2", 1},
    [HYLA_ST_I16] = {"I16", 2},   [HYLA_ST_U16] = {"U16", 2},   [HYLA_ST_F16] = {"F16", 2},
    [HYLA_ST_BF16] = {"BF16", 2}, [HYLA_ST_I32] = {"I32", 4},   [HYLA_ST_U32] = {"U32", 4},
    [HYLA_ST_F32] = {"F32", 4},   [HYLA_ST_I64] = {"I64", 8},   [HYLA_ST_U64] = {"U64", 8},
    [HYLA_ST_F64] = {"F64", 8},
};

const char *hyla_st_dtype_name(enum hyla_st_dtype dtype) {
    return (unsigned)dtype < HYLA_ST_NUM_DTYPES ? dtype_table[dtype].name : "unknown";
}

size_t hyla_st_dtype_size(enum hyla_st_dtype dtype) {
    return (unsigned)dtype < HYLA_ST_NUM_DTYPES ? dtype_table[dtype].size : 0;
}

int hyla_st_dtype_parse(const char *name, enum hyla_st_dtype *dtype) {
    for (int i = 0; i < HYLA_ST_NUM_DTYPES; i++)
        if (!strcmp(name, dtype_table[i].name)) {
            *dtype = (enum hyla_st_dtype)i;
            return 0;
        }
    return -1;
}

/* the conversions themselves live in common/bf16.h (shared with the GPU's kernels) */
uint16_t hyla_f32_to_bf16(float x) { return hyla_bf16_round(x); }

float hyla_bf16_to_f32(uint16_t h) { return hyla_bf16_widen(h); }

float hyla_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13); /* inf, NaN */
    } else if (exponent != 0) {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else { /* subnormal half: normal in fp32 */
        uint32_t shift = 0;
        while (!(mantissa & 0x400u)) {
            mantissa <<= 1;
            shift++;
        }
        bits = sign | ((127 - 15 + 1 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* ---- reading ---------------------------------------------------------------------------- */

void hyla_st_close(struct hyla_st_file *file) {
    for (int i = 0; i < file->num_tensors; i++) free(file->tensors[i].name);
    for (int i = 0; i < file->num_meta; i++) {
        free(file->meta_keys[i]);
        free(file->meta_values[i]);
    }
    free(file->tensors);
    free(file->meta_keys);
    free(file->meta_values);
    if (file->map) munmap(file->map, file->map_bytes); /* cannot fail for our own mapping */
    memset(file, 0, sizeof *file);
}

static int map_file(struct hyla_st_file *file, const char *path, struct hyla_st_error *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_fail(err, HYLA_ST_EIO, "cannot open safetensors file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd); /* read-only: nothing to lose */
        return st_fail(err, HYLA_ST_EIO, "cannot stat safetensors file %s: %s", path, strerror(saved));
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 8) {
        close(fd);
        return st_fail(err, HYLA_ST_EFORMAT,
                       "safetensors file %s is %lld bytes, too small for the 8-byte header length: the file is "
                       "truncated or not safetensors",
                       path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    close(fd); /* the mapping stays valid */
    if (map == MAP_FAILED)
        return st_fail(err, HYLA_ST_EIO, "cannot map safetensors file %s: %s", path, strerror(saved));
    file->map = map;
    file->map_bytes = (size_t)st.st_size;
    return HYLA_ST_OK;
}

static int parse_shape(const char *path, const char *name, json_t *shape, struct hyla_st_tensor *t,
                       struct hyla_st_error *err) {
    if (!json_is_array(shape))
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: tensor '%s' has no \"shape\" array", path, name);
    if (json_array_size(shape) > HYLA_ST_MAX_DIMS)
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: tensor '%s' has %zu dimensions; hyla reads up to %d",
                       path, name, json_array_size(shape), HYLA_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    t->num_elements = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *dim = json_array_get(shape, (size_t)d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return st_fail(err, HYLA_ST_EFORMAT,
                           "safetensors file %s: tensor '%s' shape entry %d is not a non-negative integer", path,
                           name, d);
        t->shape[d] = json_integer_value(dim);
        uint64_t n = (uint64_t)t->shape[d];
        if (n != 0 && t->num_elements > UINT64_MAX / n)
            return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: tensor '%s' has an impossibly large shape",
                           path, name);
        t->num_elements *= n;
    }
    return HYLA_ST_OK;
}

static int parse_offsets(const char *path, const char *name, json_t *offsets, uint64_t data_bytes,
                         uint64_t *begin, uint64_t *end, struct hyla_st_error *err) {
    json_t *b = json_array_get(offsets, 0), *e = json_array_get(offsets, 1);
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return st_fail(err, HYLA_ST_EFORMAT,
                       "safetensors file %s: tensor '%s' needs \"data_offsets\": [begin, end] of non-negative integers",
                       path, name);
    *begin = (uint64_t)json_integer_value(b);
    *end = (uint64_t)json_integer_value(e);
    if (*begin > *end)
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: tensor '%s' data_offsets [%llu, %llu] have begin > end",
                       path, name, (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > data_bytes)
        return st_fail(err, HYLA_ST_EFORMAT,
                       "safetensors file %s: tensor '%s' data_offsets [%llu, %llu] are out of range: the data section "
                       "is %llu bytes (the file may be truncated)",
                       path, name, (unsigned long long)*begin, (unsigned long long)*end,
                       (unsigned long long)data_bytes);
    return HYLA_ST_OK;
}

static int parse_tensor(const char *path, const char *name, json_t *entry, const unsigned char *data,
                        uint64_t data_bytes, struct hyla_st_tensor *t, struct hyla_st_error *err) {
    if (!json_is_object(entry))
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: entry '%s' is not an object", path, name);
    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype))
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: tensor '%s' has no \"dtype\" string", path, name);
    if (hyla_st_dtype_parse(json_string_value(dtype), &t->dtype) != 0)
        return st_fail(err, HYLA_ST_EFORMAT,
                       "safetensors file %s: tensor '%s' has unknown dtype \"%s\" (known: BOOL, U8, I8, F8_E4M3, "
                       "F8_E5M2, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64)",
                       path, name, json_string_value(dtype));
    int rc = parse_shape(path, name, json_object_get(entry, "shape"), t, err);
    uint64_t begin = 0, end = 0;
    if (!rc) rc = parse_offsets(path, name, json_object_get(entry, "data_offsets"), data_bytes, &begin, &end, err);
    if (rc) return rc;
    size_t size = hyla_st_dtype_size(t->dtype);
    if (t->num_elements > UINT64_MAX / size || t->num_elements * size != end - begin)
        return st_fail(err, HYLA_ST_EFORMAT,
                       "safetensors file %s: tensor '%s' has %llu elements of %s (%zu bytes each) but data_offsets "
                       "[%llu, %llu] hold %llu bytes",
                       path, name, (unsigned long long)t->num_elements, hyla_st_dtype_name(t->dtype), size,
                       (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin));
    t->name = strdup(name);
    if (!t->name) return st_fail(err, HYLA_ST_EIO, "out of memory reading %s", path);
    t->offset = begin;
    t->nbytes = end - begin;
    t->data = data + begin;
    return HYLA_ST_OK;
}

static int parse_metadata(const char *path, json_t *meta, struct hyla_st_file *file, struct hyla_st_error *err) {
    if (!json_is_object(meta))
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: \"__metadata__\" is not an object", path);
    size_t n = json_object_size(meta);
    file->meta_keys = calloc(n ? n : 1, sizeof *file->meta_keys);
    file->meta_values = calloc(n ? n : 1, sizeof *file->meta_values);
    if (!file->meta_keys || !file->meta_values) return st_fail(err, HYLA_ST_EIO, "out of memory reading %s", path);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value))
            return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: metadata \"%s\" is not a string", path, key);
        file->meta_keys[file->num_meta] = strdup(key);
        file->meta_values[file->num_meta] = strdup(json_string_value(value));
        file->num_meta++; /* counted before the check, so close() frees a half-made pair */
        if (!file->meta_keys[file->num_meta - 1] || !file->meta_values[file->num_meta - 1])
            return st_fail(err, HYLA_ST_EIO, "out of memory reading %s", path);
    }
    return HYLA_ST_OK;
}

static int compare_offsets(const void *a, const void *b) {
    const struct hyla_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes); /* empty tensors first */
}

/* Sorted by offset, the tensors must tile [0, data_bytes) exactly. */
static int check_contiguous(const char *path, struct hyla_st_file *file, uint64_t data_bytes,
                            struct hyla_st_error *err) {
    if (file->num_tensors > 1)
        qsort(file->tensors, (size_t)file->num_tensors, sizeof *file->tensors, compare_offsets);
    uint64_t expected = 0;
    for (int i = 0; i < file->num_tensors; i++) {
        const struct hyla_st_tensor *t = &file->tensors[i];
        if (t->offset != expected)
            return st_fail(err, HYLA_ST_EFORMAT,
                           "safetensors file %s: tensor '%s' starts at data offset %llu, but the previous tensor%s%s%s "
                           "ends at %llu: tensors must be contiguous (%s)",
                           path, t->name, (unsigned long long)t->offset, i ? " '" : "", i ? file->tensors[i - 1].name : "",
                           i ? "'" : "", (unsigned long long)expected, t->offset > expected ? "a gap" : "an overlap");
        expected = t->offset + t->nbytes;
    }
    if (expected != data_bytes)
        return st_fail(err, HYLA_ST_EFORMAT,
                       "safetensors file %s: the tensors cover %llu bytes but the data section is %llu bytes (%s)",
                       path, (unsigned long long)expected, (unsigned long long)data_bytes,
                       expected < data_bytes ? "trailing bytes" : "truncated");
    return HYLA_ST_OK;
}

static int parse_header(struct hyla_st_file *file, const char *path, json_t *root, const unsigned char *data,
                        uint64_t data_bytes, struct hyla_st_error *err) {
    if (!json_is_object(root))
        return st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: the header is not a JSON object", path);
    size_t n = json_object_size(root);
    file->tensors = calloc(n ? n : 1, sizeof *file->tensors);
    if (!file->tensors) return st_fail(err, HYLA_ST_EIO, "out of memory reading %s", path);
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        int rc;
        if (!strcmp(key, "__metadata__")) {
            rc = parse_metadata(path, value, file, err);
        } else {
            rc = parse_tensor(path, key, value, data, data_bytes, &file->tensors[file->num_tensors], err);
            if (!rc) file->num_tensors++;
        }
        if (rc) return rc;
    }
    return check_contiguous(path, file, data_bytes, err);
}

int hyla_st_open(struct hyla_st_file *file, const char *path, struct hyla_st_error *err) {
    memset(file, 0, sizeof *file);
    int rc = map_file(file, path, err);
    if (rc) return rc;
    const unsigned char *bytes = file->map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | bytes[i]; /* little-endian */
    uint64_t room = file->map_bytes - 8;
    if (header_len == 0 || header_len > room || header_len > HYLA_ST_MAX_HEADER) {
        rc = st_fail(err, HYLA_ST_EFORMAT,
                     "safetensors file %s: the header length in the first 8 bytes is %llu, %s (the file is %zu "
                     "bytes): the file is truncated or not safetensors",
                     path, (unsigned long long)header_len,
                     header_len == 0 ? "but the header cannot be empty"
                     : header_len > room ? "beyond the end of the file"
                                         : "over the format's 100 MB limit",
                     file->map_bytes);
        hyla_st_close(file);
        return rc;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)bytes + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = st_fail(err, HYLA_ST_EFORMAT, "safetensors file %s: the header is not valid JSON (byte %d: %s)", path,
                     jerr.position, jerr.text);
    } else {
        rc = parse_header(file, path, root, bytes + 8 + header_len, room - header_len, err);
        json_decref(root);
    }
    if (rc) hyla_st_close(file);
    return rc;
}

const struct hyla_st_tensor *hyla_st_find(const struct hyla_st_file *file, const char *name) {
    for (int i = 0; i < file->num_tensors; i++)
        if (!strcmp(file->tensors[i].name, name)) return &file->tensors[i];
    return NULL;
}

const char *hyla_st_metadata(const struct hyla_st_file *file, const char *key) {
    for (int i = 0; i < file->num_meta; i++)
        if (!strcmp(file->meta_keys[i], key)) return file->meta_values[i];
    return NULL;
}

int hyla_st_to_f32(const struct hyla_st_tensor *tensor, float *out, struct hyla_st_error *err) {
    const unsigned char *src = tensor->data;
    uint64_t n = tensor->num_elements;
    switch (tensor->dtype) {
    case HYLA_ST_F32:
        if (n) memcpy(out, src, n * sizeof *out);
        return HYLA_ST_OK;
    case HYLA_ST_BF16:
    case HYLA_ST_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, sizeof h); /* the data may be unaligned */
            out[i] = tensor->dtype == HYLA_ST_BF16 ? hyla_bf16_to_f32(h) : hyla_f16_to_f32(h);
        }
        return HYLA_ST_OK;
    default:
        return st_fail(err, HYLA_ST_EARG,
                       "tensor '%s' is %s; only F32, BF16 and F16 convert to fp32 (convert the checkpoint first)",
                       tensor->name, hyla_st_dtype_name(tensor->dtype));
    }
}

/* ---- writing ---------------------------------------------------------------------------- */

static int entry_bytes(const struct hyla_st_entry *e, uint64_t *bytes, struct hyla_st_error *err) {
    if (!e->name || !e->name[0] || !strcmp(e->name, "__metadata__"))
        return st_fail(err, HYLA_ST_EARG, "tensor name \"%s\" is not allowed", e->name ? e->name : "(null)");
    if ((unsigned)e->dtype >= HYLA_ST_NUM_DTYPES)
        return st_fail(err, HYLA_ST_EARG, "tensor '%s': unknown dtype %d", e->name, (int)e->dtype);
    if (!e->raw && e->dtype != HYLA_ST_F32 && e->dtype != HYLA_ST_BF16)
        return st_fail(err, HYLA_ST_EARG,
                       "tensor '%s': fp32 data can be stored as F32 or BF16, not %s (pass raw bytes instead)",
                       e->name, hyla_st_dtype_name(e->dtype));
    if (e->ndim < 0 || e->ndim > HYLA_ST_MAX_DIMS || (e->ndim > 0 && !e->shape))
        return st_fail(err, HYLA_ST_EARG, "tensor '%s': %d dimensions (0..%d with a shape array)", e->name, e->ndim,
                       HYLA_ST_MAX_DIMS);
    uint64_t n = 1;
    for (int d = 0; d < e->ndim; d++) {
        uint64_t dim = (uint64_t)e->shape[d];
        if (e->shape[d] < 0 || (dim && n > (UINT64_MAX / 8) / dim))
            return st_fail(err, HYLA_ST_EARG, "tensor '%s': dimension %d is %lld", e->name, d, (long long)e->shape[d]);
        n *= dim;
    }
    *bytes = n * hyla_st_dtype_size(e->dtype);
    if (*bytes && !e->raw && !e->f32) return st_fail(err, HYLA_ST_EARG, "tensor '%s': no data", e->name);
    return HYLA_ST_OK;
}

/* One {"dtype", "shape", "data_offsets"} object. */
static json_t *entry_json(const struct hyla_st_entry *e, uint64_t begin, uint64_t end) {
    json_t *shape = json_array(), *offsets = json_array(), *obj = json_object();
    int bad = !shape || !offsets || !obj;
    for (int d = 0; !bad && d < e->ndim; d++) bad = json_array_append_new(shape, json_integer(e->shape[d])) != 0;
    bad = bad || json_array_append_new(offsets, json_integer((json_int_t)begin)) != 0 ||
          json_array_append_new(offsets, json_integer((json_int_t)end)) != 0 ||
          json_object_set_new(obj, "dtype", json_string(hyla_st_dtype_name(e->dtype))) != 0;
    if (!bad) {
        bad = json_object_set_new(obj, "shape", shape) != 0;
        shape = NULL;
    }
    if (!bad) {
        bad = json_object_set_new(obj, "data_offsets", offsets) != 0;
        offsets = NULL;
    }
    json_decref(shape);
    json_decref(offsets);
    if (bad) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes so the data is 8-byte aligned. */
static int build_header(const struct hyla_st_entry *tensors, int num_tensors, const struct hyla_st_meta *meta,
                        int num_meta, char **header, size_t *length, struct hyla_st_error *err) {
    json_t *root = json_object();
    if (!root) return st_fail(err, HYLA_ST_EIO, "out of memory building the safetensors header");
    int rc = HYLA_ST_OK;
    if (num_meta > 0) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) != 0)
            rc = st_fail(err, HYLA_ST_EIO, "out of memory building the safetensors header");
        for (int i = 0; !rc && i < num_meta; i++)
            if (!meta[i].key || !meta[i].value || json_object_set_new(m, meta[i].key, json_string(meta[i].value)) != 0)
                rc = st_fail(err, HYLA_ST_EARG, "metadata \"%s\" is missing or not valid UTF-8",
                             meta[i].key ? meta[i].key : "(null)");
    }
    uint64_t offset = 0;
    for (int i = 0; !rc && i < num_tensors; i++) {
        uint64_t bytes = 0;
        rc = entry_bytes(&tensors[i], &bytes, err);
        if (rc) break;
        if (json_object_get(root, tensors[i].name)) {
            rc = st_fail(err, HYLA_ST_EARG, "tensor name '%s' appears twice", tensors[i].name);
            break;
        }
        if (json_object_set_new(root, tensors[i].name, entry_json(&tensors[i], offset, offset + bytes)) != 0)
            rc = st_fail(err, HYLA_ST_EARG, "tensor name '%s' is not valid UTF-8 (or out of memory)", tensors[i].name);
        offset += bytes;
    }
    char *text = rc ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (rc) return rc;
    size_t n = text ? strlen(text) : 0, padded = (n + 7) / 8 * 8;
    char *out = text ? realloc(text, padded + 1) : NULL;
    if (!out) {
        free(text);
        return st_fail(err, HYLA_ST_EIO, "out of memory building the safetensors header");
    }
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    *header = out;
    *length = padded;
    return HYLA_ST_OK;
}

static int write_entry_data(FILE *f, const struct hyla_st_entry *e, const char *tmp, struct hyla_st_error *err) {
    uint64_t bytes = 0;
    entry_bytes(e, &bytes, NULL); /* validated while building the header */
    if (bytes == 0) return HYLA_ST_OK;
    if (e->raw || e->dtype == HYLA_ST_F32) {
        const void *src = e->raw ? e->raw : (const void *)e->f32;
        if (fwrite(src, 1, (size_t)bytes, f) != bytes)
            return st_fail(err, HYLA_ST_EIO, "cannot write %s: %s", tmp, strerror(errno));
        return HYLA_ST_OK;
    }
    uint16_t chunk[4096]; /* BF16 from fp32, a chunk at a time */
    uint64_t n = bytes / 2;
    for (uint64_t done = 0; done < n;) {
        size_t take = n - done < 4096 ? (size_t)(n - done) : 4096;
        for (size_t i = 0; i < take; i++) chunk[i] = hyla_f32_to_bf16(e->f32[done + i]);
        if (fwrite(chunk, sizeof *chunk, take, f) != take)
            return st_fail(err, HYLA_ST_EIO, "cannot write %s: %s", tmp, strerror(errno));
        done += take;
    }
    return HYLA_ST_OK;
}

static int write_body(FILE *f, const char *header, size_t header_len, const struct hyla_st_entry *tensors,
                      int num_tensors, const char *tmp, struct hyla_st_error *err) {
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    if (fwrite(len_bytes, 1, 8, f) != 8 || fwrite(header, 1, header_len, f) != header_len)
        return st_fail(err, HYLA_ST_EIO, "cannot write %s: %s", tmp, strerror(errno));
    for (int i = 0; i < num_tensors; i++) {
        int rc = write_entry_data(f, &tensors[i], tmp, err);
        if (rc) return rc;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        return st_fail(err, HYLA_ST_EIO, "cannot flush %s: %s", tmp, strerror(errno));
    return HYLA_ST_OK;
}

int hyla_st_write(const char *path, const struct hyla_st_entry *tensors, int num_tensors,
                  const struct hyla_st_meta *meta, int num_meta, struct hyla_st_error *err) {
    size_t header_len = 0;
    char *header = NULL;
    int rc = build_header(tensors, num_tensors, meta, num_meta, &header, &header_len, err);
    if (rc) return rc;
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        free(header);
        return st_fail(err, HYLA_ST_EARG, "path is too long: %.100s...", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(header);
        return st_fail(err, HYLA_ST_EIO, "cannot create %s: %s; check that the directory exists and is writable", tmp,
                       strerror(errno));
    }
    rc = write_body(f, header, header_len, tensors, num_tensors, tmp, err);
    free(header);
    if (fclose(f) != 0 && !rc) rc = st_fail(err, HYLA_ST_EIO, "cannot close %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = st_fail(err, HYLA_ST_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc) unlink(tmp); /* best effort; the error is already reported */
    return rc;
}
