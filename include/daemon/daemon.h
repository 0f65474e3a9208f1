#pragma once

/* Runs the daemon in the foreground until SIGTERM/SIGINT; returns the exit status. */
int daemon_main(const char *config_path);
