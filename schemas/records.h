/* SPDX-License-Identifier: Apache-2.0 */
/*
 * netrig kernel record contract: the common header every ring-buffer record starts
 * with, the one enum of record kinds, and the small structs several kinds share.
 * The per-kind layouts live beside their programs in bpf/<concern>.h; the TypeScript
 * decoders in schemas/ are checked against the BTF of the built object.
 */
#ifndef NETRIG_RECORDS_H
#define NETRIG_RECORDS_H

/*
 * Record kinds. Ranges are reserved per concern so kinds never collide:
 *   0x0000          invalid
 *   0x0001-0x000f   connection lifecycle   (bpf/conn.h)
 *   0x0010-0x001f   socket payload         (bpf/sock_data.h)
 *   0x0020-0x002f   TCP and packet events  (bpf/tcp_events.h)
 *   0x0030-0x003f   TLS plaintext          (bpf/tls.h)
 *   0x0040-0x00ff   reserved
 * Kinds stay below REC_KIND_MAX so per-kind counters are plain arrays.
 */
enum rec_kind {
	REC_CONN_OPEN = 0x0001,      /* TCP connection reached ESTABLISHED */
	REC_CONN_INFO = 0x0002,      /* first process-context sight of a socket */
	REC_CONN_CLOSE = 0x0003,     /* TCP connection reached CLOSE */
	REC_SOCK_DATA = 0x0010,      /* payload of one socket send or receive */
	REC_TCP_RETRANSMIT = 0x0020, /* segment or SYN/ACK retransmitted */
	REC_TCP_RESET = 0x0021,      /* RST sent or received */
	REC_SKB_DROP = 0x0022,       /* packet freed with a drop reason */
	REC_TLS_DATA = 0x0030,       /* TLS plaintext of one SSL_read/SSL_write (sock_data_rec layout) */
	REC_KIND_MAX = 0x0040,
};

/* Header flags (rec_hdr.flags), meaningful for every kind. */
enum rec_hdr_flags {
	REC_F_OWNER_KNOWN = 1 << 0, /* tgid/pid name the socket's owner, not an interrupted task */
};

/* Causes of kernel-side loss, counted per kind in the `losses` map. */
enum loss_cause {
	LOSS_RINGBUF_FULL = 0,      /* bpf_ringbuf_output failed: the edge fell behind */
	LOSS_TLS_UNATTRIBUTED = 1,  /* TLS plaintext whose socket could not be told */
	LOSS_CAUSE_MAX = 2,
};

/* Common header of every record; 32 bytes, naturally aligned. */
struct rec_hdr {
	__u16 kind;       /* enum rec_kind */
	__u8 version;     /* layout version of this kind */
	__u8 flags;       /* enum rec_hdr_flags */
	__u32 size_bytes; /* whole record: header, body and payload */
	__u64 ts_ns;      /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 conn_id;    /* socket cookie; 0 when no socket is known */
	__u32 tgid;       /* process id (0 when unknown) */
	__u32 pid;        /* thread id (0 when unknown) */
};

/* A socket's addresses: IPv4 as IPv4-mapped IPv6, ports in host order; 40 bytes. */
struct flow_tuple {
	__u8 saddr[16]; /* local address */
	__u8 daddr[16]; /* remote address */
	__u16 sport;    /* local port */
	__u16 dport;    /* remote port */
	__u16 family;   /* AF_INET or AF_INET6 as the socket was opened */
	__u8 protocol;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* One peer address (a UDP datagram's source or destination); 20 bytes. */
struct peer_addr {
	__u8 addr[16]; /* IPv4-mapped IPv6 */
	__u16 port;    /* host order */
	__u16 family;  /* 0 when the socket is connected and the tuple says it */
};

/* Roles; the kernel knows them from the handshake, or guesses them mid-life. */
enum conn_role {
	ROLE_UNKNOWN = 0,
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

#endif /* NETRIG_RECORDS_H */
