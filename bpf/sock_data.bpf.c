// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Socket payload for L7 reassembly, tied to its socket inside the kernel.
 *
 * tp_btf/sock_send_length and tp_btf/sock_recv_length fire inside every socket send and
 * receive with a trusted socket and the byte count. The user buffer (or iovec, msghdr,
 * mmsghdr vector) is read from the arguments of the syscall the task is running, in the
 * user registers the kernel saved at its entry, so no program runs at syscall entry: an
 * enabled syscall-entry tracepoint would tax every syscall of every process. The payload
 * is copied there and stamped with its byte position in that direction. A send with no
 * user buffer (sendfile, splice, io_uring) still advances the position: a record with
 * only the length keeps later messages aligned.
 *
 * Receives on unconnected UDP sockets wait for the syscall's exit, when the kernel has
 * written the datagram's source address into the user's msg_name.
 */
#include "lib/netrig.bpf.h"
#include "lib/payload.bpf.h"
#include "lib/tls_call.bpf.h"
#include "conn.h"
#include "sock_data.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MSG_PEEK_ 2
#define EPHEMERAL_PORT_MIN 32768

/* x86-64 and arm64 (generic) numbers of the syscalls that carry socket payload. */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL_NR(regs) ((regs)->orig_ax)
enum { NR_read = 0, NR_write = 1, NR_readv = 19, NR_writev = 20, NR_sendto = 44, NR_recvfrom = 45,
       NR_sendmsg = 46, NR_recvmsg = 47, NR_recvmmsg = 299, NR_sendmmsg = 307 };
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_NR(regs) ((regs)->syscallno)
enum { NR_read = 63, NR_write = 64, NR_readv = 65, NR_writev = 66, NR_sendto = 206, NR_recvfrom = 207,
       NR_sendmsg = 211, NR_recvmsg = 212, NR_recvmmsg = 243, NR_sendmmsg = 269 };
#else
#error "sock_data.bpf.c: syscall numbers for this architecture are missing"
#endif

/* The user memory of the socket syscall a task is running. */
struct sock_call {
	__u64 buf;  /* buffer, iovec array, msghdr or mmsghdr vector */
	__u64 addr; /* sockaddr of sendto/recvfrom */
	__s64 nr;   /* the syscall */
	__u32 len;  /* buffer length, iovec count or message count */
	__u8 op;    /* enum sock_op */
};

/*
 * The syscall the current task is running, from the user registers saved at its entry
 * (they keep the arguments until the syscall returns). Returns 0, or -1 when the task is
 * not in a syscall that names a user buffer (sendfile, splice, a kernel thread).
 */
static __always_inline int current_call(struct sock_call *c)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = SYSCALL_NR(regs);
	c->nr = nr;
	c->buf = PT_REGS_PARM2_SYSCALL(regs);
	c->len = PT_REGS_PARM3_SYSCALL(regs);
	c->addr = 0;
	switch (nr) {
	case NR_read: c->op = SOCK_OP_READ; return 0;
	case NR_write: c->op = SOCK_OP_WRITE; return 0;
	case NR_readv: c->op = SOCK_OP_READV; return 0;
	case NR_writev: c->op = SOCK_OP_WRITEV; return 0;
	case NR_recvfrom: c->op = SOCK_OP_RECVFROM; c->addr = PT_REGS_PARM5_SYSCALL(regs); return 0;
	case NR_sendto: c->op = SOCK_OP_SENDTO; c->addr = PT_REGS_PARM5_SYSCALL(regs); return 0;
	case NR_recvmsg: c->op = SOCK_OP_RECVMSG; c->len = 1; return 0;
	case NR_sendmsg: c->op = SOCK_OP_SENDMSG; c->len = 1; return 0;
	case NR_recvmmsg: c->op = SOCK_OP_RECVMMSG; return 0;
	case NR_sendmmsg: c->op = SOCK_OP_SENDMMSG; return 0;
	}
	return -1;
}

/*
 * Per-task state for the few syscalls that need it, created on first need: the next
 * message of a recvmmsg/sendmmsg (reset at the syscall's exit) and unconnected-UDP
 * receives waiting for that exit.
 */
struct sock_task {
	__u32 mmsg_index;
	__u8 pend_n;
	__u8 pad[3];
	struct sock_call pend_call; /* the syscall the pending receives belong to */
	__u64 pend_cookie;
	__u64 pend_pos[SOCK_DATA_MAX_MMSG];
	__u32 pend_len[SOCK_DATA_MAX_MMSG];
	__u32 pend_msg[SOCK_DATA_MAX_MMSG];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_task);
} sock_tasks SEC(".maps");

static __always_inline struct sock_task *task_state(__u64 create)
{
	return bpf_task_storage_get(&sock_tasks, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* ---- payload copy ------------------------------------------------------------------- */

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

/* State for a socket with no entry: a UDP socket, or TCP open before the edge started. */
static __always_inline struct conn_state *track_new(const struct sock *sk, __u64 cookie, __u8 proto,
						    __u8 dir)
{
	struct conn_state st = {};
	__u16 sport = sk->__sk_common.skc_num;
	__u16 dport = bpf_ntohs(sk->__sk_common.skc_dport);
	st.role = guess_role(proto, sport, dport, dir);
	st.conn_flags = CONN_F_ROLE_GUESSED;
	if (proto == IPPROTO_TCP_)
		st.conn_flags |= CONN_F_MIDLIFE;
	st.open_ts_ns = bpf_ktime_get_ns();
	return conn_create(sk, &st);
}

/* Tell the processors who owns the socket, deciding capture the first time. */
static __always_inline void announce(const struct netrig_config *cfg, const struct sock *sk,
				     __u64 cookie, struct conn_state *st, __u8 proto)
{
	struct conn_info_rec r = {};
	fill_tuple(&r.tuple, &sk->__sk_common, proto);
	r.netns_ino = sock_netns(sk);
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

/* ---- send and receive ---------------------------------------------------------------- */

static __always_inline int on_sock_data(struct sock *sk, int ret, int msg_flags, __u8 dir)
{
	/* Nothing moved, or a peek that leaves the bytes for the next read. */
	if (ret <= 0 || (dir == DIR_INGRESS && (msg_flags & MSG_PEEK_)))
		return 0;
	__u8 proto = inet_proto(sk);
	if (!proto)
		return 0;
	struct netrig_config *cfg = get_config();
	if (!cfg)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct conn_state *st = conn_get(sk);
	if (!st) {
		st = track_new(sk, cookie, proto, dir);
		if (!st)
			return 0;
	}
	/* Claim this syscall's byte range; concurrent senders get disjoint ranges. */
	__u64 pos = __sync_fetch_and_add(dir == DIR_EGRESS ? &st->tx_pos_bytes : &st->rx_pos_bytes,
					 (__u64)ret);
	if (!st->announced)
		announce(cfg, sk, cookie, st, proto);
	if (st->capture != CAPTURE_YES)
		return 0;
	/* One clock read per send or receive: the refresh check and the records' stamp. */
	__u64 now = bpf_ktime_get_ns();
	if (now - st->info_ts_ns > CONN_INFO_REFRESH_NS)
		announce(cfg, sk, cookie, st, proto);
	note_tls_socket(cookie);

	struct sock_call call;
	struct sock_call *a = current_call(&call) ? 0 : &call;
	__u32 msg = 0;
	int mmsg = a && (a->op == SOCK_OP_RECVMMSG || a->op == SOCK_OP_SENDMMSG);
	int unconnected_udp = proto == IPPROTO_UDP_ && sk->__sk_common.skc_dport == 0;
	/* Unconnected UDP receive: the source address reaches user memory at syscall exit. */
	int defer = unconnected_udp && dir == DIR_INGRESS && a && a->op != SOCK_OP_READ &&
		    a->op != SOCK_OP_READV;
	if (mmsg || defer) {
		struct sock_task *t = task_state(1);
		if (!t)
			return 0;
		if (mmsg)
			msg = t->mmsg_index++;
		if (defer) {
			__u8 i = t->pend_n;
			if (i < SOCK_DATA_MAX_MMSG) {
				t->pend_call = *a;
				t->pend_cookie = cookie;
				t->pend_pos[i] = pos;
				t->pend_len[i] = ret;
				t->pend_msg[i] = msg;
				t->pend_n = i + 1;
			}
			return 0;
		}
	}
	emit_data(a, msg, cookie, pos, ret, dir, unconnected_udp, now);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	return on_sock_data(sk, ret, flags, DIR_EGRESS);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_sock_data(sk, ret, flags, DIR_INGRESS);
}

/* ---- deferred unconnected-UDP receives ----------------------------------------------- */

/* The deferred receives of one syscall, walked by bpf_loop. */
struct pending_walk {
	struct sock_task *t;
};

/* Emit deferred receive `i`: one step of bpf_loop, so the verifier checks emit_data once. */
static long emit_pending(__u32 i, struct pending_walk *w)
{
	struct sock_task *t = w->t;
	if (i >= t->pend_n || i >= SOCK_DATA_MAX_MMSG)
		return 1;
	emit_data(&t->pend_call, t->pend_msg[i], t->pend_cookie, t->pend_pos[i], t->pend_len[i],
		  DIR_INGRESS, 1, bpf_ktime_get_ns());
	return 0;
}

/* At the exit of a receive: emit the deferred UDP receives, and end the message count. */
static __always_inline int on_recv_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct sock_task *t = task_state(0);
	if (!t)
		return 0;
	t->mmsg_index = 0;
	if (!t->pend_n)
		return 0;
	if (t->pend_call.nr == (__s32)ctx->id) {
		struct pending_walk w = { .t = t };
		bpf_loop(SOCK_DATA_MAX_MMSG, emit_pending, &w, 0);
	}
	t->pend_n = 0;
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int sys_exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return on_recv_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sys_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return on_recv_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int sys_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return on_recv_exit(ctx);
}

/* sendmmsg's message count ends with the syscall. */
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sys_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	struct sock_task *t = task_state(0);
	if (t)
		t->mmsg_index = 0;
	return 0;
}
