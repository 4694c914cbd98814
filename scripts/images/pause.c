/*
 * The pause program of the test node's pod sandboxes (the image
 * `make images` builds as berth.test/pause): it holds the pod's namespaces
 * open, reaps children the pod's processes leave behind, and exits on
 * SIGINT or SIGTERM. Built statically, so the image holds this file only.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal) {
    (void)signal;
    _exit(0);
}

static void reap(int signal) {
    (void)signal;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    if (getpid() != 1) {
        fprintf(stderr, "pause: not the first process of its namespace\n");
    }
    struct sigaction on_stop = {.sa_handler = stop};
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);
    struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGCHLD, &on_child, NULL);
    for (;;) {
        pause();
    }
}
