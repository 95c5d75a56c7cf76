/* Run a command and print its wall time, CPU time and peak RSS as one line:
 *   wall_ms cpu_ms maxrss_kib exit_code
 * The command's stdout and stderr go to /dev/null (it still does the work of writing them).
 * Why not from Python: Linux keeps the pre-exec peak RSS of the forking process in ru_maxrss,
 * so a child forked by a 14 MiB Python shows at least 14 MiB. Forked from this ~100 KiB
 * launcher, the figure is the command's own. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: rusage COMMAND [ARGS...]\n"); return 2; }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) { dup2(null, 1); dup2(null, 2); }
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int status; struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double wall = (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) / 1e6;
    double cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3
               + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
    printf("%.3f %.3f %ld %d\n", wall, cpu, ru.ru_maxrss,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}
