/* `hyla ledger`: query the experiment ledger, for people (--format table) and scripts
 * (csv, json). Opens the ledger read-only (except `migrate`), so it never disturbs a
 * running batch; every answer is one consistent snapshot. docs/ledger.md has examples. */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/commands.h"
#include "experiments/ledger.h"
#include "experiments/ledger_query.h"

static void ledger_usage(FILE *out) {
    fputs("usage: hyla ledger [--ledger PATH] [--format table|csv|json] COMMAND ...\n"
          "  runs [FILTER...]                       runs matching e.g. attn.buffer_size>=256 and status=finished\n"
          "  show RUN                               a run's fields, metric summary, checkpoints, events, config\n"
          "  metrics RUN... [--key K] [--every N]   one metric (default loss) of some runs, step by step\n"
          "  heads RUN [--layer L] [--key K]        LTE head statistics; --key kept|sparsity|lambda: one column\n"
          "                                         per head (the lambda_h trajectories)\n"
          "  compare RUN... [--key K] [--step S]    last / min / value at step S, and the config differences\n"
          "  events RUN                             NaN skips, lambda updates, retries, restarts\n"
          "  sql \"SELECT ...\"                       any read-only query\n"
          "  migrate                                upgrade the ledger's schema in place\n"
          "RUN is a run id, NAME or BATCH/NAME. The ledger defaults to " HYLA_LEDGER_DEFAULT_PATH ".\n"
          "Filters: KEY OP VALUE (OP: = != < <= > >=; numbers compare as numbers), and, or, not, ( ).\n",
          out);
}

struct ledger_args {
    const char *path;
    enum hyla_format format;
    const char *key;
    int64_t every, step;
    int layer;
    int has_key, has_every, has_step, has_layer;
    int help; /* --help anywhere */
    const char **pos; /* the subcommand, then its arguments */
    int n_pos;
};

static int parse_int(const char *option, const char *text, int64_t min, int64_t *value) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!text[0] || *end || errno == ERANGE || v < min) {
        fprintf(stderr, "hyla: error: %s needs an integer >= %lld, not '%s'\n", option, (long long)min, text);
        return -1;
    }
    *value = v;
    return 0;
}

/* One option at argv[*i]: 1 taken, 0 not an option, -1 bad. */
static int take_option(int argc, char **argv, int *i, struct ledger_args *a) {
    const char *arg = argv[*i];
    const char *value = NULL;
    static const char *const WITH_VALUE[] = {"--ledger", "--format", "--key", "--every", "--step", "--layer"};
    int known = 0;
    for (size_t k = 0; k < sizeof WITH_VALUE / sizeof *WITH_VALUE; k++) known |= !strcmp(arg, WITH_VALUE[k]);
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "hyla: error: option %s needs a value\n", arg);
        return -1;
    }
    value = argv[++*i];
    if (!strcmp(arg, "--ledger")) {
        a->path = value;
    } else if (!strcmp(arg, "--format")) {
        if (hyla_format_parse(value, &a->format)) {
            fprintf(stderr, "hyla: error: unknown --format '%s'; choose table, csv or json\n", value);
            return -1;
        }
    } else if (!strcmp(arg, "--key")) {
        a->key = value, a->has_key = 1;
    } else if (!strcmp(arg, "--every")) {
        if (parse_int(arg, value, 1, &a->every)) return -1;
        a->has_every = 1;
    } else if (!strcmp(arg, "--step")) {
        if (parse_int(arg, value, 0, &a->step)) return -1;
        a->has_step = 1;
    } else {
        int64_t layer;
        if (parse_int(arg, value, 0, &layer)) return -1;
        a->layer = (int)layer, a->has_layer = 1;
    }
    return 1;
}

static int parse_args(int argc, char **argv, struct ledger_args *a) {
    *a = (struct ledger_args){.path = HYLA_LEDGER_DEFAULT_PATH, .format = HYLA_FORMAT_TABLE, .every = 1,
                              .step = -1, .layer = -1};
    a->pos = calloc((size_t)argc + 1, sizeof *a->pos);
    if (!a->pos) {
        fputs("hyla: error: out of memory\n", stderr);
        return -1;
    }
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        if (!only_positional && !strcmp(argv[i], "--")) {
            only_positional = 1;
            continue;
        }
        int taken = only_positional ? 0 : take_option(argc, argv, &i, a);
        if (taken < 0) return -1;
        if (taken) continue;
        if (!only_positional && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
            a->help = 1;
            continue;
        }
        if (!only_positional && argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "hyla: error: unknown option '%s'\n", argv[i]);
            return -1;
        }
        a->pos[a->n_pos++] = argv[i];
    }
    return 0;
}

/* Options that only some subcommands take. */
static int check_options(const struct ledger_args *a, int key, int every, int step, int layer) {
    const char *bad = (a->has_key && !key) ? "--key" : (a->has_every && !every) ? "--every"
                    : (a->has_step && !step) ? "--step" : (a->has_layer && !layer) ? "--layer" : NULL;
    if (!bad) return 0;
    fprintf(stderr, "hyla: error: `hyla ledger %s` takes no %s option\n", a->pos[0], bad);
    return -1;
}

static int fail(const struct hyla_ledger_error *err) {
    fprintf(stderr, "hyla: error: %s\n", err->message);
    return 1;
}

/* ---- output ------------------------------------------------------------------------------- */

static int print_table(const struct hyla_table *t, enum hyla_format format) {
    if (hyla_table_print(stdout, t, format) == 0) return 0;
    fprintf(stderr, "hyla: error: writing the output failed: %s\n", strerror(errno));
    return 1;
}

/* Several named tables: headed blocks (table), "# name" blocks (csv) or one JSON object. */
struct section {
    const char *name;
    const struct hyla_table *table;
    const char *text; /* instead of a table */
};

static int print_sections(const struct section *s, int n, enum hyla_format format) {
    if (format == HYLA_FORMAT_JSON) {
        json_t *obj = json_object();
        for (int i = 0; obj && i < n; i++) {
            json_t *v = s[i].table ? hyla_table_to_json(s[i].table) : json_string(s[i].text ? s[i].text : "");
            if (!v || json_object_set_new(obj, s[i].name, v) != 0) json_decref(obj), obj = NULL;
        }
        int rc = obj ? json_dumpf(obj, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(16)) : -1;
        json_decref(obj);
        if (rc == 0 && fputc('\n', stdout) != EOF && fflush(stdout) == 0) return 0;
        fputs("hyla: error: writing the JSON output failed (out of memory or a closed pipe)\n", stderr);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (format == HYLA_FORMAT_CSV) printf("%s# %s\n", i ? "\n" : "", s[i].name);
        else printf("%s== %s ==\n", i ? "\n" : "", s[i].name);
        if (s[i].table && print_table(s[i].table, format)) return 1;
        if (!s[i].table) fputs(s[i].text ? s[i].text : "", stdout);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- subcommands ---------------------------------------------------------------------------- */

static int resolve_runs(struct hyla_ledger *l, const char **specs, int n, int64_t *ids, struct hyla_ledger_error *err) {
    for (int i = 0; i < n; i++)
        if (hyla_ledger_resolve_run(l, specs[i], &ids[i], err)) return -1;
    return 0;
}

/* The arguments after the subcommand, joined with spaces (filters and SQL may be unquoted). */
static char *join_args(const struct ledger_args *a) {
    size_t len = 1;
    for (int i = 1; i < a->n_pos; i++) len += strlen(a->pos[i]) + 1;
    char *text = calloc(len, 1);
    if (!text) return NULL;
    for (int i = 1; i < a->n_pos; i++) {
        if (i > 1) strcat(text, " ");
        strcat(text, a->pos[i]);
    }
    return text;
}

static int do_runs(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    char *text = join_args(a);
    struct hyla_ledger_filter *filter = NULL;
    struct hyla_table *t = NULL;
    int rc = !text ? (fputs("hyla: error: out of memory\n", stderr), 1)
             : hyla_ledger_filter_parse(text, &filter, err) || hyla_ledger_query_runs(l, filter, &t, err) ? fail(err)
                                                                                                           : 0;
    if (rc == 0) rc = print_table(t, a->format);
    if (rc == 0 && t->n_rows == 0 && a->format == HYLA_FORMAT_TABLE)
        fprintf(stderr, "(no runs%s%s)\n", text[0] ? " match " : " yet", text);
    hyla_table_free(t);
    hyla_ledger_filter_free(filter);
    free(text);
    return rc;
}

/* The run's (field, value) rows as one JSON object. */
static json_t *fields_object(const struct hyla_table *fields) {
    json_t *run = json_object();
    for (size_t r = 0; run && r < fields->n_rows; r++)
        if (json_object_set_new(run, hyla_table_text(fields, r, 0), hyla_table_cell_json(fields, r, 1)) != 0)
            json_decref(run), run = NULL;
    return run;
}

static int do_show(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    int64_t id;
    struct hyla_ledger_run_details d;
    if (hyla_ledger_resolve_run(l, a->pos[1], &id, err) || hyla_ledger_query_show(l, id, &d, err)) return fail(err);
    int rc;
    if (a->format == HYLA_FORMAT_JSON) {
        /* json_object_set_new consumes its value (and refuses NULL), so the chain cannot leak. */
        json_t *obj = json_object();
        int ok = obj && !json_object_set_new(obj, "run", fields_object(d.fields)) &&
                 !json_object_set_new(obj, "metrics", hyla_table_to_json(d.metrics)) &&
                 !json_object_set_new(obj, "checkpoints", hyla_table_to_json(d.checkpoints)) &&
                 !json_object_set_new(obj, "events", hyla_table_to_json(d.events)) &&
                 !json_object_set_new(obj, "config", json_string(d.config)) &&
                 !json_dumpf(obj, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(16)) && fputc('\n', stdout) != EOF &&
                 !fflush(stdout);
        json_decref(obj);
        rc = ok ? 0 : (fputs("hyla: error: writing the JSON output failed\n", stderr), 1);
    } else {
        struct section s[] = {{"run", d.fields, NULL},
                              {"metrics", d.metrics, NULL},
                              {"checkpoints", d.checkpoints, NULL},
                              {"events", d.events, NULL},
                              {"config", NULL, d.config}};
        rc = print_sections(s, 5, a->format);
    }
    hyla_ledger_run_details_free(&d);
    return rc;
}

static int do_metrics(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    int n = a->n_pos - 1;
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    struct hyla_table *t = NULL;
    int rc = !ids ? 1
             : resolve_runs(l, a->pos + 1, n, ids, err) ||
                     hyla_ledger_query_metrics(l, ids, (size_t)n, a->has_key ? a->key : "loss", a->every, &t, err)
                 ? fail(err)
                 : print_table(t, a->format);
    hyla_table_free(t);
    free(ids);
    return rc;
}

static int do_heads(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    int64_t id;
    struct hyla_table *t = NULL;
    if (hyla_ledger_resolve_run(l, a->pos[1], &id, err) ||
        hyla_ledger_query_heads(l, id, a->layer, a->has_key ? a->key : NULL, &t, err))
        return fail(err);
    int rc = print_table(t, a->format);
    hyla_table_free(t);
    return rc;
}

static int do_compare(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    int n = a->n_pos - 1;
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    struct hyla_ledger_comparison c = {0};
    int rc = !ids ? 1
             : resolve_runs(l, a->pos + 1, n, ids, err) ||
                     hyla_ledger_query_compare(l, ids, (size_t)n, a->has_key ? a->key : NULL, a->step, &c, err)
                 ? fail(err)
                 : 0;
    if (rc == 0) {
        struct section s[] = {{"metrics", c.metrics, NULL}, {"config_diff", c.config_diff, NULL}};
        rc = print_sections(s, 2, a->format);
    }
    hyla_ledger_comparison_free(&c);
    free(ids);
    return rc;
}

static int do_events(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    int64_t id;
    struct hyla_table *t = NULL;
    if (hyla_ledger_resolve_run(l, a->pos[1], &id, err) || hyla_ledger_query_events(l, id, &t, err)) return fail(err);
    int rc = print_table(t, a->format);
    hyla_table_free(t);
    return rc;
}

static int do_sql(struct hyla_ledger *l, const struct ledger_args *a, struct hyla_ledger_error *err) {
    char *sql = join_args(a);
    struct hyla_table *t = NULL;
    int rc = !sql ? 1 : hyla_ledger_query_sql(l, sql, &t, err) ? fail(err) : print_table(t, a->format);
    hyla_table_free(t);
    free(sql);
    return rc;
}

static int do_migrate(const struct ledger_args *a) {
    struct hyla_ledger *l = NULL;
    struct hyla_ledger_error err;
    int version = 0;
    if (hyla_ledger_open(a->path, NULL, &l, &err) || hyla_ledger_schema_version(l, &version, &err)) {
        hyla_ledger_close(l, &err);
        return fail(&err);
    }
    if (hyla_ledger_close(l, &err)) return fail(&err);
    printf("ledger %s: schema version %d\n", a->path, version);
    return 0;
}

/* ---- dispatch --------------------------------------------------------------------------------- */

struct subcommand {
    const char *name;
    int (*run)(struct hyla_ledger *, const struct ledger_args *, struct hyla_ledger_error *);
    int min_args, max_args; /* after the name; -1 = any */
    int key, every, step, layer;
    const char *usage;
};

static const struct subcommand SUBCOMMANDS[] = {
    {"runs", do_runs, 0, -1, 0, 0, 0, 0, "runs [FILTER...]"},
    {"show", do_show, 1, 1, 0, 0, 0, 0, "show RUN"},
    {"metrics", do_metrics, 1, -1, 1, 1, 0, 0, "metrics RUN... [--key K] [--every N]"},
    {"heads", do_heads, 1, 1, 1, 0, 0, 1, "heads RUN [--layer L] [--key kept|sparsity|lambda]"},
    {"compare", do_compare, 1, -1, 1, 0, 1, 0, "compare RUN... [--key K] [--step S]"},
    {"events", do_events, 1, 1, 0, 0, 0, 0, "events RUN"},
    {"sql", do_sql, 1, -1, 0, 0, 0, 0, "sql \"SELECT ...\""},
};

static int run_subcommand(const struct subcommand *sc, const struct ledger_args *a) {
    int n = a->n_pos - 1;
    if (n < sc->min_args || (sc->max_args >= 0 && n > sc->max_args)) {
        fprintf(stderr, "hyla: error: usage: hyla ledger %s\n", sc->usage);
        return 2;
    }
    if (check_options(a, sc->key, sc->every, sc->step, sc->layer)) return 2;
    struct hyla_ledger *l = NULL;
    struct hyla_ledger_error err;
    if (hyla_ledger_open_readonly(a->path, &l, &err)) return fail(&err);
    int rc = sc->run(l, a, &err);
    hyla_ledger_close(l, &err); /* a reader has nothing to commit */
    return rc;
}

int cmd_ledger(int argc, char **argv) {
    struct ledger_args a;
    int rc = parse_args(argc, argv, &a) ? 2 : -1;
    if (rc < 0 && (a.help || (a.n_pos > 0 && !strcmp(a.pos[0], "help")))) {
        ledger_usage(stdout);
        rc = 0;
    } else if (rc < 0 && a.n_pos == 0) {
        ledger_usage(stderr);
        rc = 2;
    } else if (rc < 0 && !strcmp(a.pos[0], "migrate")) {
        rc = a.n_pos == 1 ? do_migrate(&a) : (fputs("hyla: error: usage: hyla ledger migrate\n", stderr), 2);
    }
    for (size_t i = 0; rc < 0 && i < sizeof SUBCOMMANDS / sizeof *SUBCOMMANDS; i++)
        if (!strcmp(a.pos[0], SUBCOMMANDS[i].name)) rc = run_subcommand(&SUBCOMMANDS[i], &a);
    if (rc < 0) {
        fprintf(stderr, "hyla: error: unknown ledger command '%s'\n", a.pos[0]);
        ledger_usage(stderr);
        rc = 2;
    }
    free(a.pos);
    return rc;
}
