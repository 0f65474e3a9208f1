#pragma once
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A short-lived helper program run to completion and read whole, bounded in time and in
 * output (for `ssh -G` at configuration load). Blocking: for load time, not the loop.
 */

struct subproc_result {
	char *out; /* stdout, NUL-terminated (out_len bytes before the NUL) */
	size_t out_len;
	char *err; /* stderr, the same */
	size_t err_len;
	int status;	/* from waitpid() */
	bool timed_out; /* killed at the deadline */
	bool too_long;	/* killed when stdout and stderr passed max_output bytes together */
};

/*
 * Runs argv[0], searched in this process's PATH, without a shell: stdin /dev/null, no
 * descriptor but stdout and stderr inherited, default signal dispositions, in a process
 * group of its own (killed whole at the deadline), with the environment `envp`. Returns 0
 * once the program ran and was reaped (*ret filled in: check status, timed_out, too_long),
 * or a negative errno when it could not start (-ENOENT: no such program); *ret is
 * untouched then.
 */
int subproc_run(char *const argv[], char *const envp[], uint64_t timeout_ms, size_t max_output,
		struct subproc_result *ret);

/*
 * posix_spawn settings for any helper program the daemon starts: stdin /dev/null,
 * `stdout_fd` and `stderr_fd` as its stdout and stderr, no other descriptor inherited,
 * default signal dispositions and an empty signal mask (libev may block the signals it
 * watches, and the daemon ignores SIGPIPE), and a process group of its own, so that a
 * timeout kills its children too. Release with subproc_spawn_finish().
 */
void subproc_spawn_init(posix_spawn_file_actions_t *actions, posix_spawnattr_t *attr, int stdout_fd,
			int stderr_fd);
void subproc_spawn_finish(posix_spawn_file_actions_t *actions, posix_spawnattr_t *attr);

/* Frees the outputs (NULL-safe fields) and zeroes *r. */
void subproc_result_free(struct subproc_result *r);
