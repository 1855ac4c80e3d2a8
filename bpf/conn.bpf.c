// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * TCP connection lifecycle: connect() (active open), ESTABLISHED (both roles) and CLOSE,
 * from tp_btf/inet_sock_set_state, which hands a trusted socket so its cookie is the
 * connection id. Never sampled: every TCP connection gets its open and close records.
 */
#include "lib/netrig.bpf.h"
#include "lib/tls_call.bpf.h"
#include "conn.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* States in which a socket was a connection worth a CLOSE record even if never seen open. */
static __always_inline int was_connected(int state)
{
	return state != TCP_LISTEN_ && state != TCP_SYN_RECV_ && state != TCP_CLOSE_;
}

static __always_inline void emit_open(const struct sock *sk, __u64 cookie, struct conn_state *st)
{
	struct conn_open_rec r = {};
	fill_hdr(&r.hdr, REC_CONN_OPEN, CONN_OPEN_VERSION, sizeof(r), cookie);
	hdr_owner(&r.hdr, st);
	fill_tuple(&r.tuple, &sk->__sk_common, IPPROTO_TCP_);
	st->tuple = r.tuple;
	r.cgroup_id = st->cgroup_id;
	r.connect_ts_ns = st->connect_ts_ns;
	r.netns_ino = sock_netns(sk);
	r.role = st->role;
	r.conn_flags = st->conn_flags;
	__builtin_memcpy(r.comm, st->comm, sizeof(r.comm));
	emit(&r, sizeof(r), REC_CONN_OPEN);
}

static __always_inline void emit_close(const struct sock *sk, __u64 cookie, struct conn_state *st,
				       int oldstate)
{
	struct conn_close_rec r = {};
	fill_hdr(&r.hdr, REC_CONN_CLOSE, CONN_CLOSE_VERSION, sizeof(r), cookie);
	/* The kernel may already have released the local port: prefer the tuple kept at open. */
	if (st && st->tuple.family)
		r.tuple = st->tuple;
	else
		fill_tuple(&r.tuple, &sk->__sk_common, IPPROTO_TCP_);
	r.retransmits = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	r.netns_ino = sock_netns(sk);
	r.old_state = oldstate;
	if (st) {
		hdr_owner(&r.hdr, st);
		r.open_ts_ns = st->open_ts_ns;
		r.tx_bytes = st->tx_pos_bytes;
		r.rx_bytes = st->rx_pos_bytes;
		r.cgroup_id = st->cgroup_id;
		r.role = st->role;
		r.conn_flags = st->conn_flags;
		__builtin_memcpy(r.comm, st->comm, sizeof(r.comm));
	} else {
		/* Open before the edge started and silent since: only the close is known. */
		r.conn_flags = CONN_F_MIDLIFE;
	}
	if (oldstate == TCP_SYN_SENT_)
		r.conn_flags |= CONN_F_NEVER_ESTABLISHED;
	emit(&r, sizeof(r), REC_CONN_CLOSE);
}

/* One record with what the connection moved, then forget it. */
static __always_inline void close_conn(const struct sock *sk, struct conn_state *st, int oldstate)
{
	__u64 id = conn_id_of(sk, st);
	emit_close(sk, id, st, oldstate);
	if (st)
		conn_delete(sk);
	bpf_map_delete_elem(&tls_conns, &id);
}

/* Its owner let go of the socket (close(), process exit): nothing reads or writes it any more. */
static __always_inline int orphaned(const struct sock *sk)
{
	return (sk->__sk_common.skc_flags >> SOCK_DEAD) & 1;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	/* Only TCP; the tracepoint also fires for SCTP and MPTCP. */
	if (sk->sk_protocol != IPPROTO_TCP_)
		return 0;
	__u64 now = bpf_ktime_get_ns();

	/* connect(): process context, so the caller owns the socket. */
	if (newstate == TCP_SYN_SENT_) {
		struct conn_state st = {};
		st.role = ROLE_CLIENT;
		st.connect_ts_ns = now;
		st.open_ts_ns = now;
		set_owner_current(&st);
		/* Reconnected after a reset (connect(AF_UNSPEC), then connect()): the old life ends here. */
		struct conn_state *old = conn_get(sk);
		if (old && old->close_pending)
			close_conn(sk, old, old->close_old_state);
		/* A connection's life starts here: state found at the socket is from before the
		 * connect(), or a dead socket's at a reused address (CONN_STORE_TABLE). */
		conn_delete(sk);
		conn_create(sk, &st);
		return 0;
	}

	/* Handshake done: the old state tells the role. */
	if (newstate == TCP_ESTABLISHED_ &&
	    (oldstate == TCP_SYN_SENT_ || oldstate == TCP_SYN_RECV_)) {
		struct conn_state fresh = {};
		fresh.role = oldstate == TCP_SYN_SENT_ ? ROLE_CLIENT : ROLE_SERVER;
		/* An accepted socket's life starts here too (a client's began at connect()). */
		if (oldstate == TCP_SYN_RECV_)
			conn_delete(sk);
		struct conn_state *st = conn_create(sk, &fresh);
		if (!st)
			return 0;
		st->open_ts_ns = now;
		emit_open(sk, st->conn_id, st);
		return 0;
	}

	if (newstate == TCP_CLOSE_) {
		struct conn_state *st = conn_get(sk);
		if (!st && !was_connected(oldstate))
			return 0;
		/* Closed under its owner (a reset received, or close() with bytes unread): the owner
		 * may still read what was queued before the reset, and a send that took its bytes
		 * before the reset was processed reports them after this transition. Keep the state
		 * so those bytes stay on this connection, and close when the socket is destroyed. A
		 * connect() that failed has moved nothing: it closes now. */
		if (st && oldstate != TCP_SYN_SENT_ && !orphaned(sk)) {
			st->close_pending = 1;
			st->close_old_state = oldstate;
			return 0;
		}
		close_conn(sk, st, oldstate);
	}
	return 0;
}

/* The socket is destroyed: the close a reset left pending is recorded now. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy_sock, struct sock *sk)
{
	struct conn_state *st = conn_get(sk);
	if (st && st->close_pending)
		close_conn(sk, st, st->close_old_state);
	return 0;
}

/* Never called: names the wire structs so they reach BTF, where the decoders' layout test reads them. */
__noinline int btf_anchor_conn(struct conn_open_rec *open, struct conn_info_rec *info,
			       struct conn_close_rec *close, enum conn_store store)
{
	return 0;
}
