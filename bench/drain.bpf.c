// SPDX-License-Identifier: Apache-2.0
/*
 * Load for the drain benchmark: every getppid(2) of the load generator writes one 64-byte
 * netrig-shaped record into a ring buffer without waking the consumer (as netrig's
 * programs do), counting what the ring accepted and what it refused.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "../schemas/records.h"
#include "drain.h"

char LICENSE[] SEC("license") = "GPL";

/* The ring both consumers drain; sized by the bench before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 25);
} events SEC(".maps");

/* Outcomes of bpf_ringbuf_output, per CPU (enum drain_count). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DRAIN_COUNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

/* Which process generates load; rewritten between rounds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drain_cfg);
} drain_cfg SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int drain_load(void *ctx)
{
	__u32 zero = 0, full = DRAIN_FULL;
	__u64 id = bpf_get_current_pid_tgid();

	/* Only the load generator's calls count, so other processes add no noise. */
	struct drain_cfg *cfg = bpf_map_lookup_elem(&drain_cfg, &zero);
	if (!cfg || cfg->targ_tgid != (__u32)(id >> 32))
		return 0;
	__u64 *ok = bpf_map_lookup_elem(&counts, &zero);
	__u64 *lost = bpf_map_lookup_elem(&counts, &full);
	if (!ok || !lost)
		return 0;

	/* Fill a record the way netrig's programs fill theirs. */
	__u64 seq = *ok + *lost;
	struct drain_rec rec = {};
	rec.hdr.kind = REC_SOCK_DATA;
	rec.hdr.version = 1;
	rec.hdr.size_bytes = sizeof(rec);
	rec.hdr.ts_ns = bpf_ktime_get_ns();
	rec.hdr.conn_id = 0x5eed0000ULL + seq % DRAIN_CONNS; /* cookies are sequential too */
	rec.hdr.tgid = id >> 32;
	rec.hdr.pid = (__u32)id;
	rec.seq = seq;
	rec.body[0] = seq;
	rec.body[1] = ~seq;
	rec.body[2] = rec.hdr.ts_ns;

	/* No wakeup: the consumer polls on its own schedule, as netrig's edge does. */
	if (bpf_ringbuf_output(&events, &rec, sizeof(rec), BPF_RB_NO_WAKEUP))
		*lost += 1;
	else
		*ok += 1;
	return 0;
}
