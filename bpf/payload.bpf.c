// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Payload copy shared by socket payload (sock_data.bpf.c) and TLS plaintext (tls.bpf.c),
 * as a global subprogram: the verifier checks it once, with scalar arguments, instead of
 * once per call site and per syscall form, which is what kept the callers' verification
 * cost multiplying.
 */
#include "lib/netrig.bpf.h"
#include "lib/payload.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* State of one payload copy, carried across loop steps. */
struct copy_ctx {
	struct data_scratch *s;
	__u64 pos;      /* position of the syscall's first byte */
	__u64 iov;      /* iovec array, or 0 for a single buffer */
	__u64 seg_ptr;  /* user address of the rest of the current segment */
	__u32 count;    /* iovec segments */
	__u32 want;     /* bytes to capture */
	__u32 done;     /* bytes captured */
	__u32 fill;     /* bytes in the record under construction */
	__u32 offset;   /* syscall offset of that record's first byte */
	__u32 seg;      /* next iovec segment */
	__u32 seg_left; /* bytes left in the current segment */
	__u8 failed;
};

/* One step: load the next iovec segment, or read up to a segment, capture or chunk edge. */
static long copy_step(__u32 index, struct copy_ctx *c)
{
	struct data_scratch *s = c->s;
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
	__u64 pos = s->rec.pos_bytes;
	struct copy_ctx c = { .s = s, .pos = pos, .iov = iov, .count = count, .want = capture_limit(cfg, total) };
	if (!iov) {
		c.seg_ptr = buf;
		c.seg_left = count;
	}
	bpf_loop(COPY_STEPS, copy_step, &c, 0);
	__u8 flags = DATA_F_LAST;
	if (c.done < total)
		flags |= DATA_F_TRUNCATED;
	if (c.failed)
		flags |= DATA_F_READ_FAILED;
	flush_chunk(s, pos, c.offset, c.fill, flags);
	return 0;
}
