/* SPDX-License-Identifier: Apache-2.0 */
/* Wire structs of bpf/tcp_events.bpf.c: retransmits, resets and packet drops. Never sampled. */
#ifndef NETRIG_TCP_EVENTS_H
#define NETRIG_TCP_EVENTS_H

#include "../schemas/records.h"

#define TCP_EVENT_VERSION 1
#define SKB_DROP_VERSION 1

/* tcp_event_rec.event_flags */
enum tcp_event_flags {
	TCP_EV_SYNACK = 1 << 0,    /* retransmitted SYN/ACK of a request socket (no connection yet) */
	TCP_EV_RST_SENT = 1 << 1,  /* REC_TCP_RESET: this host sent the RST */
	TCP_EV_NO_SOCKET = 1 << 2, /* RST sent for a segment that matched no socket */
};

/* REC_TCP_RETRANSMIT and REC_TCP_RESET; 104 bytes. */
struct tcp_event_rec {
	struct rec_hdr hdr;
	struct flow_tuple tuple; /* local side first */
	__u32 netns_ino;
	__u32 reason;            /* RST reason (enum sk_rst_reason) for sent resets, else 0 */
	__u8 state;              /* TCP state of the socket */
	__u8 event_flags;        /* enum tcp_event_flags */
	__u8 pad[6];
	char comm[16];           /* owner's comm when known */
};

/* skb_drop_rec.drop_flags */
enum skb_drop_flags {
	DROP_F_HAS_PORTS = 1 << 0, /* the transport header was readable */
};

/* REC_SKB_DROP: a packet freed with a drop reason; 104 bytes. */
struct skb_drop_rec {
	struct rec_hdr hdr;
	struct flow_tuple tuple; /* packet source first (saddr/sport = packet source) */
	__u64 location;          /* kernel text address that freed the packet */
	__u32 reason;            /* enum skb_drop_reason of the running kernel */
	__u32 netns_ino;
	__u32 ifindex;
	__u32 pkt_len_bytes;
	__u8 state;              /* TCP state of the socket when one is known */
	__u8 drop_flags;         /* enum skb_drop_flags */
	__u8 pad[6];
};

#endif /* NETRIG_TCP_EVENTS_H */
