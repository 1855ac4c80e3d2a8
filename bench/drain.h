/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Wire structs of the drain benchmark's load program (bench/drain.bpf.c): one record shaped
 * like netrig's (the common rec_hdr, then a body) and the counters the bench reads.
 */
#ifndef NETRIG_BENCH_DRAIN_H
#define NETRIG_BENCH_DRAIN_H

/* Distinct connection ids the load cycles through, so records spread over every shard. */
#define DRAIN_CONNS 1024

/* Counters, per CPU, indexed by outcome of bpf_ringbuf_output. */
enum drain_count {
	DRAIN_OK = 0,   /* record written */
	DRAIN_FULL = 1, /* ring buffer full: the record is lost */
	DRAIN_COUNT_MAX = 2,
};

/* One load record: 64 bytes, like a small netrig record (header + fixed body). */
struct drain_rec {
	struct rec_hdr hdr; /* kind REC_SOCK_DATA, conn_id cycling over DRAIN_CONNS */
	__u64 seq;          /* calls seen on this CPU before this one */
	__u64 body[3];      /* filler, written so the record costs what a real one does */
};

/* Run-time configuration written by the bench before each round; one entry. */
struct drain_cfg {
	__u32 targ_tgid; /* only this process's calls produce records; 0 = none */
	__u32 pad;
};

#endif /* NETRIG_BENCH_DRAIN_H */
