/* Inline SVG charts for the HTML report: line charts (linear or log y) with axes, ticks
 * and grid, heatmaps with a color bar, a categorical palette, and XML escaping. Charts
 * are written straight to a FILE; the caller checks ferror() once at the end. */
#ifndef HYLA_REPORT_SVG_H
#define HYLA_REPORT_SVG_H

#include <stddef.h>
#include <stdio.h>

struct svg_chart {
    FILE *out;
    int width, height;                 /* of the whole <svg> */
    double left, top, right, bottom;   /* the plot area, in pixels */
    double x0, x1, y0, y1;             /* data range; y in log10 units when log_y */
    int log_y;
};

/* Opens <svg>, draws the frame, grid, ticks and axis labels for x in [xmin, xmax] and y in
 * [ymin, ymax] (log_y: ymin > 0, rounded out to whole decades). */
void svg_chart_begin(struct svg_chart *c, FILE *out, int width, int height, double xmin, double xmax, double ymin,
                     double ymax, int log_y, const char *x_label, const char *y_label);
/* A polyline through the finite points (log_y: values <= 0 sit on the bottom edge);
 * title becomes its hover text. */
void svg_chart_line(const struct svg_chart *c, const double *x, const double *y, size_t n, const char *color,
                    const char *dash, const char *title, double stroke_width);
void svg_chart_end(const struct svg_chart *c);

/* A heatmap: rows x cols cells of values (row-major, NaN = no data, drawn grey), colored on
 * [vmin, vmax] by viridis, columns spanning steps [x_first, x_last], rows labelled. */
void svg_heatmap(FILE *out, int width, int height, const double *values, int rows, int cols, double vmin,
                 double vmax, double x_first, double x_last, const char *const *row_labels, const char *x_label);

/* Colors: a 10-color categorical palette (cycled) and viridis on t in [0, 1]; series i
 * also gets a dash pattern ("" solid, then dashed, dotted) so that 30 series stay apart. */
const char *svg_palette(size_t i);
const char *svg_dash(size_t i);
void svg_viridis(double t, char hex[8]);

/* text with & < > " ' escaped, for both HTML and SVG. */
void svg_escape(FILE *out, const char *text);

/* At most max points: bucket means of the finite (x, y) pairs, in order. Returns the count. */
size_t svg_downsample(const double *x, const double *y, size_t n, size_t max, double *out_x, double *out_y);

/* "1.5k", "0.25", "1e-06": short tick labels. */
void svg_format_tick(double v, char *buf, size_t size);

#endif
