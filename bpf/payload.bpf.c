// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Payload copy shared by socket payload (sock_data.bpf.c, sock_syscalls.bpf.c) and TLS
 * plaintext (tls.bpf.c), as global subprograms: the verifier checks each once, with scalar
 * arguments, instead of once per call site and per syscall form, which is what kept the
 * callers' verification cost multiplying. The copy's state lives in the per-CPU scratch, so
 * a plain bounded loop of calls drives it on every kernel (bpf_loop needs 5.17, and a
 * program that merely mentions it does not load before 5.13).
 */
#include "lib/netrig.bpf.h"
#include "lib/payload.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* One step: load the next iovec segment, or read up to a segment, capture or chunk edge.
 * Returns 1 when the copy is over. */
__noinline int copy_step(void)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&data_scratch, &zero);
	if (!s)
		return 1;
	struct copy_state *c = &s->copy;
	if (c->done >= c->want)
		return 1;
	if (c->seg_left == 0) {
		struct iovec iv;
		if (!c->iov || c->seg >= c->count || c->seg >= SOCK_DATA_MAX_IOV)
			return 1;
		if (bpf_probe_read_user(&iv, sizeof(iv), (void *)(c->iov + c->seg * sizeof(iv)))) {
			c->failed = 1;
			return 1;
		}
		c->seg++;
		c->seg_ptr = (__u64)iv.iov_base;
		c->seg_left = iv.iov_len > 0xffffffff ? 0xffffffff : iv.iov_len;
		return 0;
	}
	__u32 fill = c->fill & (SOCK_DATA_CHUNK_BYTES - 1);
	__u32 n = c->seg_left;
	if (n > c->want - c->done)
		n = c->want - c->done;
	if (n > SOCK_DATA_CHUNK_BYTES - fill)
		n = SOCK_DATA_CHUNK_BYTES - fill;
	/* Clamped against a constant the compiler may not fold away: verifiers before about
	 * 6.7 learn no bound from the comparisons of two unknown values above. */
	barrier_var(n);
	if (n > SOCK_DATA_CHUNK_BYTES)
		n = SOCK_DATA_CHUNK_BYTES;
	if (bpf_probe_read_user(s->payload + fill, n, (void *)c->seg_ptr)) {
		c->failed = 1;
		return 1;
	}
	fill += n;
	c->done += n;
	c->seg_ptr += n;
	c->seg_left -= n;
	/* A full chunk leaves as its own record. */
	if (fill >= SOCK_DATA_CHUNK_BYTES && c->done < c->want) {
		flush_chunk(s, c->pos, c->offset, fill, 0);
		c->offset += fill;
		fill = 0;
	}
	c->fill = fill;
	return 0;
}

__noinline int copy_records(__u64 iov, __u64 buf, __u32 count, __u32 total)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&data_scratch, &zero);
	struct netrig_config *cfg = get_config();
	if (!s || !cfg)
		return 0;
	struct copy_state *c = &s->copy;
	__builtin_memset(c, 0, sizeof(*c));
	c->pos = s->rec.pos_bytes;
	c->iov = iov;
	c->count = count;
	c->want = capture_limit(cfg, total);
	if (!iov) {
		c->seg_ptr = buf;
		c->seg_left = count;
	}
	for (int i = 0; i < COPY_STEPS; i++)
		if (copy_step())
			break;
	__u8 flags = DATA_F_LAST;
	if (c->done < total)
		flags |= DATA_F_TRUNCATED;
	if (c->failed)
		flags |= DATA_F_READ_FAILED;
	flush_chunk(s, c->pos, c->offset, c->fill, flags);
	return 0;
}
