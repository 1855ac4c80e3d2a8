// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Socket payload on kernels without tp_btf/sock_send_length and sock_recv_length (before
 * 6.3): the syscall tracepoints. Entry saves the call's arguments per thread when its file
 * descriptor is a TCP or UDP socket (the fd is resolved to its socket in the kernel:
 * task->files->fdt->fd[fd]->private_data, checked by socket->file == file); exit knows how
 * many bytes moved and emits the same records as the socket-tracepoint path. The loader
 * loads these programs only where the socket tracepoints are missing, and then keeps socket
 * state in the table keyed by the socket's address (CONN_STORE_TABLE), because the socket
 * pointer read here is not one the verifier trusts.
 *
 * The cost, and why it is only the fallback: entry programs on read and write run for
 * every file descriptor of every process, not only for sockets.
 */
#include "lib/netrig.bpf.h"
#include "lib/socket.bpf.h"
#include "lib/tls_call.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A socket syscall in progress on a thread, saved at its entry. */
struct saved_call {
	struct sock_call call;
	__u64 sk;   /* the socket's kernel address */
	__u64 ino;  /* its inode: addresses are reused, inodes rarely at the same address */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;   /* enum data_direction */
	__u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct saved_call);
} sock_calls SEC(".maps");

/* The socket behind file descriptor `fd` of the current task, or 0; *ino its inode. */
static __always_inline struct sock *fd_sock(__u64 fd, __u64 *ino)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	/* Only a socket's file points at a socket that points back at the file. */
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != f)
		return 0;
	*ino = BPF_CORE_READ(f, f_inode, i_ino);
	return BPF_CORE_READ(sock, sk);
}

/* TCP or UDP over IPv4/IPv6, read through an untrusted pointer. Returns the protocol or 0. */
static __always_inline __u8 inet_proto_read(const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);
	__u16 type = BPF_CORE_READ(sk, sk_type);
	if (proto == IPPROTO_TCP_ && type == SOCK_STREAM_)
		return IPPROTO_TCP_;
	if (proto == IPPROTO_UDP_ && type == SOCK_DGRAM_)
		return IPPROTO_UDP_;
	return 0;
}

/*
 * Save a call on a TCP or UDP socket: `fd` is its socket, `buf`/`len` its buffer, iovec
 * array or message vector, `addr` the sockaddr of sendto/recvfrom.
 */
static __always_inline int save_call(__u64 fd, __u64 buf, __u32 len, __u64 addr, __u8 op, __u8 dir,
				     __u64 flags)
{
	if (dir == DIR_INGRESS && (flags & MSG_PEEK_))
		return 0;
	__u64 ino = 0;
	struct sock *sk = fd_sock(fd, &ino);
	if (!sk)
		return 0;
	__u8 proto = inet_proto_read(sk);
	if (!proto)
		return 0;
	struct saved_call c = {
		.call = { .buf = buf, .addr = addr, .len = len, .op = op },
		.sk = (__u64)sk,
		.ino = ino,
		.proto = proto,
		.dir = dir,
	};
	__u64 id = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&sock_calls, &id, &c, BPF_ANY);
	return 0;
}

/*
 * Message `msg` of the current thread's saved call moved `len` bytes: the records. A global
 * function, so the verifier checks it once rather than once per syscall and message.
 */
__noinline int syscall_data(__u32 msg, __u32 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct saved_call *c = bpf_map_lookup_elem(&sock_calls, &id);
	struct netrig_config *cfg = get_config();
	if (!c || !cfg || !len)
		return 0;
	/* The socket's common part, copied: the pointer is not one the verifier trusts. */
	struct sock *sk = (struct sock *)c->sk;
	struct sock_common skc;
	if (bpf_probe_read_kernel(&skc, sizeof(skc), sk))
		return 0;
	__u64 pos, now;
	struct conn_state *st = capture_start(cfg, sk, &skc, c->proto, c->dir, len, &pos, &now, 0, c->ino);
	if (!st)
		return 0;
	note_tls_socket(st->conn_id);
	/* The datagram peer of an unconnected UDP socket is in msg_name by now. */
	int unconnected_udp = c->proto == IPPROTO_UDP_ && skc.skc_dport == 0;
	emit_data(c->call.op == SOCK_OP_OTHER ? 0 : &c->call, msg, st->conn_id, pos, len, c->dir,
		  unconnected_udp, now);
	return 0;
}

/* At exit: the records of the saved call, which is then forgotten. */
static __always_inline int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct saved_call *c = bpf_map_lookup_elem(&sock_calls, &id);
	if (!c)
		return 0;
	long ret = ctx->ret;
	if (ret > 0) {
		if (c->call.op == SOCK_OP_RECVMMSG || c->call.op == SOCK_OP_SENDMMSG) {
			/* ret messages moved; each one's length is in its mmsghdr. */
			__u64 vec = c->call.buf;
			for (__u32 i = 0; i < SOCK_DATA_MAX_MMSG; i++) {
				__u32 len = 0;
				if (i >= ret)
					break;
				bpf_probe_read_user(&len, sizeof(len),
						    (void *)(vec + i * sizeof(struct mmsghdr) +
							     offsetof(struct mmsghdr, msg_len)));
				syscall_data(i, len);
			}
		} else {
			syscall_data(0, ret);
		}
	}
	bpf_map_delete_elem(&sock_calls, &id);
	return 0;
}

#define ARG(i) (ctx->args[i])

SEC("tracepoint/syscalls/sys_enter_read")
int fd_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), 0, SOCK_OP_READ, DIR_INGRESS, 0);
}

SEC("tracepoint/syscalls/sys_enter_write")
int fd_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), 0, SOCK_OP_WRITE, DIR_EGRESS, 0);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int fd_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), 0, SOCK_OP_READV, DIR_INGRESS, 0);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int fd_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), 0, SOCK_OP_WRITEV, DIR_EGRESS, 0);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int fd_enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), ARG(4), SOCK_OP_RECVFROM, DIR_INGRESS, ARG(3));
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int fd_enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), ARG(4), SOCK_OP_SENDTO, DIR_EGRESS, 0);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int fd_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), 1, 0, SOCK_OP_RECVMSG, DIR_INGRESS, ARG(2));
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int fd_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), 1, 0, SOCK_OP_SENDMSG, DIR_EGRESS, 0);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int fd_enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), 0, SOCK_OP_RECVMMSG, DIR_INGRESS, ARG(3));
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int fd_enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), ARG(1), ARG(2), 0, SOCK_OP_SENDMMSG, DIR_EGRESS, 0);
}

/* sendfile moves bytes without a user buffer: a length-only record keeps positions aligned. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int fd_enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return save_call(ARG(0), 0, 0, 0, SOCK_OP_OTHER, DIR_EGRESS, 0);
}

SEC("tracepoint/syscalls/sys_exit_read")
int fd_exit_read(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_write")
int fd_exit_write(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_readv")
int fd_exit_readv(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_writev")
int fd_exit_writev(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int fd_exit_recvfrom(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int fd_exit_sendto(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int fd_exit_recvmsg(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int fd_exit_sendmsg(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int fd_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int fd_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int fd_exit_sendfile64(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }
