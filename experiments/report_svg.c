/* SVG primitives of the HTML report (see report_svg.h). Text is styled by the page's CSS
 * (svg text {...}), so the charts stay small. */
#include "experiments/report_svg.h"

#include <math.h>
#include <string.h>

enum { MARGIN_LEFT = 58, MARGIN_RIGHT = 14, MARGIN_TOP = 10, MARGIN_BOTTOM = 38 };

const char *svg_palette(size_t i) {
    /* Tableau 10: distinct for the common color-vision deficiencies' first few entries. */
    static const char *const PALETTE[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    return PALETTE[i % 10];
}

const char *svg_dash(size_t i) {
    static const char *const DASHES[] = {"", "7 3", "2 2"};
    return DASHES[(i / 10) % 3];
}

void svg_viridis(double t, char hex[8]) {
    static const unsigned char STOPS[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                              {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                              {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!(t >= 0)) t = 0; /* also NaN */
    if (t > 1) t = 1;
    double pos = t * 8;
    int i = (int)pos < 8 ? (int)pos : 7;
    double f = pos - i;
    int rgb[3];
    for (int k = 0; k < 3; k++) rgb[k] = (int)lround(STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k]));
    snprintf(hex, 8, "#%02x%02x%02x", rgb[0] & 0xff, rgb[1] & 0xff, rgb[2] & 0xff);
}

void svg_escape(FILE *out, const char *text) {
    for (const char *p = text ? text : ""; *p; p++) {
        switch (*p) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        case '\'': fputs("&#39;", out); break;
        default: fputc(*p, out);
        }
    }
}

size_t svg_downsample(const double *x, const double *y, size_t n, size_t max, double *out_x, double *out_y) {
    size_t m = 0;
    if (max == 0) return 0;
    size_t buckets = n < max ? n : max;
    for (size_t b = 0; b < buckets; b++) {
        size_t lo = b * n / buckets, hi = (b + 1) * n / buckets;
        double sx = 0, sy = 0;
        size_t k = 0;
        for (size_t i = lo; i < hi; i++)
            if (isfinite(x[i]) && isfinite(y[i])) sx += x[i], sy += y[i], k++;
        if (k) out_x[m] = sx / (double)k, out_y[m] = sy / (double)k, m++;
    }
    return m;
}

void svg_format_tick(double v, char *buf, size_t size) {
    double a = fabs(v);
    if (a >= 1e6) snprintf(buf, size, "%gM", v / 1e6);
    else if (a >= 1e4) snprintf(buf, size, "%gk", v / 1e3);
    else if (a != 0 && a < 1e-3) snprintf(buf, size, "%.0e", v);
    else snprintf(buf, size, "%.4g", v);
}

/* 1, 2 or 5 times a power of ten, giving about target intervals over range. */
static double nice_step(double range, int target) {
    double raw = range / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static double px_x(const struct svg_chart *c, double v) {
    return c->left + (v - c->x0) / (c->x1 - c->x0) * (c->right - c->left);
}

static double px_y(const struct svg_chart *c, double v) {
    if (c->log_y) v = v > 0 ? log10(v) : c->y0;
    if (v < c->y0) v = c->y0; /* out-of-range values sit on the frame instead of leaving it */
    if (v > c->y1) v = c->y1;
    return c->bottom - (v - c->y0) / (c->y1 - c->y0) * (c->bottom - c->top);
}

static void grid_line_x(const struct svg_chart *c, double v) {
    char label[32];
    double x = px_x(c, v);
    svg_format_tick(v, label, sizeof label);
    fprintf(c->out, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", x, c->top, x, c->bottom);
    fprintf(c->out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>", x, c->bottom + 14, label);
}

static void grid_line_y(const struct svg_chart *c, double data_v, const char *label) {
    double y = px_y(c, data_v);
    fprintf(c->out, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", c->left, y, c->right, y);
    fprintf(c->out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>", c->left - 5, y + 4, label);
}

static void draw_y_ticks(const struct svg_chart *c) {
    char label[32];
    if (c->log_y) {
        int decades = (int)(c->y1 - c->y0);
        int every = decades > 6 ? (decades + 5) / 6 : 1; /* at most ~6 labels */
        for (int k = (int)c->y0; k <= (int)c->y1; k += every) {
            if (k >= -2 && k <= 3) snprintf(label, sizeof label, "%g", pow(10, k));
            else snprintf(label, sizeof label, "1e%d", k);
            grid_line_y(c, pow(10, k), label);
        }
        return;
    }
    double step = nice_step(c->y1 - c->y0, 5);
    for (double v = ceil(c->y0 / step) * step; v <= c->y1 + step * 1e-9; v += step) {
        svg_format_tick(fabs(v) < step * 1e-9 ? 0 : v, label, sizeof label);
        grid_line_y(c, v, label);
    }
}

void svg_chart_begin(struct svg_chart *c, FILE *out, int width, int height, double xmin, double xmax, double ymin,
                     double ymax, int log_y, const char *x_label, const char *y_label) {
    memset(c, 0, sizeof *c);
    c->out = out, c->width = width, c->height = height, c->log_y = log_y;
    c->left = MARGIN_LEFT, c->right = width - MARGIN_RIGHT, c->top = MARGIN_TOP, c->bottom = height - MARGIN_BOTTOM;
    if (!(xmax > xmin)) xmin -= 1, xmax += 1;
    c->x0 = xmin, c->x1 = xmax;
    if (log_y) {
        c->y0 = floor(log10(ymin > 0 ? ymin : 1e-12));
        c->y1 = ceil(log10(ymax > 0 ? ymax : 1));
        if (c->y1 <= c->y0) c->y1 = c->y0 + 1;
    } else {
        if (!(ymax > ymin)) {
            double pad = fabs(ymin) > 0 ? fabs(ymin) * 0.1 : 1;
            ymin -= pad, ymax += pad;
        }
        double step = nice_step(ymax - ymin, 5);
        c->y0 = floor(ymin / step) * step, c->y1 = ceil(ymax / step) * step;
    }
    fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"%d\" height=\"%d\" "
                 "viewBox=\"0 0 %d %d\">",
            width, height, width, height);
    fprintf(out, "<rect class=\"plot\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", c->left, c->top,
            c->right - c->left, c->bottom - c->top);
    double step = nice_step(c->x1 - c->x0, width > 500 ? 8 : 4);
    for (double v = ceil(c->x0 / step) * step; v <= c->x1 + step * 1e-9; v += step) grid_line_x(c, v);
    draw_y_ticks(c);
    fprintf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (c->left + c->right) / 2, height - 6);
    svg_escape(out, x_label);
    fprintf(out, "</text><text transform=\"translate(13 %.1f) rotate(-90)\" text-anchor=\"middle\">",
            (c->top + c->bottom) / 2);
    svg_escape(out, y_label);
    fputs("</text>", out);
}

void svg_chart_line(const struct svg_chart *c, const double *x, const double *y, size_t n, const char *color,
                    const char *dash, const char *title, double stroke_width) {
    fprintf(c->out, "<polyline class=\"line\" stroke=\"%s\" stroke-width=\"%.1f\"", color, stroke_width);
    if (dash && dash[0]) fprintf(c->out, " stroke-dasharray=\"%s\"", dash);
    fputs(" points=\"", c->out);
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) fprintf(c->out, "%.1f,%.1f ", px_x(c, x[i]), px_y(c, y[i]));
    fputs("\"><title>", c->out);
    svg_escape(c->out, title);
    fputs("</title></polyline>", c->out);
}

void svg_chart_end(const struct svg_chart *c) { fputs("</svg>\n", c->out); }

/* The color bar at the heatmap's right: vmax on top, vmin at the bottom. */
static void color_bar(FILE *out, double x, double top, double bottom, double vmin, double vmax) {
    enum { STEPS = 24 };
    double h = (bottom - top) / STEPS;
    for (int i = 0; i < STEPS; i++) {
        char hex[8];
        svg_viridis(1.0 - (i + 0.5) / STEPS, hex);
        fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"%.2f\" fill=\"%s\"/>", x, top + i * h, h + 0.5,
                hex);
    }
    char lo[32], hi[32];
    svg_format_tick(vmin, lo, sizeof lo);
    svg_format_tick(vmax, hi, sizeof hi);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>", x + 13, top + 9, hi);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>", x + 13, bottom, lo);
}

void svg_heatmap(FILE *out, int width, int height, const double *values, int rows, int cols, double vmin,
                 double vmax, double x_first, double x_last, const char *const *row_labels, const char *x_label) {
    const double left = 40, right = width - 62, top = 6, bottom = height - 34;
    const double cw = (right - left) / (cols > 0 ? cols : 1), ch = (bottom - top) / (rows > 0 ? rows : 1);
    fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"%d\" height=\"%d\" "
                 "viewBox=\"0 0 %d %d\" shape-rendering=\"crispEdges\">",
            width, height, width, height);
    double span = vmax > vmin ? vmax - vmin : 1;
    for (int r = 0; r < rows; r++) {
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", left - 4, top + (r + 0.5) * ch + 4);
        svg_escape(out, row_labels[r]);
        fputs("</text>", out);
        for (int k = 0; k < cols; k++) {
            double v = values[(size_t)r * (size_t)cols + (size_t)k];
            char hex[8] = "#e6e6e6";
            if (isfinite(v)) svg_viridis((v - vmin) / span, hex);
            fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>", left + k * cw,
                    top + r * ch, cw + 0.3, ch + 0.3, hex);
        }
    }
    char a[32], b[32];
    svg_format_tick(x_first, a, sizeof a);
    svg_format_tick(x_last, b, sizeof b);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>", left, bottom + 14, a);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>", right, bottom + 14, b);
    fprintf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (left + right) / 2, height - 6);
    svg_escape(out, x_label);
    fputs("</text>", out);
    color_bar(out, right + 8, top, bottom, vmin, vmax);
    fputs("</svg>\n", out);
}
