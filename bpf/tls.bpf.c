// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * TLS plaintext from uprobes on OpenSSL's SSL_read, SSL_write and their _ex forms. The entry
 * probe saves the buffer; the socket tracepoints note the socket the call does its I/O on
 * (lib/tls_call.bpf.h); the return probe copies the plaintext into REC_TLS_DATA records of
 * that connection. An SSL object remembers its last socket, for calls served from OpenSSL's
 * own buffers without a syscall. The loader attaches these programs to every libssl it
 * finds (uprobes follow the file, so processes started later are covered too). The
 * BPF_KPROBE macros read arguments from pt_regs, which is what uprobes get as well.
 */
#include "lib/netrig.bpf.h"
#include "lib/payload.bpf.h"
#include "lib/tls_call.bpf.h"
#include "tls.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* (tgid, SSL*) → socket cookie of its last I/O. */
struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __u64);
} ssl_sockets SEC(".maps");

static __always_inline int call_start(__u8 op, void *ssl, const void *buf, __u64 num, void *len_ptr)
{
	struct tls_call *c = tls_call_get(1);
	if (!c)
		return 0;
	c->ssl = (__u64)ssl;
	c->buf = (__u64)buf;
	c->len_ptr = (__u64)len_ptr;
	c->num = num > 0x7fffffff ? 0x7fffffff : num;
	c->op = op;
	c->cookie = 0;
	c->start_ns = bpf_ktime_get_ns();
	if (!c->active)
		tls_calls_count(1);
	c->active = 1;
	return 0;
}

/* The call returned: `bytes` of plaintext moved (0 or less: nothing). */
static __always_inline int call_end(long ret)
{
	struct tls_call *c = tls_call_get(0);
	if (!c || !c->active)
		return 0;
	c->active = 0;
	tls_calls_count(-1);
	/* A handshake moves no plaintext: remember its socket for the SSL object's first calls. */
	if (c->op == TLS_OP_HANDSHAKE) {
		if (c->cookie) {
			struct ssl_key hk = { .ssl = c->ssl, .tgid = bpf_get_current_pid_tgid() >> 32 };
			__u64 hc = c->cookie;
			bpf_map_update_elem(&ssl_sockets, &hk, &hc, BPF_ANY);
		}
		return 0;
	}
	/* _ex forms return 1 on success and store the byte count through their last argument. */
	__u64 bytes = 0;
	if (c->len_ptr) {
		if (ret != 1 || bpf_probe_read_user(&bytes, sizeof(bytes), (void *)c->len_ptr))
			return 0;
	} else if (ret > 0) {
		bytes = ret;
	}
	if (!bytes || bytes > c->num)
		return 0;

	/* The socket: seen inside this call, else the one this SSL object used last. */
	struct ssl_key k = { .ssl = c->ssl, .tgid = bpf_get_current_pid_tgid() >> 32 };
	__u64 cookie = c->cookie;
	if (cookie) {
		bpf_map_update_elem(&ssl_sockets, &k, &cookie, BPF_ANY);
	} else {
		__u64 *known = bpf_map_lookup_elem(&ssl_sockets, &k);
		if (!known) {
			count_loss(REC_TLS_DATA, LOSS_TLS_UNATTRIBUTED);
			return 0;
		}
		cookie = *known;
	}
	/* Only captured sockets have plaintext positions (see note_tls_socket). */
	struct tls_conn *t = bpf_map_lookup_elem(&tls_conns, &cookie);
	if (!t)
		return 0;

	/* Plaintext positions are their own stream, beside the socket's ciphertext positions. */
	__u8 egress = c->op == TLS_OP_SSL_WRITE || c->op == TLS_OP_SSL_WRITE_EX;
	/* Not atomic (fetching atomics need 5.12): an SSL object is never used by two threads at once. */
	__u64 *next = egress ? &t->tx_pos_bytes : &t->rx_pos_bytes;
	__u64 pos = *next;
	*next = pos + bytes;
	/* Written bytes moved during the call, not at its return. */
	struct data_scratch *s = start_records(REC_TLS_DATA, cookie, pos, bytes, c->op,
					       egress ? DIR_EGRESS : DIR_INGRESS,
					       egress ? c->start_ns : bpf_ktime_get_ns());
	if (!s)
		return 0;
	copy_records(0, c->buf, bytes, bytes);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_entry, void *ssl, const void *buf, int num)
{
	return call_start(TLS_OP_SSL_WRITE, ssl, buf, num < 0 ? 0 : num, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_write_return, int ret)
{
	return call_end(ret);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_entry, void *ssl, void *buf, int num)
{
	return call_start(TLS_OP_SSL_READ, ssl, buf, num < 0 ? 0 : num, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_read_return, int ret)
{
	return call_end(ret);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_entry, void *ssl, const void *buf, size_t num, size_t *written)
{
	return call_start(TLS_OP_SSL_WRITE_EX, ssl, buf, num, written);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_write_ex_return, int ret)
{
	return call_end(ret);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_entry, void *ssl, void *buf, size_t num, size_t *readbytes)
{
	return call_start(TLS_OP_SSL_READ_EX, ssl, buf, num, readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_read_ex_return, int ret)
{
	return call_end(ret);
}

SEC("uprobe")
int BPF_KPROBE(ssl_handshake_entry, void *ssl)
{
	return call_start(TLS_OP_HANDSHAKE, ssl, 0, 0, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_handshake_return, int ret)
{
	return call_end(ret);
}
