/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Copying payload from user memory into data records, shared by socket payload
 * (sock_data.bpf.c) and TLS plaintext (tls.bpf.c): a per-CPU record under construction,
 * iovec segments packed into chunks of at most SOCK_DATA_CHUNK_BYTES, one record per chunk.
 */
#ifndef NETRIG_PAYLOAD_BPF_H
#define NETRIG_PAYLOAD_BPF_H

#include "netrig.bpf.h"
#include "../sock_data.h"

/* Bound on loop steps: segment loads plus reads, each read ending at a segment or chunk edge. */
#define COPY_STEPS (SOCK_DATA_MAX_IOV * 3)
#define MAX_CHUNKS 8

/* State of one payload copy (bpf/payload.bpf.c), carried across its loop steps. */
struct copy_state {
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
	__u8 pad[3];
};

/* Per-CPU record under construction: the 80-byte header, then up to two chunks of room so
 * a read of up to one chunk at any offset below one chunk stays in bounds; then the state
 * of the copy filling it. */
struct data_scratch {
	struct sock_data_rec rec;
	__u8 payload[2 * SOCK_DATA_CHUNK_BYTES];
	struct copy_state copy;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_scratch);
} data_scratch SEC(".maps") __weak;

/* Where a syscall's bytes are in user memory. */
struct data_src {
	__u64 iov;   /* iovec array, or 0 for a single buffer */
	__u64 buf;   /* the single buffer */
	__u64 name;  /* sockaddr of the datagram peer, or 0 */
	__u32 count; /* iovec count, or the single buffer's length */
};

/* Send one chunk: the header fields shared by the syscall's chunks are already set. */
static __always_inline void flush_chunk(struct data_scratch *s, __u64 pos, __u32 offset, __u32 fill,
					__u8 flags)
{
	fill &= 2 * SOCK_DATA_CHUNK_BYTES - 1;
	s->rec.pos_bytes = pos + offset;
	s->rec.offset_bytes = offset;
	s->rec.cap_bytes = fill;
	s->rec.data_flags = flags;
	s->rec.hdr.size_bytes = sizeof(struct sock_data_rec) + fill;
	emit(s, sizeof(struct sock_data_rec) + fill, s->rec.hdr.kind);
}

/*
 * Copy up to the configured limit of the `total` bytes of the record under construction
 * from user memory (one buffer, or an iovec array of `count` segments) into records of at
 * most one chunk. A global function (bpf/payload.bpf.c): the verifier checks it once, not
 * once per caller and per syscall form. Always emits at least one record.
 */
extern int copy_records(__u64 iov, __u64 buf, __u32 count, __u32 total);

/* Header and shared fields of the records of one syscall. */
static __always_inline struct data_scratch *start_records(__u16 kind, __u64 cookie, __u64 pos,
							  __u32 total, __u8 op, __u8 dir, __u64 ts_ns)
{
	__u32 zero = 0;
	struct data_scratch *s = bpf_map_lookup_elem(&data_scratch, &zero);
	if (!s)
		return 0;
	fill_hdr_at(&s->rec.hdr, kind, SOCK_DATA_VERSION, sizeof(struct sock_data_rec), cookie, ts_ns);
	hdr_current(&s->rec.hdr);
	s->rec.pos_bytes = pos;
	s->rec.len_bytes = total;
	s->rec.cap_bytes = 0;
	s->rec.offset_bytes = 0;
	s->rec.syscall = op;
	s->rec.direction = dir;
	s->rec.data_flags = 0;
	s->rec.pad = 0;
	__builtin_memset(&s->rec.peer, 0, sizeof(s->rec.peer));
	return s;
}

/* Most bytes captured per syscall or call: the configured limit, at most MAX_CHUNKS chunks. */
static __always_inline __u32 capture_limit(const struct netrig_config *cfg, __u32 total)
{
	__u32 cap = cfg->capture_bytes;
	if (cap > MAX_CHUNKS * SOCK_DATA_CHUNK_BYTES)
		cap = MAX_CHUNKS * SOCK_DATA_CHUNK_BYTES;
	return total < cap ? total : cap;
}

#endif /* NETRIG_PAYLOAD_BPF_H */
