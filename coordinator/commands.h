/* The subcommands of `hyla`; argv[0] is the subcommand's name. Each returns the exit status:
 * 0 success, 1 failure (a message was printed), 2 usage error. */
#ifndef HYLA_COMMANDS_H
#define HYLA_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_ledger(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);

#endif
