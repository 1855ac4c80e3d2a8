/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What both payload paths share: the socket-tracepoint path (sock_data.bpf.c, 6.3+) and the
 * syscall-tracepoint path (sock_syscalls.bpf.c, older kernels). A send or receive finds or
 * makes the socket's state, claims its byte range, tells the processors who owns the socket
 * the first time (and again after a silence), and copies the syscall's bytes into records.
 */
#ifndef NETRIG_SOCKET_BPF_H
#define NETRIG_SOCKET_BPF_H

#include "netrig.bpf.h"
#include "payload.bpf.h"
#include "../conn.h"
#include "../sock_data.h"

#define MSG_PEEK_ 2
#define EPHEMERAL_PORT_MIN 32768

/* The user memory of the socket syscall a task is running. */
struct sock_call {
	__u64 buf;  /* buffer, iovec array, msghdr or mmsghdr vector */
	__u64 addr; /* sockaddr of sendto/recvfrom */
	__s64 nr;   /* the syscall */
	__u32 len;  /* buffer length, iovec count or message count */
	__u8 op;    /* enum sock_op */
};

/* Where message `msg` of the saved syscall keeps its bytes and peer address. */
static __always_inline int resolve_src(const struct sock_call *a, __u32 msg, struct data_src *src)
{
	struct user_msghdr mh;
	__u64 mh_ptr;

	switch (a->op) {
	case SOCK_OP_READ:
	case SOCK_OP_WRITE:
	case SOCK_OP_RECVFROM:
	case SOCK_OP_SENDTO:
		src->iov = 0;
		src->buf = a->buf;
		src->count = a->len;
		src->name = a->addr;
		return 0;
	case SOCK_OP_READV:
	case SOCK_OP_WRITEV:
		src->iov = a->buf;
		src->count = a->len;
		src->name = 0;
		return 0;
	case SOCK_OP_RECVMSG:
	case SOCK_OP_SENDMSG:
		mh_ptr = a->buf;
		break;
	case SOCK_OP_RECVMMSG:
	case SOCK_OP_SENDMMSG:
		if (msg >= a->len || msg >= SOCK_DATA_MAX_MMSG)
			return -1;
		mh_ptr = a->buf + (__u64)msg * sizeof(struct mmsghdr);
		break;
	default:
		return -1;
	}
	if (bpf_probe_read_user(&mh, sizeof(mh), (void *)mh_ptr))
		return -1;
	src->iov = (__u64)mh.msg_iov;
	src->count = mh.msg_iovlen;
	src->name = (__u64)mh.msg_name;
	return 0;
}

/* A sockaddr_in/in6 in user memory into a peer_addr. */
static __always_inline void read_peer(struct peer_addr *p, __u64 name)
{
	struct sockaddr_in6 sa = {};
	__builtin_memset(p, 0, sizeof(*p));
	if (!name || bpf_probe_read_user(&sa, sizeof(sa), (void *)name))
		return;
	if (sa.sin6_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&sa;
		map_v4(p->addr, sin->sin_addr.s_addr);
		p->port = bpf_ntohs(sin->sin_port);
		p->family = AF_INET;
	} else if (sa.sin6_family == AF_INET6) {
		__builtin_memcpy(p->addr, sa.sin6_addr.in6_u.u6_addr8, 16);
		p->port = bpf_ntohs(sa.sin6_port);
		p->family = AF_INET6;
	}
}

/* Emit the records of message `msg` of the syscall, stamped `ts_ns`. */
static __always_inline void emit_data(const struct sock_call *a, __u32 msg, __u64 cookie, __u64 pos,
				      __u32 total, __u8 dir, int want_peer, __u64 ts_ns)
{
	struct data_src src = {};
	struct data_scratch *s = start_records(REC_SOCK_DATA, cookie, pos, total, a ? a->op : SOCK_OP_OTHER, dir,
					       ts_ns);
	if (!s)
		return;
	if (!a || resolve_src(a, msg, &src)) {
		/* No user buffer: only the length, so the position still advances. */
		flush_chunk(s, pos, 0, 0, DATA_F_LAST | DATA_F_NO_BUFFER | DATA_F_TRUNCATED);
		return;
	}
	if (want_peer)
		read_peer(&s->rec.peer, src.name);
	copy_records(src.iov, src.buf, src.count, total);
}

/* ---- first sight of a socket -------------------------------------------------------- */

/* Role of a socket first seen mid-life: from the ports, or from who spoke first (UDP). */
static __always_inline __u8 guess_role(__u8 proto, __u16 sport, __u16 dport, __u8 dir)
{
	if (proto == IPPROTO_UDP_)
		return dir == DIR_EGRESS ? ROLE_CLIENT : ROLE_SERVER;
	if (sport < EPHEMERAL_PORT_MIN && dport >= EPHEMERAL_PORT_MIN)
		return ROLE_SERVER;
	if (sport >= EPHEMERAL_PORT_MIN && dport < EPHEMERAL_PORT_MIN)
		return ROLE_CLIENT;
	return sport < dport ? ROLE_SERVER : ROLE_CLIENT;
}

/*
 * Where a TCP socket first seen mid-life stands in each direction, by the kernel's own
 * counters rather than from zero: an edge started, or restarted after a crash, during a
 * connection numbers its bytes as the previous edge did, so positions never go back
 * (reassembly would take the new bytes for duplicates) and rows keyed by request position
 * never collide with the previous run's. Egress: bytes acknowledged plus bytes queued
 * (write_seq - snd_una; on an active open bytes_acked counts the SYN, so one above, never
 * below). Ingress: bytes received in order less those not read yet (rcv_nxt - copied_seq;
 * both count a FIN). Called after the send or receive of `len` bytes that found the socket,
 * so the counters stand after it. Read, not loaded: `sk` may be an untrusted pointer.
 */
static __always_inline void midlife_positions(const struct sock *sk, struct conn_state *st, __u8 dir, __u32 len)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u64 tx = BPF_CORE_READ(tp, bytes_acked) + (__u32)(BPF_CORE_READ(tp, write_seq) - BPF_CORE_READ(tp, snd_una));
	__u64 rx = BPF_CORE_READ(tp, bytes_received) - (__u32)(BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq));
	__u64 *after = dir == DIR_EGRESS ? &tx : &rx;
	*after = *after >= len ? *after - len : 0;
	st->tx_pos_bytes = tx;
	st->rx_pos_bytes = rx;
}

/*
 * State for a socket with no entry: a UDP socket, or TCP open before the edge started.
 * `skc` is the socket's sock_common: the socket itself where the pointer is trusted, or a
 * copy on the stack where it is not. `len` bytes just moved in direction `dir`.
 */
static __always_inline struct conn_state *track_new(const struct sock *sk, const struct sock_common *skc,
						    __u8 proto, __u8 dir, __u32 len, __u64 sock_ino)
{
	struct conn_state st = {};
	st.sock_ino = sock_ino;
	__u16 sport = skc->skc_num;
	__u16 dport = bpf_ntohs(skc->skc_dport);
	st.role = guess_role(proto, sport, dport, dir);
	st.conn_flags = CONN_F_ROLE_GUESSED;
	if (proto == IPPROTO_TCP_) {
		st.conn_flags |= CONN_F_MIDLIFE;
		midlife_positions(sk, &st, dir, len);
	}
	st.open_ts_ns = bpf_ktime_get_ns();
	return conn_create(sk, &st);
}

/* Tell the processors who owns the socket, deciding capture the first time. */
static __always_inline void announce(const struct netrig_config *cfg, const struct sock_common *skc,
				     __u64 cookie, struct conn_state *st, __u8 proto)
{
	struct conn_info_rec r = {};
	fill_tuple(&r.tuple, skc, proto);
	/* Read, not loaded: `skc` may be a copy whose pointers the verifier does not trust. */
	r.netns_ino = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	if (!st->announced) {
		st->announced = 1;
		if (!st->owner_known)
			set_owner_current(st);
		st->tuple = r.tuple;
		st->capture = decide_capture(cfg, st->tgid, r.tuple.sport, r.tuple.dport,
					     st->cgroup_id, r.netns_ino);
		if (st->capture == CAPTURE_YES)
			st->conn_flags |= CONN_F_CAPTURED;
	}
	st->info_ts_ns = bpf_ktime_get_ns();
	fill_hdr(&r.hdr, REC_CONN_INFO, CONN_INFO_VERSION, sizeof(r), cookie);
	hdr_owner(&r.hdr, st);
	r.cgroup_id = st->cgroup_id;
	r.open_ts_ns = st->open_ts_ns;
	r.role = st->role;
	r.conn_flags = st->conn_flags;
	__builtin_memcpy(r.comm, st->comm, sizeof(r.comm));
	emit(&r, sizeof(r), REC_CONN_INFO);
}

/*
 * The start of every send or receive of `len` bytes: the socket's state (made at first
 * sight), the syscall's byte range claimed (*pos), the owner announced the first time and
 * after CONN_INFO_REFRESH_NS of silence. Returns the state when the payload is captured,
 * else 0; *now is the one clock read the records are stamped with. `atomic_claim` (a
 * constant per caller) claims the range with a fetching atomic, for the path that only
 * runs on kernels that have them. `sock_ino` is the socket's inode where the state is
 * keyed by address (CONN_STORE_TABLE), else 0.
 */
static __always_inline struct conn_state *capture_start(const struct netrig_config *cfg,
							const struct sock *sk,
							const struct sock_common *skc, __u8 proto,
							__u8 dir, __u32 len, __u64 *pos, __u64 *now,
							const int atomic_claim, __u64 sock_ino)
{
	struct conn_state *st = conn_get(sk);
	if (st && sock_ino && st->sock_ino != sock_ino) {
		if (st->sock_ino) {
			/* A socket that died without a CLOSE (UDP) left its state at an address the
			 * allocator gave this one: start over. */
			conn_delete(sk);
			st = 0;
		} else {
			/* Made by the connection program, which sees no inode. */
			st->sock_ino = sock_ino;
		}
	}
	if (!st) {
		st = track_new(sk, skc, proto, dir, len, sock_ino);
		if (!st)
			return 0;
	}
	__u64 *next = dir == DIR_EGRESS ? &st->tx_pos_bytes : &st->rx_pos_bytes;
	if (atomic_claim) {
		/* Concurrent senders get disjoint ranges. */
		*pos = __sync_fetch_and_add(next, (__u64)len);
	} else {
		/* Before 5.12 a program that merely contains a fetching atomic does not load. */
		*pos = *next;
		*next = *pos + len;
	}
	if (!st->announced)
		announce(cfg, skc, st->conn_id, st, proto);
	if (st->capture != CAPTURE_YES)
		return 0;
	*now = bpf_ktime_get_ns();
	if (*now - st->info_ts_ns > CONN_INFO_REFRESH_NS)
		announce(cfg, skc, st->conn_id, st, proto);
	return st;
}

#endif /* NETRIG_SOCKET_BPF_H */
