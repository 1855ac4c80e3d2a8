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

/* By thread id: a hash, not task storage, so TLS capture works on kernels without it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tls_call);
} tls_calls SEC(".maps") __weak;

/* The current thread's SSL call, created when `create` is set. */
static __always_inline struct tls_call *tls_call_get(int create)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!create)
		return bpf_map_lookup_elem(&tls_calls, &id);
	struct tls_call fresh = {};
	return map_lookup_or_init(&tls_calls, &id, &fresh);
}

/*
 * SSL calls in progress on any thread. The socket tracepoints look for the current thread's
 * call only while some call is in progress, so sockets of processes without TLS pay one
 * array read instead of a hash lookup per send and receive. A call whose return
 * probe never ran leaves the count high, which only costs that lookup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} tls_calls_active SEC(".maps") __weak;

/* Count a call in (+1) or out (-1). */
static __always_inline void tls_calls_count(__s64 delta)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&tls_calls_active, &zero);
	if (n)
		__sync_fetch_and_add(n, delta);
}

/*
 * Plaintext positions of a captured socket that carried an SSL call, by cookie: the return
 * probes have no socket, only the cookie the call noted. Removed at CLOSE; LRU for sockets
 * that never close through TCP's state machine.
 */
struct tls_conn {
	__u64 tx_pos_bytes; /* next egress plaintext position */
	__u64 rx_pos_bytes; /* next ingress plaintext position */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tls_conn);
} tls_conns SEC(".maps") __weak;

/*
 * Inside a send/receive on a captured socket: if an SSL call is running on this thread, it
 * uses this socket, which gets plaintext positions.
 */
static __always_inline void note_tls_socket(__u64 cookie)
{
	__u32 zero = 0;
	__s64 *active = bpf_map_lookup_elem(&tls_calls_active, &zero);
	if (!active || *active <= 0)
		return;
	struct tls_call *c = tls_call_get(0);
	if (!c || !c->active)
		return;
	c->cookie = cookie;
	struct tls_conn fresh = {};
	bpf_map_update_elem(&tls_conns, &cookie, &fresh, BPF_NOEXIST);
}

#endif /* NETRIG_TLS_CALL_BPF_H */
