/* Small helpers shared by the subcommands' argument parsing. */
#ifndef HYLA_CLI_ARGS_H
#define HYLA_CLI_ARGS_H

#include <stdio.h>

#define HYLA_MAX_OVERRIDES 256

/* Collected --set key=value overrides. */
struct cli_overrides {
    const char *items[HYLA_MAX_OVERRIDES];
    int count;
};

/* If argv[*i] is "--set" (followed by key=value) or "--set=key=value", record it, advance
 * *i past it and return 1; return -1 (with a message) on a malformed one; 0 otherwise. */
int cli_take_override(int argc, char **argv, int *i, struct cli_overrides *o);

/* The value of option argv[*i] (which needs one), advancing *i; NULL with a message when missing. */
const char *cli_option_value(int argc, char **argv, int *i);

/* argv[i] that the command's own options did not take: the config path when it is the first
 * positional argument; otherwise a message (an unknown option, a second config). 0 when
 * taken, -1 on error (the caller prints its usage). */
int cli_take_config(const char *arg, const char **config_path);

/* The backend named by --backend (cpu, cuda; HYLA_PROFILE_OPS=1 wraps cuda in the per-op
 * profile); NULL with a message when unknown or unavailable here. */
struct hyla_backend;
const struct hyla_backend *cli_backend(const char *name);

#endif
