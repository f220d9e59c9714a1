/* The HTML report: a ledger with 4 runs (2 LTE layers x 4 heads of head statistics, loss
 * and eval metrics) gives a self-contained page with the loss curves, lambda_h charts,
 * kept-token heatmaps and the final table; an empty ledger gives "no data" sections; an
 * unknown batch lists the batches. Headless Chromium renders the page, and the screenshot
 * must not be blank (decoded with zlib when the build has it, else compared in size with
 * a blank page's screenshot). Chromium is required: scripts/setup.sh installs it.
 *
 * HYLA_REPORT_KEEP=DIR keeps report.html, report.png (docs/report-screenshot.png) and the
 * demo ledger.db there. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef HYLA_TEST_HAVE_ZLIB
#include <zlib.h>
#endif

#include "experiments/ledger.h"
#include "experiments/report_html.h"
#include "harness.h"

static char dir[64];

static const char *const RUNS[4] = {"lte-r128", "lte-r256", "lte-r512", "lte-r256-lr3e-3"};
static const int BUFFER[4] = {128, 256, 512, 256};

static void must(int rc, const struct hyla_ledger_error *err, const char *what) {
    if (rc != 0) printf("     %s: %s\n", what, err->message);
    check_true(what, rc == 0);
}

/* A deterministic pseudo-random wiggle in [-1, 1]. */
static double noise(int a, int b) {
    double x = sin(a * 12.9898 + b * 78.233) * 43758.5453;
    return 2 * (x - floor(x)) - 1;
}

static void add_demo_run(struct hyla_ledger *l, int64_t batch, int r) {
    struct hyla_ledger_error err;
    int64_t run;
    char config[128], buf[16];
    snprintf(config, sizeof config, "name: %s\nmodel:\n  attn:\n    buffer_size: %d\n", RUNS[r], BUFFER[r]);
    must(hyla_ledger_add_run(l, batch, RUNS[r], config, "feedfacecafebeef", 2, 0, &run, &err), &err, RUNS[r]);
    snprintf(buf, sizeof buf, "%d", BUFFER[r]);
    const char *keys[] = {"name", "model.attn.buffer_size", "train.lr"};
    const char *texts[] = {RUNS[r], buf, r == 3 ? "0.003" : "0.001"};
    double values[] = {NAN, BUFFER[r], r == 3 ? 3e-3 : 1e-3};
    must(hyla_ledger_add_params(l, run, keys, texts, values, 3, &err), &err, "params");
    must(hyla_ledger_set_status(l, run, HYLA_RUN_RUNNING, NULL, &err), &err, "running");
    int steps = r == 2 ? 300 : 400;
    for (int s = 0; s < steps; s++) {
        double loss = 2.0 + 3.5 * exp(-s / (60.0 + 25 * r)) + 0.04 * noise(s, r) - 0.1 * r * s / steps;
        if (hyla_ledger_add_metric(l, run, "loss", s, loss, 0, &err)) must(-1, &err, "loss");
        if (s % 10 != 0) continue;
        for (int layer = 1; layer <= 3; layer += 2)
            for (int h = 0; h < 4; h++) {
                double lambda = 1e-2 * pow(10, -6.0 * s / steps * (0.5 + 0.25 * h)) * (1 + 0.3 * noise(s, h + layer));
                double kept = BUFFER[r] * (0.55 + 0.3 * ((h + layer) % 4)) * (1.0 + 2.0 * exp(-s / (50.0 + 20 * h))) +
                              0.05 * BUFFER[r] * noise(s, h + 4 * layer);
                if (hyla_ledger_add_head_stat(l, run, s, layer, h, kept, 1.0 - kept / 2048, lambda, &err))
                    must(-1, &err, "head stat");
            }
    }
    if (r != 1) must(hyla_ledger_add_metric(l, run, "eval_accuracy", steps - 1, 0.62 + 0.1 * r, 0, &err), &err, "eval");
    must(hyla_ledger_set_status(l, run, r == 2 ? HYLA_RUN_FAILED : HYLA_RUN_FINISHED, r == 2 ? "diverged" : NULL, &err),
         &err, "status");
}

static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *size = fread(buf, 1, (size_t)n, f);
            buf[*size] = '\0';
        }
    }
    fclose(f);
    return buf;
}

static size_t count_of(const char *text, const char *needle) {
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void check_report_html(const char *html) {
    char what[160];
    check_true("an HTML document", !strncmp(html, "<!DOCTYPE html>", 15) && strstr(html, "</html>"));
    for (int r = 0; r < 4; r++) {
        snprintf(what, sizeof what, "names run %s", RUNS[r]);
        check_true(what, strstr(html, RUNS[r]) != NULL);
    }
    check_true("not the other batch's run", !strstr(html, "elsewhere"));
    size_t lines = count_of(html, "<polyline");
    snprintf(what, sizeof what, "4 loss curves + 4 runs x 2 layers x 4 heads of lambda lines (%zu polylines)", lines);
    check_true(what, lines == 4 + 32);
    size_t heatmaps = count_of(html, "class=\"heatmap\"");
    snprintf(what, sizeof what, "a kept-tokens heatmap per run and layer (%zu)", heatmaps);
    check_true(what, heatmaps == 8);
    check_true("lambda charts per layer, on a log axis", count_of(html, "layer 3 &middot; &lambda;") == 4 &&
                                                              strstr(html, "1e-8") != NULL);
    check_true("the target R in the heatmap captions", strstr(html, "target R = 512") != NULL);
    check_true("final metrics table with eval accuracy", strstr(html, "Final metrics") && strstr(html, "0.8200") &&
                                                           strstr(html, "eval accuracy"));
    check_true("the differing config keys as columns", strstr(html, "<th>model.attn.buffer_size</th>") &&
                                                          strstr(html, "<th>train.lr</th>"));
    check_true("status colored", strstr(html, "class=\"failed\"") != NULL);
    check_true("self-contained: no scripts, no links, no images", !strstr(html, "<script") && !strstr(html, "src=") &&
                                                                      !strstr(html, "href=") && !strstr(html, "url("));
    check_true("no 'no data' section", !strstr(html, "no data"));
}

/* ---- rendering --------------------------------------------------------------------------- */

static int render(const char *html_path, const char *png_path) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s && HOME=%s timeout 180 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic "
             "--no-first-run --disable-background-networking --disable-component-update --disable-sync "
             "--disable-dev-shm-usage --hide-scrollbars --user-data-dir=%s/chromium-profile "
             "--screenshot=%s --window-size=1200,1600 file://%s > %s/chromium.log 2>&1",
             dir, dir, dir, png_path, html_path, dir);
    int rc = system(cmd);
    struct stat st;
    if (rc != 0 || stat(png_path, &st) != 0) {
        printf("     chromium failed (status %d); its log:\n", rc);
        snprintf(cmd, sizeof cmd, "tail -20 %s/chromium.log", dir);
        if (system(cmd) != 0) printf("     (no log)\n");
        return -1;
    }
    return 0;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#ifdef HYLA_TEST_HAVE_ZLIB
static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Undo the PNG row filters in place; rows of stride bytes after a filter byte each. */
static int unfilter(unsigned char *raw, uint32_t height, size_t stride, int bpp, unsigned char *out) {
    for (uint32_t y = 0; y < height; y++) {
        const unsigned char *in = raw + y * (stride + 1) + 1;
        int filter = raw[y * (stride + 1)];
        unsigned char *row = out + y * stride, *up = y ? out + (y - 1) * stride : NULL;
        for (size_t x = 0; x < stride; x++) {
            int a = x >= (size_t)bpp ? row[x - bpp] : 0, b = up ? up[x] : 0,
                c = (up && x >= (size_t)bpp) ? up[x - bpp] : 0;
            int pred = filter == 0 ? 0 : filter == 1 ? a : filter == 2 ? b : filter == 3 ? (a + b) / 2 : paeth(a, b, c);
            if (filter > 4) return -1;
            row[x] = (unsigned char)(in[x] + pred);
        }
    }
    return 0;
}

/* Distinct colors and the share of pixels that are not (near) white. */
static int png_stats(const char *path, long *colors, double *ink, uint32_t *width, uint32_t *height) {
    size_t size = 0;
    unsigned char *png = (unsigned char *)read_file(path, &size);
    if (!png || size < 33 || memcmp(png, "\x89PNG\r\n\x1a\n", 8) != 0) return free(png), -1;
    *width = be32(png + 16), *height = be32(png + 20);
    int depth = png[24], type = png[25], interlace = png[28];
    int bpp = type == 6 ? 4 : type == 2 ? 3 : 0;
    if (depth != 8 || !bpp || interlace) return free(png), -1;
    unsigned char *idat = malloc(size);
    size_t idat_len = 0;
    for (size_t pos = 8; idat && pos + 12 <= size;) {
        uint32_t len = be32(png + pos);
        if (pos + 12 + len > size) break;
        if (!memcmp(png + pos + 4, "IDAT", 4)) memcpy(idat + idat_len, png + pos + 8, len), idat_len += len;
        pos += 12 + len;
    }
    size_t stride = (size_t)*width * (size_t)bpp;
    uLongf raw_len = (uLongf)((stride + 1) * *height);
    unsigned char *raw = malloc(raw_len), *pixels = malloc(stride * *height);
    unsigned char *seen = calloc(1 << 21, 1); /* one bit per 24-bit color */
    int rc = -1;
    if (raw && pixels && seen && uncompress(raw, &raw_len, idat, (uLong)idat_len) == Z_OK &&
        unfilter(raw, *height, stride, bpp, pixels) == 0) {
        long distinct = 0, inked = 0;
        for (size_t i = 0; i < (size_t)*width * *height; i++) {
            const unsigned char *p = pixels + i * (size_t)bpp;
            uint32_t rgb = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
            if (!(seen[rgb >> 3] & (1 << (rgb & 7)))) seen[rgb >> 3] |= (unsigned char)(1 << (rgb & 7)), distinct++;
            inked += p[0] < 235 || p[1] < 235 || p[2] < 235;
        }
        *colors = distinct;
        *ink = (double)inked / ((double)*width * *height);
        rc = 0;
    }
    free(png), free(idat), free(raw), free(pixels), free(seen);
    return rc;
}
#endif

static void check_screenshot(const char *html_path, const char *png_path) {
    if (access("/usr/bin/chromium", X_OK) != 0) {
        printf("     /usr/bin/chromium is missing: install it with scripts/setup.sh "
               "(or `apt-get install chromium`) to render the report\n");
        check_true("chromium is installed (scripts/setup.sh)", 0);
        return;
    }
    check_true("chromium renders the report", render(html_path, png_path) == 0);
    char blank_html[128], blank_png[128];
    snprintf(blank_html, sizeof blank_html, "%s/blank.html", dir);
    snprintf(blank_png, sizeof blank_png, "%s/blank.png", dir);
    FILE *f = fopen(blank_html, "w");
    if (f) fputs("<!DOCTYPE html><html><body></body></html>\n", f), fclose(f);
    check_true("chromium renders a blank page", f && render(blank_html, blank_png) == 0);
    long report_size = file_size(png_path), blank_size = file_size(blank_png);
    printf("     screenshot %ld bytes, blank page %ld bytes\n", report_size, blank_size);
    check_true("the screenshot is far larger than a blank page's", report_size > 5 * (blank_size > 0 ? blank_size : 1));
#ifdef HYLA_TEST_HAVE_ZLIB
    long colors = 0;
    double ink = 0;
    uint32_t w = 0, h = 0;
    int rc = png_stats(png_path, &colors, &ink, &w, &h);
    printf("     decoded %ux%u: %ld distinct colors, %.1f%% of the pixels not white\n", w, h, colors, 100 * ink);
    check_true("screenshot decoded: 1200 x 1600", rc == 0 && w == 1200 && h == 1600);
    check_true("not blank: many colors (curves, heatmap) and ink", colors >= 100 && ink > 0.02);
    long blank_colors = 0;
    double blank_ink = 1;
    rc = png_stats(blank_png, &blank_colors, &blank_ink, &w, &h);
    check_true("(the blank page decodes as blank: the check can fail)", rc == 0 && blank_colors <= 2 && blank_ink < 0.001);
#else
    printf("     (built without zlib: the size comparison above is the blank-page check)\n");
#endif
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/hyla_report_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char ledger_path[128], html[128], png[128], empty_path[128], empty_html[128];
    snprintf(ledger_path, sizeof ledger_path, "%s/ledger.db", dir);
    snprintf(html, sizeof html, "%s/report.html", dir);
    snprintf(png, sizeof png, "%s/report.png", dir);
    snprintf(empty_path, sizeof empty_path, "%s/empty.db", dir);
    snprintf(empty_html, sizeof empty_html, "%s/empty.html", dir);
    struct hyla_ledger_error err;
    struct hyla_ledger *w = NULL, *r = NULL;
    int64_t batch, other;
    must(hyla_ledger_open(ledger_path, NULL, &w, &err), &err, "open the ledger");
    if (!w) return test_finish();
    must(hyla_ledger_add_batch(w, "lte-buffer-sweep", NULL, &batch, &err), &err, "batch");
    for (int i = 0; i < 4; i++) add_demo_run(w, batch, i);
    int64_t stray;
    must(hyla_ledger_add_batch(w, "other", NULL, &other, &err), &err, "other batch");
    must(hyla_ledger_add_run(w, other, "elsewhere", "", "", 1, 0, &stray, &err), &err, "other run");
    must(hyla_ledger_close(w, &err), &err, "close the writer");

    must(hyla_ledger_open_readonly(ledger_path, &r, &err), &err, "open read-only");
    struct hyla_report_options opt = {.batch = "lte-buffer-sweep", .title = "LTE buffer-size sweep"};
    struct hyla_report_stats stats = {0};
    must(hyla_report_write_html(r, &opt, html, &stats, &err), &err, "write the report");
    check_true("stats: 4 runs, 16 head charts", stats.runs == 4 && stats.head_charts == 16 && stats.bytes > 10000);
    size_t size = 0;
    char *text = read_file(html, &size);
    check_true("report written", text != NULL && (long)size == stats.bytes);
    if (text) check_report_html(text);
    free(text);
    struct hyla_report_options bad = {.batch = "nope"};
    int rc = hyla_report_write_html(r, &bad, empty_html, NULL, &err);
    printf("     -> %s\n", rc ? err.message : "(no error)");
    check_true("an unknown batch lists the batches", rc != 0 && strstr(err.message, "no batch 'nope'") &&
                                                         strstr(err.message, "lte-buffer-sweep, other"));
    check_true("no half-written file is left", access(empty_html, F_OK) != 0);
    hyla_ledger_close(r, &err);

    /* An empty ledger: every section says so. */
    must(hyla_ledger_open(empty_path, NULL, &w, &err), &err, "an empty ledger");
    hyla_ledger_close(w, &err);
    must(hyla_ledger_open_readonly(empty_path, &r, &err), &err, "open it read-only");
    must(hyla_report_write_html(r, NULL, empty_html, NULL, &err), &err, "report of an empty ledger");
    hyla_ledger_close(r, &err);
    text = read_file(empty_html, &size);
    check_true("empty ledger: 3 sections of 'no data'", text && count_of(text, "no data") == 3 && strstr(text, "</html>"));
    free(text);

    check_screenshot(html, png);

    const char *keep = getenv("HYLA_REPORT_KEEP");
    char cmd[512];
    if (keep) {
        snprintf(cmd, sizeof cmd, "cp %s %s %s %s/", html, png, ledger_path, keep);
        check_true("kept report.html, report.png and ledger.db", system(cmd) == 0);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return test_finish();
}
