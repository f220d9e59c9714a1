/* `hyla report`: one self-contained HTML file (inline CSS and SVG, no scripts, no network)
 * from a ledger: the loss curves of the runs overlaid, a table of final metrics with the
 * config keys that differ, lambda_h per LTE layer (log y, one line per head) and kept
 * tokens per head over steps as heatmaps. Sections without data say "no data". */
#ifndef HYLA_REPORT_HTML_H
#define HYLA_REPORT_HTML_H

#include <stddef.h>

#include "experiments/ledger.h"

struct hyla_report_options {
    const char *batch;       /* NULL = every batch */
    const char *title;       /* NULL = "hyla report" */
    int max_detail_runs;     /* runs that get per-head charts; 0 = 8 */
    int max_points;          /* points per curve after bucket means; 0 = 600 */
};

struct hyla_report_stats {
    size_t runs;             /* runs in the report */
    size_t head_charts;      /* lambda charts + heatmaps drawn */
    long bytes;              /* size of the file written */
};

/* Writes out_path (via out_path.tmp and rename). l is usually a read-only ledger. stats may
 * be NULL. An unknown batch is an error that lists the batches. */
int hyla_report_write_html(struct hyla_ledger *l, const struct hyla_report_options *opt, const char *out_path,
                           struct hyla_report_stats *stats, struct hyla_ledger_error *err);

#endif
