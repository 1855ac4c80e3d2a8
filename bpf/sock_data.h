/* SPDX-License-Identifier: Apache-2.0 */
/* Wire structs of bpf/sock_data.bpf.c: socket payload for L7 reassembly. */
#ifndef NETRIG_SOCK_DATA_H
#define NETRIG_SOCK_DATA_H

#include "../schemas/records.h"

#define SOCK_DATA_VERSION 1

/* Largest payload in one record; a syscall's capture is split into records of this size. */
#define SOCK_DATA_CHUNK_BYTES 8192
/* Most iovec segments read from one readv/writev/recvmsg/sendmsg (nginx writes a chunked
 * response as one writev of 20 and more). */
#define SOCK_DATA_MAX_IOV 64
/* Most messages of one recvmmsg/sendmmsg whose payload is captured. */
#define SOCK_DATA_MAX_MMSG 8

/* The syscall that moved the bytes. */
enum sock_op {
	SOCK_OP_OTHER = 0, /* no user buffer known: sendfile, splice, io_uring, kernel callers */
	SOCK_OP_READ = 1,
	SOCK_OP_WRITE = 2,
	SOCK_OP_READV = 3,
	SOCK_OP_WRITEV = 4,
	SOCK_OP_RECVFROM = 5,
	SOCK_OP_SENDTO = 6,
	SOCK_OP_RECVMSG = 7,
	SOCK_OP_SENDMSG = 8,
	SOCK_OP_RECVMMSG = 9,
	SOCK_OP_SENDMMSG = 10,
};

enum data_direction {
	DIR_EGRESS = 0,  /* sent by this socket */
	DIR_INGRESS = 1, /* received by this socket */
};

/* sock_data_rec.data_flags */
enum data_flags {
	DATA_F_TRUNCATED = 1 << 0, /* the syscall moved more bytes than all its records carry */
	DATA_F_NO_BUFFER = 1 << 1, /* no user buffer: only the length advances the position */
	DATA_F_LAST = 1 << 2,      /* last record of this syscall */
	DATA_F_READ_FAILED = 1 << 3, /* the user buffer could not be read */
};

/* REC_SOCK_DATA: one chunk of one send or receive; 80 bytes, then cap_bytes of payload. */
struct sock_data_rec {
	struct rec_hdr hdr;
	__u64 pos_bytes;      /* position of payload[0] in this direction of the socket */
	__u32 len_bytes;      /* bytes the whole syscall moved (the original length) */
	__u32 cap_bytes;      /* payload bytes in this record */
	__u32 offset_bytes;   /* offset of payload[0] within the syscall's bytes */
	__u16 syscall;        /* enum sock_op */
	__u8 direction;       /* enum data_direction */
	__u8 data_flags;      /* enum data_flags */
	struct peer_addr peer; /* datagram peer of an unconnected UDP socket */
	__u32 pad;
	__u8 payload[];
};

#endif /* NETRIG_SOCK_DATA_H */
