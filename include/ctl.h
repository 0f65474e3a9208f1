#pragma once
#include <stdio.h>

/* `moletun ctl ARGS...` (argv[0] is "ctl"): talks to a running daemon; the exit status. */
int ctl_main(int argc, char **argv);

/* What `moletun help ctl` and a ctl usage error print: the commands, from the table the
 * request parser dispatches on, the exit statuses and the socket's default. */
void ctl_print_usage(FILE *out);
