/* SPDX-License-Identifier: Apache-2.0 */
/* Wire structs of bpf/conn.bpf.c: TCP connection lifecycle and first sight of a socket. */
#ifndef NETRIG_CONN_H
#define NETRIG_CONN_H

#include "../schemas/records.h"

#define CONN_OPEN_VERSION 1
#define CONN_INFO_VERSION 1
#define CONN_CLOSE_VERSION 1

/* A captured socket's REC_CONN_INFO is repeated with its next data after this long, so a
 * processor that starts reading later learns who owns the socket within this bound. */
#define CONN_INFO_REFRESH_NS 10000000000ULL

/* conn_*_rec.conn_flags */
enum conn_flags {
	CONN_F_MIDLIFE = 1 << 0,          /* first seen after it was established */
	CONN_F_CAPTURED = 1 << 1,         /* payload is captured (sampling and filters said yes) */
	CONN_F_ROLE_GUESSED = 1 << 2,     /* role inferred from ports, not seen in the handshake */
	CONN_F_NEVER_ESTABLISHED = 1 << 3, /* closed before the handshake completed */
};

/* REC_CONN_OPEN: the handshake completed; 112 bytes. */
struct conn_open_rec {
	struct rec_hdr hdr;
	struct flow_tuple tuple;
	__u64 cgroup_id;     /* owner's cgroup v2 id when the owner is known */
	__u64 connect_ts_ns; /* connect() time for active opens, 0 for passive */
	__u32 netns_ino;     /* network namespace inode */
	__u8 role;           /* enum conn_role */
	__u8 conn_flags;
	__u8 pad[2];
	char comm[16];       /* owner's comm when known */
};

/* REC_CONN_INFO: first process-context sight of a socket (every TCP or UDP socket with
 * data, including those open before the edge started); 112 bytes. */
struct conn_info_rec {
	struct rec_hdr hdr;
	struct flow_tuple tuple;
	__u64 cgroup_id;
	__u64 open_ts_ns; /* ESTABLISHED time when seen, else 0 */
	__u32 netns_ino;
	__u8 role;
	__u8 conn_flags;
	__u8 pad[2];
	char comm[16];
};

/* REC_CONN_CLOSE: a tracked TCP connection reached CLOSE; 136 bytes. */
struct conn_close_rec {
	struct rec_hdr hdr;
	struct flow_tuple tuple;
	__u64 open_ts_ns;   /* ESTABLISHED, connect() or first sight, whichever is known first */
	__u64 tx_bytes;     /* bytes the application sent since open or first sight */
	__u64 rx_bytes;     /* bytes the application received since open or first sight */
	__u64 cgroup_id;
	__u32 retransmits;  /* tcp_sock total_retrans */
	__u32 netns_ino;
	__u8 role;
	__u8 conn_flags;
	__u8 old_state;     /* TCP state before CLOSE */
	__u8 pad;
	char comm[16];
};

#endif /* NETRIG_CONN_H */
