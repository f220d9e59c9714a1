/* The HTML report (see report_html.h): reads the runs, their loss curves and head
 * statistics through the ledger's queries and lays them out with report_svg.c. */
#include "experiments/report_html.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "experiments/ledger_internal.h"
#include "experiments/ledger_query.h"
#include "experiments/report_svg.h"

enum { RUN_ID, RUN_NAME, RUN_BATCH, RUN_STATUS, RUN_LAST_STEP, RUN_ATTEMPT, RUN_WORLD };
enum { HEAD_LAYER, HEAD_HEAD, HEAD_STEP, HEAD_KEPT, HEAD_LAMBDA };
enum { HEATMAP_COLS = 120, MAX_DIFF_KEYS = 6 };
/* Four panels fit the page's width: the lambda charts and heatmaps of two layers side by side. */
enum { PANEL_WIDTH = 262, PANEL_HEIGHT = 200 };

struct report {
    struct hyla_ledger *l;
    FILE *out;
    struct hyla_report_options opt;
    struct hyla_table *runs;
    struct hyla_report_stats stats;
    struct hyla_ledger_error *err;
};

/* A curve after downsampling. */
struct series {
    double *x, *y;
    size_t n;
};

static int64_t run_id(const struct report *r, size_t i) { return (int64_t)hyla_table_number(r->runs, i, RUN_ID); }
static const char *run_name(const struct report *r, size_t i) { return hyla_table_text(r->runs, i, RUN_NAME); }

static int out_of_memory(struct report *r) { return ledger_fail(r->err, "report: out of memory"); }

/* ---- data --------------------------------------------------------------------------------- */

static int load_runs(struct report *r) {
    if (r->opt.batch) {
        int64_t batch_id;
        if (hyla_ledger_resolve_batch(r->l, r->opt.batch, &batch_id, r->err)) return -1;
    }
    struct hyla_filter_bind b = {0, 0, r->opt.batch}; /* NULL text binds NULL: every batch */
    return hyla_ledger_select(r->l,
                              "SELECT r.id, r.name, b.name, r.status, r.last_step, r.attempt, r.world_size "
                              "FROM runs r JOIN batches b ON b.id = r.batch_id "
                              "WHERE ?1 IS NULL OR b.name = ?1 ORDER BY r.id",
                              &b, 1, &r->runs, r->err);
}

/* (x, y) columns of a table, downsampled to max_points. */
static int series_from(struct report *r, const struct hyla_table *t, size_t begin, size_t end, int x_col, int y_col,
                       struct series *s) {
    size_t n = end - begin, cap = n ? n : 1;
    double *x = malloc(cap * sizeof *x), *y = malloc(cap * sizeof *y);
    s->x = malloc(cap * sizeof *s->x), s->y = malloc(cap * sizeof *s->y), s->n = 0;
    if (!x || !y || !s->x || !s->y) {
        free(x), free(y), free(s->x), free(s->y);
        s->x = s->y = NULL;
        return out_of_memory(r);
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = hyla_table_number(t, begin + i, x_col);
        y[i] = hyla_table_number(t, begin + i, y_col);
    }
    s->n = svg_downsample(x, y, n, (size_t)r->opt.max_points, s->x, s->y);
    free(x), free(y);
    return 0;
}

static void series_free(struct series *s) {
    free(s->x), free(s->y);
    s->x = s->y = NULL, s->n = 0;
}

static int load_metric(struct report *r, int64_t run, const char *key, struct series *s) {
    struct hyla_filter_bind b[2] = {{1, (double)run, NULL}, {0, 0, key}};
    struct hyla_table *t = NULL;
    if (hyla_ledger_select(r->l,
                           "SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 AND value IS NOT NULL "
                           "ORDER BY step",
                           b, 2, &t, r->err))
        return -1;
    int rc = series_from(r, t, 0, t->n_rows, 0, 1, s);
    hyla_table_free(t);
    return rc;
}

static int load_heads(struct report *r, int64_t run, struct hyla_table **t) {
    struct hyla_filter_bind b = {1, (double)run, NULL};
    return hyla_ledger_select(r->l,
                              "SELECT layer, head, step, kept, lambda FROM head_stats WHERE run_id = ?1 "
                              "ORDER BY layer, head, step",
                              &b, 1, t, r->err);
}

/* The end of the rows of the layer (or head) that starts at begin. */
static size_t group_end(const struct hyla_table *t, size_t begin, int by_head) {
    double layer = hyla_table_number(t, begin, HEAD_LAYER), head = hyla_table_number(t, begin, HEAD_HEAD);
    size_t i = begin;
    while (i < t->n_rows && hyla_table_number(t, i, HEAD_LAYER) == layer &&
           (!by_head || hyla_table_number(t, i, HEAD_HEAD) == head))
        i++;
    return i;
}

static void column_range(const struct hyla_table *t, size_t begin, size_t end, int col, int positive, double *lo,
                         double *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (size_t i = begin; i < end; i++) {
        double v = hyla_table_number(t, i, col);
        if (!isfinite(v) || (positive && v <= 0)) continue;
        if (v < *lo) *lo = v;
        if (v > *hi) *hi = v;
    }
}

/* ---- page ------------------------------------------------------------------------------------ */

static const char STYLE[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#222;"
    "background:#fff;margin:24px auto;max-width:1120px;padding:0 16px}"
    "h1{font-size:22px;margin:0 0 4px}"
    "h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}"
    "h3{font-size:14px;margin:14px 0 6px}"
    ".meta{color:#666;margin:0}"
    "svg text{font:11px 'DejaVu Sans',sans-serif;fill:#444}"
    "svg .grid{stroke:#e8e8e8;stroke-width:1}"
    "svg .plot{fill:#fcfcfc;stroke:#bbb}"
    "svg .line{fill:none;stroke-linejoin:round;stroke-linecap:round}"
    ".legend{display:flex;flex-wrap:wrap;gap:2px 16px;margin:4px 0 0 8px;font-size:12px}"
    ".legend i{display:inline-block;width:16px;height:3px;margin-right:5px;vertical-align:middle}"
    ".row{display:flex;flex-wrap:wrap;gap:10px}"
    ".panel{border:1px solid #eee;border-radius:4px;padding:4px}"
    ".cap{font-size:12px;color:#555;margin:0 0 2px 4px}"
    "table{border-collapse:collapse;font-size:13px}"
    ".wide{overflow-x:auto}"
    "th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}"
    "th{background:#f6f6f6}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".nodata{color:#888;font-style:italic}"
    ".failed{color:#c62828}.finished{color:#2e7d32}.running{color:#1565c0}.queued{color:#777}";

static void page_head(struct report *r) {
    FILE *out = r->out;
    const char *title = r->opt.title ? r->opt.title : "hyla report";
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>", out);
    svg_escape(out, title);
    fprintf(out, "</title><style>%s</style></head><body>\n<h1>", STYLE);
    svg_escape(out, title);
    fputs("</h1>\n<p class=\"meta\">ledger ", out);
    svg_escape(out, hyla_ledger_path(r->l));
    fputs(r->opt.batch ? " &middot; batch " : " &middot; every batch", out);
    if (r->opt.batch) svg_escape(out, r->opt.batch);
    char when[64] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (now != (time_t)-1 && gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    fprintf(out, " &middot; %zu runs &middot; written %s</p>\n", r->runs->n_rows, when);
}

static void no_data(FILE *out, const char *why) {
    fputs("<p class=\"nodata\">no data: ", out);
    svg_escape(out, why);
    fputs("</p>\n", out);
}

static void legend_item(FILE *out, const char *color, const char *dash, const char *label) {
    if (dash && dash[0]) /* a dashed border draws the line's pattern */
        fprintf(out, "<span><i style=\"height:0;border-top:3px %s %s\"></i>", dash[0] == '2' ? "dotted" : "dashed",
                color);
    else
        fprintf(out, "<span><i style=\"background:%s\"></i>", color);
    svg_escape(out, label);
    fputs("</span>", out);
}

/* ---- loss ---------------------------------------------------------------------------------- */

static void draw_loss(struct report *r, const struct series *curves, size_t n) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < curves[i].n; k++) {
            x0 = fmin(x0, curves[i].x[k]), x1 = fmax(x1, curves[i].x[k]);
            y0 = fmin(y0, curves[i].y[k]), y1 = fmax(y1, curves[i].y[k]);
        }
    struct svg_chart c;
    svg_chart_begin(&c, r->out, 1000, 380, x0, x1, y0, y1, 0, "step", "loss");
    for (size_t i = 0; i < n; i++)
        if (curves[i].n)
            svg_chart_line(&c, curves[i].x, curves[i].y, curves[i].n, svg_palette(i), svg_dash(i), run_name(r, i), 1.6);
    svg_chart_end(&c);
    fputs("<div class=\"legend\">", r->out);
    for (size_t i = 0; i < n; i++)
        if (curves[i].n) legend_item(r->out, svg_palette(i), svg_dash(i), run_name(r, i));
    fputs("</div>\n", r->out);
}

static int section_loss(struct report *r) {
    size_t n = r->runs->n_rows, with_data = 0;
    fputs("<h2>Training loss</h2>\n", r->out);
    struct series *curves = calloc(n ? n : 1, sizeof *curves);
    if (!curves) return out_of_memory(r);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = load_metric(r, run_id(r, i), "loss", &curves[i]);
        with_data += curves[i].n > 0;
    }
    if (rc == 0 && with_data) draw_loss(r, curves, n);
    else if (rc == 0) no_data(r->out, n ? "no run has a `loss` metric yet" : "no runs");
    for (size_t i = 0; i < n; i++) series_free(&curves[i]);
    free(curves);
    return rc;
}

/* ---- final metrics ---------------------------------------------------------------------------- */

static void td_number(FILE *out, double v, const char *fmt) {
    if (isfinite(v)) {
        fputs("<td class=\"num\">", out);
        fprintf(out, fmt, v);
        fputs("</td>", out);
    } else {
        fputs("<td class=\"num\">&ndash;</td>", out);
    }
}

static void td_text(FILE *out, const char *text, const char *cls) {
    fprintf(out, "<td%s%s%s>", cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "");
    svg_escape(out, text ? text : "");
    fputs("</td>", out);
}

/* The differing config keys worth a column: at most MAX_DIFF_KEYS, the run name excluded. */
static size_t pick_diff_rows(const struct hyla_table *diff, size_t *rows) {
    size_t n = 0;
    for (size_t k = 0; diff && k < diff->n_rows && n < MAX_DIFF_KEYS; k++)
        if (strcmp(hyla_table_text(diff, k, 0), "name") != 0) rows[n++] = k;
    return n;
}

static int final_row(struct report *r, size_t i, const struct hyla_table *diff, const size_t *diff_rows,
                     size_t n_diff) {
    struct hyla_metric_summary loss, acc;
    if (hyla_ledger_metric_summary(r->l, run_id(r, i), "loss", -1, &loss, r->err) ||
        hyla_ledger_metric_summary(r->l, run_id(r, i), "eval_accuracy", -1, &acc, r->err))
        return -1;
    FILE *out = r->out;
    fprintf(out, "<tr><td><i style=\"display:inline-block;width:10px;height:10px;background:%s;margin-right:6px\">"
                 "</i>",
            svg_palette(i));
    svg_escape(out, run_name(r, i));
    fputs("</td>", out);
    if (!r->opt.batch) td_text(out, hyla_table_text(r->runs, i, RUN_BATCH), NULL);
    td_text(out, hyla_table_text(r->runs, i, RUN_STATUS), hyla_table_text(r->runs, i, RUN_STATUS));
    td_number(out, hyla_table_number(r->runs, i, RUN_LAST_STEP) >= 0 ? hyla_table_number(r->runs, i, RUN_LAST_STEP)
                                                                       : NAN,
              "%.0f");
    td_number(out, loss.last, "%.4f");
    td_number(out, loss.min, "%.4f");
    td_number(out, loss.min_step >= 0 ? (double)loss.min_step : NAN, "%.0f");
    td_number(out, acc.last, "%.4f");
    td_number(out, hyla_table_number(r->runs, i, RUN_ATTEMPT), "%.0f");
    td_number(out, hyla_table_number(r->runs, i, RUN_WORLD), "%.0f");
    for (size_t k = 0; k < n_diff; k++) td_text(out, hyla_table_text(diff, diff_rows[k], (int)i + 1), NULL);
    fputs("</tr>\n", out);
    return 0;
}

static int section_final(struct report *r) {
    size_t n = r->runs->n_rows;
    fputs("<h2>Final metrics</h2>\n", r->out);
    if (n == 0) {
        no_data(r->out, "no runs");
        return 0;
    }
    int64_t *ids = malloc(n * sizeof *ids);
    if (!ids) return out_of_memory(r);
    for (size_t i = 0; i < n; i++) ids[i] = run_id(r, i);
    struct hyla_table *diff = NULL;
    int rc = hyla_ledger_query_config_diff(r->l, ids, n, &diff, r->err);
    free(ids);
    if (rc) return -1;
    size_t diff_rows[MAX_DIFF_KEYS];
    size_t n_diff = pick_diff_rows(diff, diff_rows);
    fprintf(r->out, "<div class=\"wide\"><table><tr><th>run</th>%s<th>status</th><th>steps</th><th>last loss</th>"
                    "<th>min loss</th><th>at step</th><th>eval accuracy</th><th>attempt</th><th>world size</th>",
            r->opt.batch ? "" : "<th>batch</th>");
    for (size_t k = 0; k < n_diff; k++) {
        fputs("<th>", r->out);
        svg_escape(r->out, hyla_table_text(diff, diff_rows[k], 0));
        fputs("</th>", r->out);
    }
    fputs("</tr>\n", r->out);
    for (size_t i = 0; i < n && rc == 0; i++) rc = final_row(r, i, diff, diff_rows, n_diff);
    fputs("</table></div>\n", r->out);
    if (rc == 0 && diff && diff->n_rows > n_diff + 1)
        fprintf(r->out, "<p class=\"meta\">%zu config keys differ between these runs; "
                        "<code>hyla ledger compare</code> lists them all.</p>\n",
                diff->n_rows);
    hyla_table_free(diff);
    return rc;
}

/* ---- LTE heads -------------------------------------------------------------------------------- */

static void heads_legend(FILE *out, const struct hyla_table *t, size_t begin, size_t end) {
    fputs("<div class=\"legend\">", out);
    for (size_t h = begin; h < end; h = group_end(t, h, 1)) {
        char label[32];
        int head = (int)hyla_table_number(t, h, HEAD_HEAD);
        snprintf(label, sizeof label, "head %d", head);
        legend_item(out, svg_palette((size_t)head), svg_dash((size_t)head), label);
    }
    fputs("</div>\n", out);
}

/* lambda_h of every head of one layer, log y. */
static int lambda_chart(struct report *r, const struct hyla_table *t, size_t begin, size_t end) {
    double x0, x1, y0, y1;
    column_range(t, begin, end, HEAD_STEP, 0, &x0, &x1);
    column_range(t, begin, end, HEAD_LAMBDA, 1, &y0, &y1);
    if (!isfinite(y0)) y0 = 1e-9, y1 = 1; /* all zero: show the usual span */
    fprintf(r->out, "<div class=\"panel\"><div class=\"cap\">layer %d &middot; &lambda;<sub>h</sub></div>",
            (int)hyla_table_number(t, begin, HEAD_LAYER));
    struct svg_chart c;
    svg_chart_begin(&c, r->out, PANEL_WIDTH, PANEL_HEIGHT, x0, x1, y0, y1, 1, "step", "lambda");
    for (size_t h = begin; h < end; h = group_end(t, h, 1)) {
        struct series s;
        if (series_from(r, t, h, group_end(t, h, 1), HEAD_STEP, HEAD_LAMBDA, &s)) return -1;
        int head = (int)hyla_table_number(t, h, HEAD_HEAD);
        char title[32];
        snprintf(title, sizeof title, "head %d", head);
        svg_chart_line(&c, s.x, s.y, s.n, svg_palette((size_t)head), svg_dash((size_t)head), title, 1.3);
        series_free(&s);
    }
    svg_chart_end(&c);
    fputs("</div>", r->out);
    r->stats.head_charts++;
    return 0;
}

/* The run's target kept tokens per head (model.attn.buffer_size), NaN when unknown. */
static double buffer_size(struct report *r, int64_t run) {
    struct hyla_filter_bind b = {1, (double)run, NULL};
    struct hyla_table *t = NULL;
    struct hyla_ledger_error ignored; /* a caption detail: missing is fine */
    if (hyla_ledger_select(r->l, "SELECT value_num FROM params WHERE run_id = ?1 AND key = 'model.attn.buffer_size'",
                           &b, 1, &t, &ignored))
        return NAN;
    double v = t->n_rows ? hyla_table_number(t, 0, 0) : NAN;
    hyla_table_free(t);
    return v;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The distinct steps of rows [begin, end), sorted; NULL when out of memory. */
static double *distinct_steps(const struct hyla_table *t, size_t begin, size_t end, size_t *n) {
    double *steps = malloc((end - begin + 1) * sizeof *steps);
    if (!steps) return NULL;
    for (size_t i = begin; i < end; i++) steps[i - begin] = hyla_table_number(t, i, HEAD_STEP);
    qsort(steps, end - begin, sizeof *steps, compare_double);
    *n = 0;
    for (size_t i = 0; i < end - begin; i++)
        if (*n == 0 || steps[*n - 1] != steps[i]) steps[(*n)++] = steps[i];
    return steps;
}

/* Kept tokens of one layer: heads x columns, a column per reported step or (when there are
 * more than HEATMAP_COLS) the mean of consecutive reported steps. */
static int kept_heatmap(struct report *r, const struct hyla_table *t, size_t begin, size_t end, double target) {
    double v0, v1;
    column_range(t, begin, end, HEAD_KEPT, 0, &v0, &v1);
    size_t n_steps = 0;
    double *steps = distinct_steps(t, begin, end, &n_steps);
    int rows = 0;
    for (size_t h = begin; h < end; h = group_end(t, h, 1)) rows++;
    int cols = n_steps < HEATMAP_COLS ? (int)n_steps : HEATMAP_COLS;
    double *sum = calloc((size_t)rows * (size_t)cols + 1, sizeof *sum);
    int *count = calloc((size_t)rows * (size_t)cols + 1, sizeof *count);
    char(*labels)[16] = calloc((size_t)rows, sizeof *labels);
    const char **label_ptrs = calloc((size_t)rows, sizeof *label_ptrs);
    int rc = (!steps || !sum || !count || !labels || !label_ptrs) ? out_of_memory(r) : 0;
    int row = 0;
    for (size_t h = begin; rc == 0 && h < end; h = group_end(t, h, 1), row++) {
        snprintf(labels[row], sizeof labels[row], "h%d", (int)hyla_table_number(t, h, HEAD_HEAD));
        label_ptrs[row] = labels[row];
        for (size_t i = h; i < group_end(t, h, 1); i++) {
            double v = hyla_table_number(t, i, HEAD_KEPT), step = hyla_table_number(t, i, HEAD_STEP);
            const double *at = bsearch(&step, steps, n_steps, sizeof *steps, compare_double);
            if (!isfinite(v) || !at) continue;
            size_t k = (size_t)row * (size_t)cols + (size_t)(at - steps) * (size_t)cols / n_steps;
            sum[k] += v;
            count[k]++;
        }
    }
    if (rc == 0) {
        for (size_t k = 0; k < (size_t)rows * (size_t)cols; k++) sum[k] = count[k] ? sum[k] / count[k] : NAN;
        fprintf(r->out, "<div class=\"panel\"><div class=\"cap\">layer %d &middot; kept tokens",
                (int)hyla_table_number(t, begin, HEAD_LAYER));
        if (isfinite(target)) fprintf(r->out, " (target R = %g)", target);
        fputs("</div>", r->out);
        int height = 48 + rows * 12 > PANEL_HEIGHT ? 48 + rows * 12 : PANEL_HEIGHT;
        svg_heatmap(r->out, PANEL_WIDTH, height, sum, rows, cols, v0, v1, steps[0], steps[n_steps - 1], label_ptrs,
                    "step");
        fputs("</div>", r->out);
        r->stats.head_charts++;
    }
    free(steps), free(sum), free(count), free(labels), free(label_ptrs);
    return rc;
}

/* One run: a lambda chart per layer, then a kept-tokens heatmap per layer, then the heads' colors. */
static int run_head_charts(struct report *r, size_t i, const struct hyla_table *t) {
    fputs("<h3>", r->out);
    svg_escape(r->out, run_name(r, i));
    fputs("</h3>\n<div class=\"row\">", r->out);
    for (size_t begin = 0; begin < t->n_rows; begin = group_end(t, begin, 0))
        if (lambda_chart(r, t, begin, group_end(t, begin, 0))) return -1;
    double target = buffer_size(r, run_id(r, i));
    for (size_t begin = 0; begin < t->n_rows; begin = group_end(t, begin, 0))
        if (kept_heatmap(r, t, begin, group_end(t, begin, 0), target)) return -1;
    fputs("</div>\n", r->out);
    heads_legend(r->out, t, 0, group_end(t, 0, 0));
    return 0;
}

static int section_heads(struct report *r) {
    fputs("<h2>LTE heads: &lambda;<sub>h</sub> per layer (log scale, a line per head) and kept tokens per head</h2>\n",
          r->out);
    size_t shown = 0, with_stats = 0, limit = (size_t)r->opt.max_detail_runs;
    for (size_t i = 0; i < r->runs->n_rows; i++) {
        struct hyla_table *t = NULL;
        if (load_heads(r, run_id(r, i), &t)) return -1;
        int rc = 0;
        if (t->n_rows) {
            with_stats++;
            if (shown < limit) rc = run_head_charts(r, i, t), shown++;
        }
        hyla_table_free(t);
        if (rc) return -1;
    }
    if (with_stats == 0) no_data(r->out, "no run has LTE head statistics (ledger.head_stats_every, LTE layers)");
    else if (with_stats > shown)
        fprintf(r->out, "<p class=\"meta\">showing %zu of %zu runs with head statistics; "
                        "<code>hyla report --batch B</code> or <code>--max-runs N</code> changes that.</p>\n",
                shown, with_stats);
    return 0;
}

/* ---- the file --------------------------------------------------------------------------------- */

static int write_body(struct report *r) {
    page_head(r);
    if (section_loss(r) || section_final(r) || section_heads(r)) return -1;
    fputs("<p class=\"meta\">hyla report &middot; self-contained: no scripts, no network.</p>\n</body></html>\n",
          r->out);
    return 0;
}

int hyla_report_write_html(struct hyla_ledger *l, const struct hyla_report_options *opt, const char *out_path,
                           struct hyla_report_stats *stats, struct hyla_ledger_error *err) {
    struct report r = {.l = l, .err = err};
    if (opt) r.opt = *opt;
    if (r.opt.max_detail_runs <= 0) r.opt.max_detail_runs = 8;
    if (r.opt.max_points <= 0) r.opt.max_points = 600;
    if (load_runs(&r)) return -1;
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out_path) >= (int)sizeof tmp) {
        hyla_table_free(r.runs);
        return ledger_fail(err, "report: output path %.200s... is too long", out_path);
    }
    r.out = fopen(tmp, "w");
    if (!r.out) {
        hyla_table_free(r.runs);
        return ledger_fail(err, "report: cannot write %.900s: %s; check the folder exists and is writable", tmp,
                           strerror(errno));
    }
    int rc = write_body(&r);
    r.stats.runs = r.runs->n_rows;
    r.stats.bytes = ftell(r.out);
    int write_failed = ferror(r.out);
    if (fclose(r.out) != 0) write_failed = 1;
    if (rc == 0 && write_failed) rc = ledger_fail(err, "report: writing %.900s failed: %s (disk full?)", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, out_path) != 0)
        rc = ledger_fail(err, "report: cannot rename %.500s to %.400s: %s", tmp, out_path, strerror(errno));
    if (rc) remove(tmp); /* a half-written report is worth nothing */
    if (rc == 0 && stats) *stats = r.stats;
    hyla_table_free(r.runs);
    return rc;
}
