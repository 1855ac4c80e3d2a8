/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * An SSL_read/SSL_write call in progress on a thread, shared by the uprobes (tls.bpf.c),
 * which start and finish it, and the socket tracepoints (sock_data.bpf.c), which note the
 * socket the call reads or writes: OpenSSL does its socket I/O inside the call, on the
 * same thread, so that socket is the connection the plaintext belongs to.
 */
#ifndef NETRIG_TLS_CALL_BPF_H
#define NETRIG_TLS_CALL_BPF_H

#include "netrig.bpf.h"

struct tls_call {
	__u64 ssl;      /* the SSL object */
	__u64 buf;      /* plaintext buffer */
	__u64 len_ptr;  /* size_t *written / *readbytes of the _ex forms, else 0 */
	__u64 cookie;   /* socket seen inside the call, 0 if none yet */
	__u64 start_ns; /* when the call began */
	__u32 num;      /* buffer size */
	__u8 op;        /* enum tls_op */
	__u8 active;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_call);
} tls_calls SEC(".maps") __weak;

/* Inside a socket send/receive: if an SSL call is running on this thread, it uses `cookie`. */
static __always_inline void note_tls_socket(__u64 cookie)
{
	struct tls_call *c = bpf_task_storage_get(&tls_calls, bpf_get_current_task_btf(), 0, 0);
	if (c && c->active)
		c->cookie = cookie;
}

#endif /* NETRIG_TLS_CALL_BPF_H */
