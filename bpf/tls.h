/* SPDX-License-Identifier: Apache-2.0 */
/* Wire structs of bpf/tls.bpf.c: TLS plaintext from uprobes on OpenSSL. */
#ifndef NETRIG_TLS_H
#define NETRIG_TLS_H

#include "../schemas/records.h"

/*
 * REC_TLS_DATA records have the layout of struct sock_data_rec (bpf/sock_data.h): positions
 * count plaintext bytes in each direction of the connection, separately from the socket's
 * ciphertext positions; `syscall` holds an enum tls_op.
 */
#define TLS_DATA_VERSION 1

enum tls_op {
	TLS_OP_SSL_READ = 1,
	TLS_OP_SSL_WRITE = 2,
	TLS_OP_SSL_READ_EX = 3,
	TLS_OP_SSL_WRITE_EX = 4,
	TLS_OP_HANDSHAKE = 5, /* SSL_do_handshake: no data, only the socket it uses */
};

#endif /* NETRIG_TLS_H */
