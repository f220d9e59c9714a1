/* `hyla report`: one self-contained HTML file (inline SVG charts, no scripts) from the
 * experiment ledger. Opens the ledger read-only, so it can run while a batch trains. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/commands.h"
#include "experiments/ledger.h"
#include "experiments/report_html.h"

static void report_usage(FILE *out) {
    fputs("usage: hyla report [--ledger PATH] [--batch B] [-o report.html] [--title T] [--max-runs N]\n"
          "  loss curves of the runs overlaid, a table of final metrics and differing config keys,\n"
          "  lambda_h per LTE layer (one line per head) and kept tokens per head as heatmaps.\n"
          "  --ledger   the ledger (default " HYLA_LEDGER_DEFAULT_PATH ")\n"
          "  --batch    only this batch's runs (default: every run)\n"
          "  -o         the HTML file to write (default report.html)\n"
          "  --max-runs runs that get per-head charts (default 8)\n",
          out);
}

int cmd_report(int argc, char **argv) {
    const char *ledger_path = HYLA_LEDGER_DEFAULT_PATH, *out_path = "report.html";
    struct hyla_report_options opt = {0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            report_usage(stdout);
            return 0;
        }
        int known = !strcmp(arg, "--ledger") || !strcmp(arg, "--batch") || !strcmp(arg, "-o") ||
                    !strcmp(arg, "--out") || !strcmp(arg, "--title") || !strcmp(arg, "--max-runs");
        if (!known) {
            fprintf(stderr, "hyla: error: unexpected argument '%s'\n", arg);
            report_usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hyla: error: option %s needs a value\n", arg);
            return 2;
        }
        const char *value = argv[++i];
        if (!strcmp(arg, "--ledger")) ledger_path = value;
        else if (!strcmp(arg, "--batch")) opt.batch = value;
        else if (!strcmp(arg, "--title")) opt.title = value;
        else if (!strcmp(arg, "--max-runs")) {
            char *end = NULL;
            errno = 0;
            long n = strtol(value, &end, 10);
            if (!value[0] || *end || errno || n < 1 || n > 10000) {
                fprintf(stderr, "hyla: error: --max-runs needs a count from 1 to 10000, not '%s'\n", value);
                return 2;
            }
            opt.max_detail_runs = (int)n;
        } else out_path = value;
    }
    struct hyla_ledger *l = NULL;
    struct hyla_ledger_error err;
    struct hyla_report_stats stats;
    if (hyla_ledger_open_readonly(ledger_path, &l, &err) ||
        hyla_report_write_html(l, &opt, out_path, &stats, &err)) {
        fprintf(stderr, "hyla: error: %s\n", err.message);
        struct hyla_ledger_error ignored; /* the first error is the one to report */
        hyla_ledger_close(l, &ignored);
        return 1;
    }
    hyla_ledger_close(l, &err);
    printf("wrote %s: %zu runs, %zu head charts, %.1f KiB\n", out_path, stats.runs, stats.head_charts,
           (double)stats.bytes / 1024.0);
    return 0;
}
