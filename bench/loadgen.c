// SPDX-License-Identifier: Apache-2.0
/*
 * Load generator of the drain benchmark: getppid(2) in a tight loop on one CPU, each call
 * firing bench/drain.bpf.c. Waits for one byte on stdin before starting, so the bench can
 * point the BPF program at this pid first; dies with its parent. Prints "calls=N ns=T"
 * when done.
 *
 *   loadgen CPU seconds S          run for S seconds, as fast as it can
 *   loadgen CPU seconds S rate R   run for S seconds at R calls per second (paced)
 *   loadgen CPU calls N            make exactly N calls
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Calls between two clock reads: keeps the clock out of the load. */
#define CALLS_PER_CHECK 1024

static unsigned long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	int paced = argc == 6 && !strcmp(argv[2], "seconds") && !strcmp(argv[4], "rate");
	if (!paced && (argc != 4 || (strcmp(argv[2], "seconds") && strcmp(argv[2], "calls")))) {
		fprintf(stderr, "usage: %s CPU seconds S [rate R] | CPU calls N\n", argv[0]);
		return 2;
	}
	int cpu = atoi(argv[1]);
	int by_time = !strcmp(argv[2], "seconds");
	double amount = atof(argv[3]);
	double rate = paced ? atof(argv[5]) : 0;

	/* Die with the bench, whatever kills it (no getppid here: that would be load). */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL)) {
		perror("prctl");
		return 1;
	}

	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		return 1;
	}

	/* Start gate: the bench writes one byte once the BPF side is configured. */
	char go;
	if (read(0, &go, 1) != 1) {
		fprintf(stderr, "loadgen: no start byte on stdin\n");
		return 1;
	}

	unsigned long long calls = 0, start = now_ns(), t = start;
	if (by_time) {
		unsigned long long end = start + (unsigned long long)(amount * 1e9);
		while (t < end) {
			for (int i = 0; i < CALLS_PER_CHECK; i++)
				syscall(SYS_getppid);
			calls += CALLS_PER_CHECK;
			t = now_ns();
			/* Paced: ahead of schedule, wait (spinning, as a busy producer would) until due. */
			while (rate > 0 && calls > (t - start) * rate / 1e9 && t < end)
				t = now_ns();
		}
	} else {
		unsigned long long n = (unsigned long long)amount;
		for (; calls < n; calls++)
			syscall(SYS_getppid);
		t = now_ns();
	}
	printf("calls=%llu ns=%llu\n", calls, t - start);
	return 0;
}
