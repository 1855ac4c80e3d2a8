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
#include "lib/socket.bpf.h"
#include "lib/tls_call.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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

/* By thread id: a hash, not task storage, so the map exists on every kernel the loader opens. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_task);
} sock_tasks SEC(".maps");

static __always_inline struct sock_task *task_state(__u64 create)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!create)
		return bpf_map_lookup_elem(&sock_tasks, &id);
	struct sock_task fresh = {};
	return map_lookup_or_init(&sock_tasks, &id, &fresh);
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
	__u64 pos, now;
	struct conn_state *st = capture_start(cfg, sk, &sk->__sk_common, proto, dir, ret, &pos, &now, 1, 0);
	if (!st)
		return 0;
	__u64 cookie = st->conn_id;
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
