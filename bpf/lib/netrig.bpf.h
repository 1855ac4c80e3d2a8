/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by every netrig BPF program: the maps they share (declared weak so
 * the static linker merges the copies of each compilation unit into one), the run-time
 * configuration, per-connection state and the helpers that fill wire structs.
 */
#ifndef NETRIG_BPF_H
#define NETRIG_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "../../schemas/records.h"
#include "../config.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_SYN_RECV_ 3
#define TCP_CLOSE_ 7
#define TCP_LISTEN_ 10

/* Ring buffer every record travels through; its size is set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} events SEC(".maps") __weak;

/* Records lost in the kernel, per kind and cause: index kind * LOSS_CAUSE_MAX + cause. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REC_KIND_MAX * LOSS_CAUSE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps") __weak;

/* Run-time configuration written by the edge; one entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct netrig_config);
} netrig_cfg SEC(".maps") __weak;

/* Include and exclude filters by pid, port, cgroup and network namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct filter_key);
	__type(value, __u8);
} filters SEC(".maps") __weak;

/*
 * Where socket state lives, set by the loader from what the kernel offers (probed, not by
 * version): CONN_STORE_SOCKET keeps it in the socket's own local storage and names the
 * connection by its socket cookie (tracing programs may use both from 5.12); CONN_STORE_TABLE
 * keeps it in a table keyed by the socket's address and names the connection by an id made
 * at first sight, for kernels where tracing programs can do neither.
 */
enum conn_store {
	CONN_STORE_SOCKET = 0,
	CONN_STORE_TABLE = 1,
};
const volatile __u8 conn_store __weak = CONN_STORE_SOCKET;

/* What the kernel knows of one socket. */
struct conn_state {
	__u64 conn_id;       /* the record's connection id: socket cookie, or made at first sight */
	__u64 tx_pos_bytes;  /* next egress byte position */
	__u64 rx_pos_bytes;  /* next ingress byte position */
	__u64 open_ts_ns;    /* ESTABLISHED, connect() or first sight */
	__u64 connect_ts_ns; /* connect() for active opens */
	__u64 cgroup_id;     /* owner's cgroup, when known */
	__u64 info_ts_ns;    /* last REC_CONN_INFO */
	__u64 sock_ino;      /* CONN_STORE_TABLE: the socket's inode, telling a reused address apart */
	struct flow_tuple tuple; /* kept: CLOSE comes after the kernel released the local port */
	__u32 tgid;          /* owner, when known (REC_F_OWNER_KNOWN) */
	__u32 pid;
	__u8 role;           /* enum conn_role */
	__u8 capture;        /* enum capture_decision */
	__u8 conn_flags;     /* enum conn_flags */
	__u8 owner_known;
	__u8 announced;      /* REC_CONN_INFO emitted */
	__u8 close_pending;  /* reached CLOSE while its owner held it: REC_CONN_CLOSE waits for its destruction */
	__u8 close_old_state; /* the state it left for CLOSE, for that record */
	__u8 pad[1];
	char comm[16];
};

enum capture_decision {
	CAPTURE_UNDECIDED = 0,
	CAPTURE_YES = 1,
	CAPTURE_NO = 2,
};

/*
 * Per-socket state in the socket's own local storage: found without hashing (a lookup in
 * a hash table sized for every socket of a busy node costs cache and TLB misses on every
 * send and receive), and freed with the socket, so sockets that vanish without a CLOSE
 * transition (UDP) never linger and no number of sockets evicts another's state.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_state);
} conns SEC(".maps") __weak;

/* The entry for `key`, inserted as a copy of `init` when absent. */
static __always_inline void *map_lookup_or_init(void *map, const void *key, const void *init)
{
	void *v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* CONN_STORE_TABLE: socket state by the socket's kernel address; the loader sizes it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct conn_state);
} conn_table SEC(".maps") __weak;

/* The socket's state, or 0 when netrig has not seen it yet. */
static __always_inline struct conn_state *conn_get(const struct sock *sk)
{
	if (conn_store == CONN_STORE_TABLE) {
		__u64 key = (__u64)sk;
		return bpf_map_lookup_elem(&conn_table, &key);
	}
	return bpf_sk_storage_get(&conns, (struct sock *)sk, 0, 0);
}

/* Connection ids made so far on each CPU, for CONN_STORE_TABLE. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} conn_ids SEC(".maps") __weak;

/*
 * A connection id for CONN_STORE_TABLE, where tracing programs cannot ask for the socket
 * cookie: bit 52 set (socket cookies count up from 1 and never get there), then a count per
 * CPU and the CPU. It stays below 2^53, so it is exact as a JavaScript number.
 */
static __always_inline __u64 make_conn_id(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&conn_ids, &zero);
	if (!n)
		return 0;
	__u64 count = *n + 1;
	*n = count;
	return (1ULL << 52) | ((count & ((1ULL << 44) - 1)) << 8) | (bpf_get_smp_processor_id() & 0xff);
}

/* The socket's state, created as a copy of `init` (conn_id set here) when it has none. */
static __always_inline struct conn_state *conn_create(const struct sock *sk,
						      struct conn_state *init)
{
	if (conn_store == CONN_STORE_TABLE) {
		__u64 key = (__u64)sk;
		struct conn_state *st = bpf_map_lookup_elem(&conn_table, &key);
		if (st)
			return st;
		init->conn_id = make_conn_id();
		bpf_map_update_elem(&conn_table, &key, init, BPF_NOEXIST);
		return bpf_map_lookup_elem(&conn_table, &key);
	}
	init->conn_id = bpf_get_socket_cookie((struct sock *)sk);
	return bpf_sk_storage_get(&conns, (struct sock *)sk, init, BPF_SK_STORAGE_GET_F_CREATE);
}

/* Forget a closed socket's state. */
static __always_inline void conn_delete(const struct sock *sk)
{
	if (conn_store == CONN_STORE_TABLE) {
		__u64 key = (__u64)sk;
		bpf_map_delete_elem(&conn_table, &key);
		return;
	}
	bpf_sk_storage_delete(&conns, (struct sock *)sk);
}

/*
 * The connection id of a socket (trusted pointer) whose state may not exist: the state's,
 * else the socket cookie where there is one (CONN_STORE_SOCKET), else 0.
 */
static __always_inline __u64 conn_id_of(const struct sock *sk, const struct conn_state *st)
{
	if (st)
		return st->conn_id;
	return conn_store == CONN_STORE_TABLE ? 0 : bpf_get_socket_cookie((struct sock *)sk);
}

static __always_inline struct netrig_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&netrig_cfg, &zero);
}

/* Count a record the kernel could not hand to the edge. */
static __always_inline void count_loss(__u32 kind, __u32 cause)
{
	__u32 idx = kind * LOSS_CAUSE_MAX + cause;
	__u64 *n = bpf_map_lookup_elem(&losses, &idx);
	if (n)
		*n += 1;
}

/* Hand a filled record to the edge, counting it as lost when the ring is full. */
static __always_inline void emit(void *rec, __u64 size, __u32 kind)
{
	if (bpf_ringbuf_output(&events, rec, size, BPF_RB_NO_WAKEUP))
		count_loss(kind, LOSS_RINGBUF_FULL);
}

/* A record header stamped `ts_ns` (CLOCK_MONOTONIC). */
static __always_inline void fill_hdr_at(struct rec_hdr *h, __u16 kind, __u8 version, __u32 size,
					__u64 cookie, __u64 ts_ns)
{
	h->kind = kind;
	h->version = version;
	h->flags = 0;
	h->size_bytes = size;
	h->ts_ns = ts_ns;
	h->conn_id = cookie;
	h->tgid = 0;
	h->pid = 0;
}

/* A record header stamped now. */
static __always_inline void fill_hdr(struct rec_hdr *h, __u16 kind, __u8 version, __u32 size,
				     __u64 cookie)
{
	fill_hdr_at(h, kind, version, size, cookie, bpf_ktime_get_ns());
}

/* Stamp the header with the socket's owner when it is known; softirq context has none. */
static __always_inline void hdr_owner(struct rec_hdr *h, const struct conn_state *st)
{
	if (st && st->owner_known) {
		h->tgid = st->tgid;
		h->pid = st->pid;
		h->flags |= REC_F_OWNER_KNOWN;
	}
}

/* Stamp the header with the current task, which owns the socket in process context. */
static __always_inline void hdr_current(struct rec_hdr *h)
{
	__u64 id = bpf_get_current_pid_tgid();
	h->tgid = id >> 32;
	h->pid = (__u32)id;
	h->flags |= REC_F_OWNER_KNOWN;
}

/* IPv4 address into the IPv4-mapped IPv6 form every record uses. */
static __always_inline void map_v4(__u8 *dst, __be32 a)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &a, 4);
}

/*
 * Socket fields are read by direct loads: every caller has the socket as a BTF pointer
 * (tp_btf), which the verifier turns into fault-safe loads, far cheaper than a
 * bpf_probe_read_kernel call per field on a path run for every send and receive.
 */

/* Local and remote addresses of a socket (or request socket) from its sock_common. */
static __always_inline void fill_tuple(struct flow_tuple *t, const struct sock_common *skc,
				       __u8 protocol)
{
	__u16 family = skc->skc_family;
	t->family = family;
	t->protocol = protocol;
	t->pad = 0;
	t->sport = skc->skc_num;
	t->dport = bpf_ntohs(skc->skc_dport);
	if (family == AF_INET) {
		map_v4(t->saddr, skc->skc_rcv_saddr);
		map_v4(t->daddr, skc->skc_daddr);
	} else {
		__builtin_memcpy(t->saddr, skc->skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(t->daddr, skc->skc_v6_daddr.in6_u.u6_addr8, 16);
	}
}

static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

/* TCP or UDP over IPv4/IPv6: the sockets netrig follows. Returns the protocol or 0. */
static __always_inline __u8 inet_proto(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u16 proto = sk->sk_protocol;
	__u16 type = sk->sk_type;
	if (proto == IPPROTO_TCP_ && type == SOCK_STREAM_)
		return IPPROTO_TCP_;
	if (proto == IPPROTO_UDP_ && type == SOCK_DGRAM_)
		return IPPROTO_UDP_;
	return 0;
}

/* Record the current task as the socket's owner. */
static __always_inline void set_owner_current(struct conn_state *st)
{
	__u64 id = bpf_get_current_pid_tgid();
	st->tgid = id >> 32;
	st->pid = (__u32)id;
	st->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(st->comm, sizeof(st->comm));
	st->owner_known = 1;
}

static __always_inline int filter_match(__u32 type, __u64 value, __u8 action)
{
	struct filter_key k = { .type = type, .value = value };
	__u8 *a = bpf_map_lookup_elem(&filters, &k);
	return a && *a == action;
}

/*
 * Whether a socket's payload is captured: excludes win, then every filter type that has
 * include entries must match, then the sampling rate. Decided once per socket.
 */
static __always_inline __u8 decide_capture(const struct netrig_config *cfg, __u32 tgid,
					   __u16 sport, __u16 dport, __u64 cgroup, __u32 netns)
{
	if (filter_match(FILTER_PID, tgid, FILTER_EXCLUDE) ||
	    filter_match(FILTER_PORT, sport, FILTER_EXCLUDE) ||
	    filter_match(FILTER_PORT, dport, FILTER_EXCLUDE) ||
	    filter_match(FILTER_CGROUP, cgroup, FILTER_EXCLUDE) ||
	    filter_match(FILTER_NETNS, netns, FILTER_EXCLUDE))
		return CAPTURE_NO;
	__u32 inc = cfg->include_mask;
	if ((inc & (1 << FILTER_PID)) && !filter_match(FILTER_PID, tgid, FILTER_INCLUDE))
		return CAPTURE_NO;
	if ((inc & (1 << FILTER_PORT)) && !filter_match(FILTER_PORT, sport, FILTER_INCLUDE) &&
	    !filter_match(FILTER_PORT, dport, FILTER_INCLUDE))
		return CAPTURE_NO;
	if ((inc & (1 << FILTER_CGROUP)) && !filter_match(FILTER_CGROUP, cgroup, FILTER_INCLUDE))
		return CAPTURE_NO;
	if ((inc & (1 << FILTER_NETNS)) && !filter_match(FILTER_NETNS, netns, FILTER_INCLUDE))
		return CAPTURE_NO;
	if (cfg->sample_per_million < 1000000 &&
	    bpf_get_prandom_u32() % 1000000 >= cfg->sample_per_million)
		return CAPTURE_NO;
	return CAPTURE_YES;
}

#endif /* NETRIG_BPF_H */
